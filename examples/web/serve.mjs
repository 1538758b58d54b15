#!/usr/bin/env node
// Tiny static server for the browser example: node examples/web/serve.mjs EXPORT_DIR [--port 8000] [--host 127.0.0.1]
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

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { port: { type: 'string', default: '8000' }, host: { type: 'string', default: '127.0.0.1' } },
  });
  if (positionals.length !== 1) {
    process.stderr.write('usage: node examples/web/serve.mjs EXPORT_DIR [--port 8000] [--host 127.0.0.1]\n');
    process.exit(2);
  }
  const exportDir = path.resolve(positionals[0]);
  const info = await stat(path.join(exportDir, 'manifest.json')).catch(() => null);
  if (!info) {
    process.stderr.write(`error: ${exportDir} has no manifest.json: not an ncsn-export directory\n`);
    process.exit(1);
  }
  const server = await serve({ exportDir, port: Number(values.port), host: values.host });
  const address = /** @type {import('node:net').AddressInfo} */ (server.address());
  process.stdout.write(`serving http://${values.host}:${address.port}/ (export: ${exportDir})\n`);
}
