#!/usr/bin/env node
// Tiny static server for the browser example: node examples/web/serve.mjs EXPORT_DIR [--port 8000] [--host 127.0.0.1]
// A bad --port (not an integer in [1, 65535]) or --host, or an unknown option, is one line and exit 2; a port in
// use or a failed listen is one line and exit 1 (the environment). No stack trace for either.
//
//   /                -> examples/web/index.html
//   /examples/web/*  -> the page's files
//   /runtime/js/*    -> the JS runtime (ES modules, no build step)
//   /ort/*           -> node_modules/onnxruntime-web/dist (wasm backend)
//   /export/*        -> EXPORT_DIR
// Every response carries COOP/COEP headers, so the page is cross-origin isolated and onnxruntime-web can use
// wasm threads (SharedArrayBuffer). Binds to 127.0.0.1 only; prints "serving http://HOST:PORT/" when ready.
// The export directory is untrusted: a path (or a symlink in it) that leads outside its root is 404, and a file
// the server cannot read (EACCES, EISDIR, an I/O error mid-stream) answers 403/500 or closes that one
// connection; it never stops the server. Only regular files are opened: a FIFO, device or socket is 404 (checked
// before opening, and opened with O_NONBLOCK, so nothing can block one of libuv's few threads and with it every
// later request).

import { constants } from 'node:fs';
import { open, realpath, stat } from 'node:fs/promises';
import http from 'node:http';
import { isIP } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
};

/**
 * Map a URL path to a file under one of the served roots (null when outside them).
 * @param {string} urlPath decoded path
 * @param {string} exportDir
 * @returns {string | null}
 */
export function resolvePath(urlPath, exportDir) {
  return resolveMount(urlPath, exportDir)?.file ?? null;
}

/**
 * Like resolvePath, also returning the mount's root directory.
 * @param {string} urlPath decoded path
 * @param {string} exportDir
 * @returns {{file: string, base: string} | null}
 */
function resolveMount(urlPath, exportDir) {
  const mounts = [
    ['/export/', exportDir],
    ['/ort/', path.join(ROOT, 'node_modules', 'onnxruntime-web', 'dist')],
    ['/runtime/js/', path.join(ROOT, 'runtime', 'js')],
    ['/examples/web/', path.join(ROOT, 'examples', 'web')],
  ];
  if (urlPath === '/' || urlPath === '/index.html') return { file: path.join(ROOT, 'examples', 'web', 'index.html'), base: path.join(ROOT, 'examples', 'web') };
  if (urlPath.includes('\0')) return null;
  for (const [prefix, base] of mounts) {
    if (!urlPath.startsWith(prefix)) continue;
    const file = path.resolve(base, `.${urlPath.slice(prefix.length - 1)}`);
    return file === base || file.startsWith(base + path.sep) ? { file, base } : null;
  }
  return null;
}

/**
 * The real path of `file` when it (symlinks followed) stays inside the real path of `base`, else null.
 * @param {string} file @param {string} base
 * @returns {Promise<string | null>}
 */
async function confined(file, base) {
  const [realFile, realBase] = await Promise.all([realpath(file).catch(() => null), realpath(base).catch(() => null)]);
  if (!realFile || !realBase) return null;
  return realFile === realBase || realFile.startsWith(realBase + path.sep) ? realFile : null;
}

/**
 * Send one file: opened before the 200 header, so an unreadable file is a 403 / 500 answer, and a read error
 * after the header closes only this response.
 * @param {http.IncomingMessage} request @param {http.ServerResponse} response @param {string} file @param {string} urlPath
 */
async function sendFile(request, response, file, urlPath) {
  const before = await stat(file).catch(() => null);
  if (!before?.isFile()) {
    response.writeHead(404, { 'Content-Type': 'text/plain' }).end(`not found: ${urlPath}`);
    return;
  }
  let handle;
  try {
    handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW);
  } catch (error) {
    const status = error?.code === 'EACCES' || error?.code === 'EPERM' ? 403 : error?.code === 'ENOENT' ? 404 : 500;
    response.writeHead(status, { 'Content-Type': 'text/plain' }).end(`${status === 403 ? 'forbidden' : status === 404 ? 'not found' : 'cannot read'}: ${urlPath}`);
    return;
  }
  let info;
  try {
    info = await handle.stat();
  } catch {
    info = null;
  }
  if (!info?.isFile()) {
    await handle.close().catch(() => {});
    response.writeHead(404, { 'Content-Type': 'text/plain' }).end(`not found: ${urlPath}`);
    return;
  }
  response.writeHead(200, { 'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'Content-Length': info.size });
  if (request.method === 'HEAD') {
    await handle.close().catch(() => {});
    response.end();
    return;
  }
  const stream = handle.createReadStream();
  stream.on('error', (error) => {
    process.stderr.write(`serve.mjs: error reading ${file}: ${error.message}\n`);
    response.destroy(error);
  });
  stream.pipe(response);
}

/**
 * Start the server; resolves with the http.Server once listening.
 * @param {{exportDir: string, port?: number, host?: string}} options
 * @returns {Promise<http.Server>}
 */
export function serve({ exportDir, port = 8000, host = '127.0.0.1' }) {
  const root = path.resolve(exportDir);
  const server = http.createServer(async (request, response) => {
    response.setHeader('Cross-Origin-Opener-Policy', 'same-origin');
    response.setHeader('Cross-Origin-Embedder-Policy', 'require-corp');
    response.setHeader('Cross-Origin-Resource-Policy', 'same-origin');
    response.setHeader('Cache-Control', 'no-store');
    let urlPath;
    try {
      urlPath = decodeURIComponent(new URL(request.url ?? '/', 'http://localhost').pathname);
    } catch {
      response.writeHead(400).end('bad request');
      return;
    }
    const mount = request.method === 'GET' || request.method === 'HEAD' ? resolveMount(urlPath, root) : null;
    const file = mount ? await confined(mount.file, mount.base) : null;
    if (!file) {
      response.writeHead(404, { 'Content-Type': 'text/plain' }).end(`not found: ${urlPath}`);
      return;
    }
    try {
      await sendFile(request, response, file, urlPath);
    } catch (error) {
      if (!response.headersSent) response.writeHead(500, { 'Content-Type': 'text/plain' }).end(`cannot read: ${urlPath}`);
      else response.destroy(error);
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}

const USAGE = 'usage: node examples/web/serve.mjs EXPORT_DIR [--port 8000] [--host 127.0.0.1]';

/** A mistake in the command line (exit 2) or the environment (exit 1), shown as one line. */
class CliError extends Error {
  constructor(message, exitCode = 2) {
    super(message);
    this.exitCode = exitCode;
  }
}

/**
 * `--port` as an integer in [1, 65535] (decimal digits only: "8e3", "0x50", " 80" and "" are refused).
 * @param {string} text
 * @returns {number}
 */
export function parsePort(text) {
  const port = /^[0-9]{1,5}$/.test(text) ? Number(text) : NaN;
  if (!(port >= 1 && port <= 65535)) throw new CliError(`--port must be an integer in [1, 65535], got ${JSON.stringify(text)}`);
  return port;
}

/**
 * `--host` as an IP address or a host name (letters, digits, '-', '.'; at most 253 characters).
 * @param {string} text
 * @returns {string}
 */
export function parseHost(text) {
  const name = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;
  if (!isIP(text) && !name.test(text)) {
    throw new CliError(`--host must be an IP address or a host name (e.g. 127.0.0.1, localhost), got ${JSON.stringify(text)}`);
  }
  return text;
}

/** The one-line message of a failed listen (the port or address, and why), and its exit code. */
function listenError(error, host, port) {
  const where = `${host}:${port}`;
  const reasons = {
    EADDRINUSE: [`--port ${port}: the port is in use on ${host} (another server?); pick another --port`, 1],
    EACCES: [`--port ${port}: permission denied to listen on ${where} (ports below 1024 need privileges)`, 1],
    EADDRNOTAVAIL: [`--host ${host}: not an address of this machine, cannot listen on ${where}`, 2],
    ENOTFOUND: [`--host ${host}: the name does not resolve, cannot listen on it`, 2],
    EAI_AGAIN: [`--host ${host}: the name cannot be resolved now (DNS), cannot listen on it`, 1],
  };
  const [message, code] = reasons[error?.code] ?? [`cannot listen on ${where}: ${error?.code ?? ''} ${error?.message ?? error}`.trim(), 1];
  return new CliError(message, code);
}

async function main() {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: { port: { type: 'string', default: '8000' }, host: { type: 'string', default: '127.0.0.1' } },
    });
  } catch (error) {
    throw new CliError(`${error.message.replace(/\s*\n\s*/g, ' ')} (${USAGE})`);
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 1) throw new CliError(USAGE);
  const port = parsePort(values.port);
  const host = parseHost(values.host);
  const exportDir = path.resolve(positionals[0]);
  const info = await stat(path.join(exportDir, 'manifest.json')).catch(() => null);
  if (!info?.isFile()) throw new CliError(`${exportDir} has no manifest.json: not an ncsn-export directory`, 1);
  let server;
  try {
    server = await serve({ exportDir, port, host });
  } catch (error) {
    throw listenError(error, host, port);
  }
  const address = /** @type {import('node:net').AddressInfo} */ (server.address());
  process.stdout.write(`serving http://${host.includes(':') ? `[${host}]` : host}:${address.port}/ (export: ${exportDir})\n`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    await main();
  } catch (error) {
    // a user's or the environment's mistake is one line; anything else is ours, still one line (no stack trace)
    const line = String(error instanceof CliError ? error.message : `${error?.name ?? 'Error'}: ${error?.message ?? error}`).split('\n')[0];
    process.stderr.write(`error: ${line}\n`);
    process.exit(error instanceof CliError ? error.exitCode : 1);
  }
}
