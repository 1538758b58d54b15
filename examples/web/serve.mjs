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

import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
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
  const mounts = [
    ['/export/', exportDir],
    ['/ort/', path.join(ROOT, 'node_modules', 'onnxruntime-web', 'dist')],
    ['/runtime/js/', path.join(ROOT, 'runtime', 'js')],
    ['/examples/web/', path.join(ROOT, 'examples', 'web')],
  ];
  if (urlPath === '/' || urlPath === '/index.html') return path.join(ROOT, 'examples', 'web', 'index.html');
  for (const [prefix, base] of mounts) {
    if (!urlPath.startsWith(prefix)) continue;
    const file = path.resolve(base, `.${urlPath.slice(prefix.length - 1)}`);
    return file === base || file.startsWith(base + path.sep) ? file : null;
  }
  return null;
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
    const file = request.method === 'GET' || request.method === 'HEAD' ? resolvePath(urlPath, root) : null;
    const info = file ? await stat(file).catch(() => null) : null;
    if (!file || !info?.isFile()) {
      response.writeHead(404, { 'Content-Type': 'text/plain' }).end(`not found: ${urlPath}`);
      return;
    }
    response.writeHead(200, { 'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'Content-Length': info.size });
    if (request.method === 'HEAD') response.end();
    else createReadStream(file).pipe(response);
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
