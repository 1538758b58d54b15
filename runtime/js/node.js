// Node-only helpers: read an export directory from disk, load it with onnxruntime-node, write .npy / .png files.

import { createHash, randomBytes } from 'node:crypto';
import { constants, readSync } from 'node:fs';
import { access, lstat, open, realpath, rename, stat, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { deflateSync } from 'node:zlib';

import { ExternalDataError, externalDataLocations } from './external_data.js';
import { ExportDirectoryError, checkListedFile, checkRelativePath } from './manifest.js';
import { encodeNpy } from './npy.js';
import { NCSNPipeline } from './pipeline.js';

export * from './index.js';

/** The most onnxruntime intra-op threads a host asks for (ncsn_runtime.providers.MAX_THREADS; 1e9 made it bad_alloc). */
export const MAX_THREADS = 4096;

/**
 * A FileSource reading an export directory on disk.
 * @param {string} directory
 * @returns {import('./manifest.js').FileSource}
 */
export function fsSource(directory) {
  const root = path.resolve(directory);
  return {
    location: root,
    async readBytes(relative, { maxBytes, noSymlink = false } = {}) {
      // a missing file fails below with realpath's message, as without noSymlink
      if (noSymlink && (await lstat(path.join(root, checkRelativePath(relative, 'file'))).catch(() => null))?.isSymbolicLink()) {
        throw new ExportDirectoryError(`${path.join(root, relative)} is a symlink; it is never followed (${root} is not an ncsn-export directory)`);
      }
      const bytes = await readRegularFile(await this.localPath(relative), relative, maxBytes);
      return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    },
    /** The file's real path: onnxruntime-node opens a verified graph by path (its Loop-body weights stay fast). */
    async localPath(relative) {
      // the path comes from an untrusted manifest: relative, no '..', and no symlink that leads out of the directory
      checkRelativePath(relative, 'file');
      const realRoot = await realpath(root);
      const file = await realpath(path.join(root, relative));
      if (file !== realRoot && !file.startsWith(realRoot + path.sep)) {
        throw new ExportDirectoryError(`${relative} leads outside ${realRoot} (through a symlink)`);
      }
      // onnxruntime-node opens it by path: a FIFO, device, socket or directory would block or fail inside it
      if (!(await stat(file)).isFile()) {
        throw new ExportDirectoryError(`${relative} is not a regular file (a FIFO, device, socket or directory is never read)`);
      }
      return file;
    },
    async sha256(bytes) {
      return createHash('sha256').update(bytes).digest('hex');
    },
    /**
     * Verify a listed file on disk without holding it: one descriptor (regular file, no symlink as the last part),
     * its size and a streamed sha256 checked against `entry`, then (with `locations`) the external-data locations
     * walked on the same descriptor, reading only the protobuf's structure.
     * @param {string} relative @param {{sha256: string, bytes: number}} entry @param {{locations?: boolean}} [options]
     * @returns {Promise<{path: string, stamp: string, locations: string[]}>} stamp: the file's identity (device, inode,
     *   size, ctime) when it was hashed, to be compared by `unchanged` after onnxruntime opened it by path
     */
    async verifyLocal(relative, entry, { locations = false } = {}) {
      const file = await this.localPath(relative);
      const handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW);
      try {
        const info = await handle.stat({ bigint: true });
        if (!info.isFile()) throw new ExportDirectoryError(`${relative} is not a regular file (a FIFO, device, socket or directory is never read)`);
        const hash = createHash('sha256');
        for await (const chunk of handle.createReadStream({ autoClose: false, start: 0, highWaterMark: 1 << 20 })) hash.update(chunk);
        checkListedFile(this.location, relative, entry, Number(info.size), hash.digest('hex'));
        let found = [];
        if (locations) {
          try {
            found = externalDataLocations(fileReader(handle.fd, Number(info.size)));
          } catch (error) {
            if (error instanceof ExternalDataError) throw new ExportDirectoryError(`${this.location}/${relative} is not a readable ONNX model: ${error.message}`);
            throw error;
          }
        }
        return { path: file, stamp: stampOf(info), locations: found };
      } finally {
        await handle.close().catch(() => {});
      }
    },
    /** Throws when `file` is no longer the file hashed as `stamp` (replaced or written while onnxruntime read it). */
    async unchanged(relative, file, stamp) {
      const now = await stat(file, { bigint: true }).catch(() => null);
      if (!now || stampOf(now) !== stamp) {
        throw new ExportDirectoryError(`${this.location}/${relative} changed while it was loaded (replaced or written after its sha256 check); nothing was run`);
      }
    },
  };
}

/** @param {import('node:fs').BigIntStats} info */
function stampOf(info) {
  return `${info.dev}:${info.ino}:${info.size}:${info.ctimeNs}`;
}

/**
 * A ByteReader (external_data.js) over an open file: 64 KiB windows read on demand (positional reads), so walking a
 * graph's protobuf structure never reads the tensors it skips.
 * @param {number} fd @param {number} size
 * @returns {import('./external_data.js').ByteReader}
 */
export function fileReader(fd, size, windowBytes = 1 << 16) {
  const window = Buffer.alloc(windowBytes);
  let start = 0;
  let end = 0;
  const readAt = (target, offset, length, position) => {
    let done = 0;
    while (done < length) {
      const count = readSync(fd, target, offset + done, length - done, position + done);
      if (count === 0) throw new ExternalDataError('the file ended early (truncated while read?)');
      done += count;
    }
  };
  return {
    length: size,
    byte(pos) {
      if (pos < start || pos >= end) {
        const length = Math.min(windowBytes, size - pos);
        if (length <= 0) throw new ExternalDataError('read past the end of the file');
        readAt(window, 0, length, pos);
        start = pos;
        end = pos + length;
      }
      return window[pos - start];
    },
    slice(a, b) {
      const out = Buffer.alloc(b - a);
      readAt(out, 0, b - a, a);
      return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
    },
  };
}

/**
 * The bytes of a regular file. Anything else (a FIFO, a device, a socket, a directory) is refused without reading:
 * it is opened with O_NONBLOCK, so even a FIFO swapped in after the check cannot block a libuv thread forever.
 * @param {string} file resolved path
 * @param {string} [name] how messages name it
 * @param {number} [maxBytes] refuse (unread) a file larger than this
 * @returns {Promise<Buffer>}
 */
export async function readRegularFile(file, name = file, maxBytes = Infinity) {
  const handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOFOLLOW);
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw new ExportDirectoryError(`${name} is not a regular file (a FIFO, device, socket or directory is never read)`);
    if (info.size > maxBytes) throw new ExportDirectoryError(`${file} is ${info.size} bytes; at most ${maxBytes} are read`);
    return await handle.readFile();
  } finally {
    await handle.close().catch(() => {});
  }
}

/**
 * Load an export directory with onnxruntime-node (CPU).
 * @param {string} directory
 * @param {{mode?: 'fused' | 'stepwise' | 'both', graphs?: import('./pipeline.js').GraphKey[], sessionOptions?: object, ort?: any}} [options]
 * @returns {Promise<NCSNPipeline>}
 */
export async function loadPipeline(directory, { mode = 'fused', graphs, sessionOptions = {}, ort } = {}) {
  const info = await stat(directory).catch(() => null);
  if (!info?.isDirectory()) throw new ExportDirectoryError(`export directory not found: ${path.resolve(directory)}`);
  const runtime = ort ?? (await import('onnxruntime-node'));
  return NCSNPipeline.load(fsSource(directory), { ort: runtime, mode, graphs, sessionOptions });
}

/** Bytes writeFileAtomic's temporary name adds to the file's: `.NAME.` + 12 hex digits + `.tmp` (Python's atomic_write: 18). */
export const TEMP_NAME_EXTRA = 18;
const NAME_MAX = 255;

/**
 * Check an output path before any work (as ncsn-sample): its folder exists and is writable, it is not a directory,
 * and its name leaves room for the temporary sibling's. Throws an Error naming `label` and the cause.
 * @param {string} file @param {string} label e.g. '--output'
 */
export async function checkOutputPath(file, label) {
  const name = path.basename(file);
  const size = Buffer.byteLength(name);
  if (size + TEMP_NAME_EXTRA > NAME_MAX) {
    throw new Error(`${label}: the name is too long (${size} bytes; with the ${TEMP_NAME_EXTRA} bytes of our temporary name it exceeds the ${NAME_MAX}-byte limit); use a name of at most ${NAME_MAX - TEMP_NAME_EXTRA} bytes`);
  }
  const folder = path.dirname(path.resolve(file));
  const info = await stat(folder).catch(() => null);
  if (!info?.isDirectory()) throw new Error(`${label} ${file}: the folder ${folder} does not exist`);
  if (await access(folder, constants.W_OK).then(() => false, () => true)) throw new Error(`${label} ${file}: the folder ${folder} is not writable`);
  if ((await stat(file).catch(() => null))?.isDirectory()) throw new Error(`${label} ${file} is a directory`);
}

/**
 * Write bytes atomically (temporary file in the same folder + rename).
 * @param {string} file
 * @param {Uint8Array} bytes
 */
export async function writeFileAtomic(file, bytes) {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    await writeFile(tmp, bytes);
    await rename(tmp, file);
  } catch (error) {
    await unlink(tmp).catch(() => {});
    throw error;
  }
}

/**
 * Save float32 samples as .npy.
 * @param {string} file
 * @param {Float32Array} samples
 * @param {number[]} shape
 */
export function saveNpy(file, samples, shape) {
  return writeFileAtomic(file, encodeNpy(samples, shape));
}

const CRC_TABLE = Int32Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c;
});

/** @param {Uint8Array} bytes */
function crc32(bytes) {
  let c = -1;
  for (const byte of bytes) c = CRC_TABLE[(c ^ byte) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

/**
 * Encode an 8-bit gray or RGB grid as PNG bytes.
 * @param {import('./grid.js').Grid} grid
 * @returns {Uint8Array}
 */
export function encodePng({ width, height, channels, pixels }) {
  const rowBytes = width * channels;
  const raw = Buffer.alloc((rowBytes + 1) * height);
  for (let y = 0; y < height; y++) raw.set(pixels.subarray(y * rowBytes, (y + 1) * rowBytes), y * (rowBytes + 1) + 1); // filter 0
  const chunk = (type, data) => {
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const out = Buffer.alloc(body.length + 8);
    out.writeUInt32BE(data.length, 0);
    body.copy(out, 4);
    out.writeUInt32BE(crc32(body), body.length + 4);
    return out;
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bit depth
  header[9] = channels === 1 ? 0 : 2; // gray / RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', header),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}
