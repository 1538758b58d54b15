// Minimal .npy (format 1.0) reader/writer for little-endian float32 / int64 arrays (numpy.load / numpy.save compatible).

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

/**
 * Encode a C-ordered array as .npy bytes.
 * @param {Float32Array | BigInt64Array} data values, row-major
 * @param {number[]} shape
 * @returns {Uint8Array}
 */
export function encodeNpy(data, shape) {
  const count = shape.reduce((a, b) => a * b, 1);
  if (count !== data.length) throw new RangeError(`shape [${shape}] holds ${count} values but data has ${data.length}`);
  const descr = data instanceof Float32Array ? '<f4' : data instanceof BigInt64Array ? '<i8' : null;
  if (descr === null) throw new TypeError('encodeNpy takes a Float32Array or a BigInt64Array');
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  const unpadded = MAGIC.length + 2 + 2 + header.length + 1;
  header += ' '.repeat((64 - (unpadded % 64)) % 64) + '\n';
  const headerBytes = new TextEncoder().encode(header);
  const out = new Uint8Array(MAGIC.length + 4 + headerBytes.length + data.byteLength);
  out.set(MAGIC, 0);
  out[6] = 1; // major version
  out[7] = 0;
  out[8] = headerBytes.length & 0xff;
  out[9] = headerBytes.length >> 8;
  out.set(headerBytes, 10);
  // typed arrays are little-endian on every platform onnxruntime supports; copy the raw bytes
  out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), 10 + headerBytes.length);
  return out;
}

/**
 * Decode .npy bytes holding '<f4' or '<i8' data (C order).
 * @param {Uint8Array} bytes
 * @returns {{data: Float32Array | BigInt64Array, shape: number[]}}
 */
export function decodeNpy(bytes) {
  if (!MAGIC.every((value, i) => bytes[i] === value)) throw new Error('not a .npy file (bad magic)');
  const major = bytes[6];
  const headerLength = major === 1 ? bytes[8] | (bytes[9] << 8) : bytes[8] | (bytes[9] << 8) | (bytes[10] << 16) | (bytes[11] << 24);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder().decode(bytes.subarray(start, start + headerLength));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  if (/'fortran_order':\s*True/.test(header)) throw new Error('Fortran-ordered .npy files are not supported');
  const shape = (/'shape':\s*\(([^)]*)\)/.exec(header)?.[1] ?? '').split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  const body = bytes.slice(start + headerLength);
  if (descr === '<f4') return { data: new Float32Array(body.buffer, 0, body.byteLength / 4), shape };
  if (descr === '<i8') return { data: new BigInt64Array(body.buffer, 0, body.byteLength / 8), shape };
  throw new Error(`unsupported .npy dtype ${descr} (float32 '<f4' and int64 '<i8' are read)`);
}
