// The export directory's manifest.json: the JavaScript reader of runtime/ncsn_runtime/manifest.py's format.
// Files are read through a FileSource (fs in Node, fetch in the browser) so one implementation serves both.

import { FloatNumber, parseJsonKeepingFloats, plainNumbers, show } from './json_numbers.js';
import { MAX_TRAIN_TIMESTEPS } from './schedule.js';

export const MANIFEST_NAME = 'manifest.json';
export const FORMAT_NAME = 'ncsn-export';
export const FORMAT_VERSION = 1;
export const DEFAULT_SCHEDULER_CONFIG = 'scheduler/scheduler_config.json';

/**
 * Graph I/O of the contract (runtime/ncsn_runtime/contract.py GRAPHS; tests/test_host_limits.py asserts they are equal):
 * name, dtype and symbolic shape; 'batch' / 'num_levels' are dynamic axes, '...' stands for model.sample_shape.
 */
export const GRAPH_IO = {
  score: {
    inputs: [['sample', 'float32', ['batch', '...']], ['timestep', 'int64', ['batch']]],
    outputs: [['score', 'float32', ['batch', '...']]],
  },
  step: {
    inputs: [['sample', 'float32', ['batch', '...']], ['seed', 'int64', ['batch']], ['timestep', 'int64', []],
      ['step_size', 'float32', []], ['counter', 'int64', []]],
    outputs: [['next_sample', 'float32', ['batch', '...']]],
  },
  sampler: {
    inputs: [['sample', 'float32', ['batch', '...']], ['seed', 'int64', ['batch']], ['timesteps', 'int64', ['num_levels']],
      ['step_sizes', 'float32', ['num_levels']], ['num_annealed_steps', 'int64', []]],
    outputs: [['final_sample', 'float32', ['batch', '...']]],
  },
  gpu_step: {
    inputs: [['sample', 'float32', ['batch', '...']], ['noise', 'float32', ['batch', '...']], ['timestep', 'int64', []],
      ['step_size', 'float32', []]],
    outputs: [['next_sample', 'float32', ['batch', '...']]],
  },
  gpu_sampler: {
    inputs: [['sample', 'float32', ['batch', '...']], ['seed', 'int64', ['batch']], ['timesteps', 'int64', ['num_levels']],
      ['step_sizes', 'float32', ['num_levels']], ['num_annealed_steps', 'int64', []]],
    outputs: [['final_sample', 'float32', ['batch', '...']]],
  },
  inpaint: {
    inputs: [['sample', 'float32', ['batch', '...']], ['seed', 'int64', ['batch']], ['timesteps', 'int64', ['num_levels']],
      ['step_sizes', 'float32', ['num_levels']], ['num_annealed_steps', 'int64', []], ['sigmas', 'float32', ['num_levels']],
      ['known', 'float32', ['batch', '...']], ['mask', 'float32', ['batch', '...']]],
    outputs: [['final_sample', 'float32', ['batch', '...']]],
  },
};

/** Graph I/O names of the contract (docs/design.md), from GRAPH_IO. */
export const GRAPH_CONTRACT = Object.fromEntries(Object.entries(GRAPH_IO).map(([key, io]) => [key, {
  inputs: io.inputs.map(([name]) => name), outputs: io.outputs.map(([name]) => name) }]));

/**
 * Reads files of one export directory by relative path.
 * @typedef {object} FileSource
 * @property {string} location where the directory is (for messages)
 * @property {(relative: string, options?: {maxBytes?: number, noSymlink?: boolean}) => Promise<Uint8Array>} readBytes resolves the
 *   file's bytes; rejects with an Error naming it (a file over maxBytes, or a symlink with noSymlink, is refused unread where it can be)
 * @property {(bytes: Uint8Array) => Promise<string>} [sha256] hex sha256 (default: WebCrypto)
 * @property {(relative: string) => Promise<string>} [localPath] the file's confined real path on disk (Node: onnxruntime-node opens graphs by path)
 * @property {(relative: string, entry: {sha256: string, bytes: number}, options?: {locations?: boolean}) =>
 *   Promise<{path: string, stamp: string, locations: string[]}>} [verifyLocal] (Node) size + streamed sha256 of a file on disk,
 *   and the external-data locations it names, without holding the file in memory
 * @property {(relative: string, path: string, stamp: string) => Promise<void>} [unchanged] (Node) throws when the file
 *   is no longer the one verifyLocal hashed
 */

/**
 * @typedef {object} ModelInfo
 * @property {string} name
 * @property {number[]} sample_shape per-sample shape, e.g. [1, 28, 28] or [2]
 * @property {string} dtype "float32"
 * @property {boolean} is_image
 * @property {[number, number]} init_range range of the uniform initial sample
 * @property {[number, number]} data_range range of the data (for images: pixel 0 .. 255)
 * @property {boolean} final_denoise NCSNv2's final denoising step
 */

/**
 * @typedef {object} Manifest
 * @property {string} format
 * @property {number} format_version
 * @property {ModelInfo} model
 * @property {string} [scheduler_config]
 * @property {Record<string, {file: string, inputs: {name: string}[], outputs: {name: string}[]}>} graphs
 * @property {Record<string, {sha256: string, bytes: number}>} files
 */

/**
 * Resource limits on what an export directory holds, the same values as Python's (tests/test_host_limits.py asserts
 * they are equal): ncsn_runtime.manifest.MAX_SAMPLE_RANK / MAX_SAMPLE_ELEMENTS / MAX_FILES / MAX_FILE_BYTES and
 * ncsn_runtime.fileio.MAX_JSON_BYTES (manifest.json at most 16 MiB).
 */
export const MAX_SAMPLE_RANK = 8;
export const MAX_SAMPLE_ELEMENTS = 2 ** 24;
export const MAX_FILES = 10_000;
export const MAX_FILE_BYTES = 2 ** 40;
export const MAX_JSON_BYTES = 16 * 1024 * 1024;
export const COMPUTE_DTYPES = ['float32', 'float16'];

/** An export directory is missing, incomplete, corrupt or of an unknown format. */
export class ExportDirectoryError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = 'ExportDirectoryError';
  }
}

/**
 * Check a relative path read from an (untrusted) manifest: no absolute path, no '..', '.' or empty
 * component, no backslash or NUL, no URL scheme. Throws ExportDirectoryError; returns the path.
 * @param {unknown} relative
 * @param {string} what for the message
 * @returns {string}
 */
export function checkRelativePath(relative, what = 'path') {
  if (typeof relative !== 'string' || relative === '') throw new ExportDirectoryError(`${what} must be a non-empty relative path, got ${show(relative)}`);
  if (relative.includes('\\') || relative.includes('\0') || /^[A-Za-z][A-Za-z0-9+.-]*:/.test(relative)) {
    throw new ExportDirectoryError(`${what} ${show(relative)} holds a backslash, a NUL byte or a scheme/drive prefix`);
  }
  if (relative.startsWith('/')) throw new ExportDirectoryError(`${what} ${show(relative)} is absolute; paths in an export directory are relative to it`);
  if (relative.split('/').some((part) => part === '' || part === '.' || part === '..')) {
    throw new ExportDirectoryError(`${what} ${show(relative)} holds '..', '.' or an empty component`);
  }
  return relative;
}

/**
 * A graph's `inputs` / `outputs` tables (when listed) name exactly the contract's tensors, in any order, each with the
 * contract's dtype and a shape of its rank whose fixed dims (model.sample_shape's) are the contract's; a dynamic dim
 * may be any string or an int in [0, 2**62] (as ncsn_runtime.manifest._tensors).
 * @param {any} graph @param {string} key @param {string} what @param {number[]} [sampleShape]
 */
function checkIoNames(graph, key, what, sampleShape) {
  const contract = GRAPH_CONTRACT[key];
  for (const side of /** @type {const} */ (['inputs', 'outputs'])) {
    const entries = graph[side];
    if (entries === undefined || entries === null) continue; // an older manifest without the table: the contract's
    if (!Array.isArray(entries) || !entries.every((item) => item !== null && typeof item === 'object' && typeof item.name === 'string')) {
      throw new ExportDirectoryError(`${what}.${side} must be a list of {name, dtype, shape} objects`);
    }
    const names = entries.map((item) => item.name);
    if ([...names].sort().join(',') !== [...contract[side]].sort().join(',') || names.length !== contract[side].length) {
      throw new ExportDirectoryError(`${key} graph ${side} are [${names}], the contract is [${contract[side]}]: export directory mismatched`);
    }
    if (!sampleShape) continue;
    for (const [name, dtype, symbolic] of GRAPH_IO[key][side]) {
      const item = entries.find((entry) => entry.name === name);
      const want = symbolic.flatMap((dim) => (dim === '...' ? sampleShape : [dim]));
      if (item.dtype !== dtype) throw new ExportDirectoryError(`${what}.${side}: \`${name}\` has dtype ${show(item.dtype)}; the contract says ${dtype}`);
      const shape = item.shape;
      const dimOk = (got, need) => (typeof got === 'string' || (Number.isSafeInteger(got) && got >= 0)
        || (typeof got === 'bigint' && got >= 0n && got <= 2n ** 62n))
        && (typeof need !== 'number' || got === need);
      if (!Array.isArray(shape) || shape.length !== want.length || !shape.every((got, i) => dimOk(got, want[i]))) {
        throw new ExportDirectoryError(`${what}.${side}: \`${name}\` has shape ${show(shape)}; the contract and model.sample_shape give ${show(want)}`);
      }
    }
  }
}

/**
 * Read and check manifest.json; throws ExportDirectoryError naming the problem.
 * @param {FileSource} source
 * @returns {Promise<Manifest>}
 */
export async function loadManifest(source) {
  let bytes;
  try {
    bytes = await source.readBytes(MANIFEST_NAME, { maxBytes: MAX_JSON_BYTES, noSymlink: true });
  } catch (error) {
    if (error instanceof ExportDirectoryError) throw error;
    throw new ExportDirectoryError(`${source.location}/${MANIFEST_NAME} is missing: ${source.location} is not an ncsn-export directory (${error.message})`);
  }
  if (bytes.byteLength > MAX_JSON_BYTES) {
    throw new ExportDirectoryError(`${source.location}/${MANIFEST_NAME} is ${bytes.byteLength} bytes; at most ${MAX_JSON_BYTES} (16 MiB)`);
  }
  let manifest;
  try {
    manifest = parseJsonKeepingFloats(new TextDecoder().decode(bytes)); // 2.0 is not an int (as Python)
  } catch (error) {
    throw new ExportDirectoryError(`${source.location}/${MANIFEST_NAME} is not valid JSON: ${error.message}`);
  }
  const where = `${source.location}/${MANIFEST_NAME}`;
  if (manifest === null || typeof manifest !== 'object' || manifest.format !== FORMAT_NAME) {
    throw new ExportDirectoryError(`${where} is not an ncsn-export manifest (format=${show(manifest?.format)})`);
  }
  if (plainNumbers(manifest.format_version) !== FORMAT_VERSION) { // 1.0 == 1 in Python too
    throw new ExportDirectoryError(`${where} has format_version ${show(manifest.format_version)}; this runtime reads ${FORMAT_VERSION}`);
  }
  for (const key of ['model', 'graphs', 'files']) {
    if (manifest[key] === null || typeof manifest[key] !== 'object' || Array.isArray(manifest[key]) || manifest[key] instanceof FloatNumber) throw new ExportDirectoryError(`${where} lacks the \`${key}\` section`);
  }
  const listed = Object.keys(manifest.files).length;
  if (listed > MAX_FILES) throw new ExportDirectoryError(`${where}: \`files\` lists ${listed} entries; at most ${MAX_FILES}`);
  for (const [relative, entry] of Object.entries(manifest.files)) {
    checkRelativePath(relative, `${where}: files entry`);
    if (entry === null || typeof entry !== 'object' || typeof entry.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(entry.sha256)
        || !Number.isSafeInteger(entry.bytes) || entry.bytes < 0 || entry.bytes > MAX_FILE_BYTES) {
      throw new ExportDirectoryError(`${where}: files[${show(relative)}] must be {sha256: 64 hex digits, bytes: an int in [0, 2**40]}`);
    }
  }
  // absent means the default; null is not a path (as Python: only a missing key defaults)
  checkRelativePath(manifest.scheduler_config === undefined ? DEFAULT_SCHEDULER_CONFIG : manifest.scheduler_config, `${where}: scheduler_config`);

  const model = manifest.model;
  const shape = model.sample_shape;
  if (!Array.isArray(shape) || shape.length < 1 || shape.length > MAX_SAMPLE_RANK || !shape.every((n) => Number.isSafeInteger(n) && n > 0)
      || shape.reduce((a, b) => a * b, 1) > MAX_SAMPLE_ELEMENTS) {
    throw new ExportDirectoryError(`${where}: model.sample_shape must be 1 to ${MAX_SAMPLE_RANK} positive integers with at most ${MAX_SAMPLE_ELEMENTS} elements, got ${show(shape)}`);
  }
  const levels = model.num_train_timesteps;
  if (levels !== undefined && levels !== null && !(Number.isSafeInteger(levels) && levels >= 1 && levels <= MAX_TRAIN_TIMESTEPS)) {
    throw new ExportDirectoryError(`${where}: model.num_train_timesteps must be an integer in [1, ${MAX_TRAIN_TIMESTEPS}], got ${show(levels)}`);
  }
  if (!COMPUTE_DTYPES.includes(model.compute_dtype === undefined ? 'float32' : model.compute_dtype)) { // null is no dtype
    throw new ExportDirectoryError(`${where}: model.compute_dtype must be float32 or float16, got ${show(model.compute_dtype)}`);
  }
  for (const key of ['is_image', 'final_denoise']) {
    if (model[key] !== undefined && typeof model[key] !== 'boolean') {
      throw new ExportDirectoryError(`${where}: model.${key} must be true or false, got ${show(model[key])}`);
    }
  }
  for (const key of ['name', 'description']) {
    if (model[key] !== undefined && typeof model[key] !== 'string') throw new ExportDirectoryError(`${where}: model.name and model.description must be strings`);
  }
  if (manifest.opset !== undefined && manifest.opset !== null && !(Number.isSafeInteger(manifest.opset) && manifest.opset >= 1 && manifest.opset <= 1000)) {
    throw new ExportDirectoryError(`${where}: opset must be an int in [1, 1000], got ${show(manifest.opset)}`);
  }
  if ((model.dtype === undefined ? 'float32' : model.dtype) !== 'float32') throw new ExportDirectoryError(`${where}: model.dtype ${model.dtype} is not supported (float32 only)`);
  for (const key of ['init_range', 'data_range']) {
    const range = model[key];
    if (range !== undefined && !(Array.isArray(range) && range.length === 2 && range.map(plainNumbers).every(Number.isFinite)
        && range[0] < range[1])) {
      throw new ExportDirectoryError(`${where}: model.${key} must be [low, high] with low < high, got ${show(range)}`);
    }
  }
  for (const [key, graph] of Object.entries(manifest.graphs)) {
    if (!Object.hasOwn(GRAPH_CONTRACT, key)) continue; // a graph key this runtime does not know is ignored (as Python)
    if (graph === null || typeof graph !== 'object') throw new ExportDirectoryError(`${where}: graphs.${key} must be an object`);
    checkRelativePath(graph.file, `${where}: graphs.${key}.file`);
    checkIoNames(graph, key, `${where}: graphs.${key}`, model.sample_shape); // every known graph's table, loaded or not (as Python)
  }
  model.is_image = isImage(model);
  return plainNumbers(manifest);
}

/**
 * `model.is_image`, or where an older manifest leaves it out, the one rule of every host (as Python's
 * ncsn_runtime.manifest): samples of 3 dims [C, H, W] are images, any other shape is not.
 * @param {{is_image?: boolean, sample_shape: number[]}} model
 * @returns {boolean}
 */
export function isImage(model) {
  return model.is_image ?? model.sample_shape.length === 3;
}

/**
 * Hex sha256 of bytes (WebCrypto: globalThis.crypto.subtle in Node >= 18 and in secure browser contexts).
 * @param {Uint8Array} bytes
 * @returns {Promise<string | null>} null where WebCrypto is unavailable (plain-http pages off localhost)
 */
export async function sha256Hex(bytes) {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) return null;
  const digest = new Uint8Array(await subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * Bytes of a file listed in the manifest, after checking its size and sha256.
 * @param {FileSource} source
 * @param {Manifest} manifest
 * @param {string} relative
 * @returns {Promise<Uint8Array>}
 */
export async function readVerified(source, manifest, relative) {
  const entry = listedEntry(manifest, relative);
  let bytes;
  try {
    bytes = await source.readBytes(relative);
  } catch (error) {
    throw new ExportDirectoryError(`${source.location}/${relative} is listed in ${MANIFEST_NAME} but missing (${error.message})`);
  }
  if (bytes.byteLength !== entry.bytes) checkListedFile(source.location, relative, entry, bytes.byteLength, null);
  const digest = source.sha256 ? await source.sha256(bytes) : await sha256Hex(bytes);
  checkListedFile(source.location, relative, entry, bytes.byteLength, digest);
  return bytes;
}

/**
 * The manifest entry of a listed file (relative path checked); throws when it is not listed.
 * @param {Manifest} manifest @param {string} relative
 * @returns {{sha256: string, bytes: number}}
 */
export function listedEntry(manifest, relative) {
  checkRelativePath(relative, 'file');
  const entry = Object.hasOwn(manifest.files, relative) ? manifest.files[relative] : undefined;
  if (!entry) throw new ExportDirectoryError(`${relative} is not listed in ${MANIFEST_NAME}`);
  return entry;
}

/**
 * Throws unless a file's size and sha256 are its manifest entry's (one message for in-memory and streamed checks).
 * @param {string} location @param {string} relative @param {{sha256: string, bytes: number}} entry
 * @param {number} size @param {string | null} digest null: not computed (no WebCrypto), only the size is checked
 */
export function checkListedFile(location, relative, entry, size, digest) {
  if (size !== entry.bytes) {
    throw new ExportDirectoryError(`${location}/${relative} is ${size} bytes, ${MANIFEST_NAME} says ${entry.bytes} (truncated or replaced?)`);
  }
  if (digest !== null && digest !== entry.sha256) {
    throw new ExportDirectoryError(`${location}/${relative} sha256 ${digest.slice(0, 12)}... does not match ${MANIFEST_NAME} (${String(entry.sha256).slice(0, 12)}...)`);
  }
}

/**
 * Check that a graph is listed and has the contract's input/output names.
 * @param {Manifest} manifest
 * @param {'score' | 'step' | 'sampler'} name
 * @returns {string} the graph's file (relative path)
 */
export function graphFile(manifest, name) {
  const graph = manifest.graphs[name];
  if (!graph) throw new ExportDirectoryError(`${MANIFEST_NAME} lists no \`${name}\` graph (has: ${Object.keys(manifest.graphs).join(', ') || 'none'})`);
  checkIoNames(graph, name, `${MANIFEST_NAME}: graphs.${name}`);
  return graph.file;
}
