// The export directory's manifest.json: the JavaScript reader of runtime/ncsn_runtime/manifest.py's format.
// Files are read through a FileSource (fs in Node, fetch in the browser) so one implementation serves both.

export const MANIFEST_NAME = 'manifest.json';
export const FORMAT_NAME = 'ncsn-export';
export const FORMAT_VERSION = 1;
export const DEFAULT_SCHEDULER_CONFIG = 'scheduler/scheduler_config.json';

/** Graph I/O names of the contract (docs/design.md). */
export const GRAPH_CONTRACT = {
  score: { inputs: ['sample', 'timestep'], outputs: ['score'] },
  step: { inputs: ['sample', 'seed', 'timestep', 'step_size', 'counter'], outputs: ['next_sample'] },
  sampler: { inputs: ['sample', 'seed', 'timesteps', 'step_sizes', 'num_annealed_steps'], outputs: ['final_sample'] },
  gpu_step: { inputs: ['sample', 'noise', 'timestep', 'step_size'], outputs: ['next_sample'] },
  gpu_sampler: { inputs: ['sample', 'seed', 'timesteps', 'step_sizes', 'num_annealed_steps'], outputs: ['final_sample'] },
};

/**
 * Reads files of one export directory by relative path.
 * @typedef {object} FileSource
 * @property {string} location where the directory is (for messages)
 * @property {(relative: string) => Promise<Uint8Array>} readBytes resolves the file's bytes; rejects with an Error naming it
 * @property {(bytes: Uint8Array) => Promise<string>} [sha256] hex sha256 (default: WebCrypto)
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

/** An export directory is missing, incomplete, corrupt or of an unknown format. */
export class ExportDirectoryError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = 'ExportDirectoryError';
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
    bytes = await source.readBytes(MANIFEST_NAME);
  } catch (error) {
    throw new ExportDirectoryError(`${source.location}/${MANIFEST_NAME} is missing: ${source.location} is not an ncsn-export directory (${error.message})`);
  }
  let manifest;
  try {
    manifest = JSON.parse(new TextDecoder().decode(bytes));
  } catch (error) {
    throw new ExportDirectoryError(`${source.location}/${MANIFEST_NAME} is not valid JSON: ${error.message}`);
  }
  const where = `${source.location}/${MANIFEST_NAME}`;
  if (manifest === null || typeof manifest !== 'object' || manifest.format !== FORMAT_NAME) {
    throw new ExportDirectoryError(`${where} is not an ncsn-export manifest (format=${JSON.stringify(manifest?.format)})`);
  }
  if (manifest.format_version !== FORMAT_VERSION) {
    throw new ExportDirectoryError(`${where} has format_version ${JSON.stringify(manifest.format_version)}; this runtime reads ${FORMAT_VERSION}`);
  }
  for (const key of ['model', 'graphs', 'files']) {
    if (manifest[key] === null || typeof manifest[key] !== 'object') throw new ExportDirectoryError(`${where} lacks the \`${key}\` section`);
  }
  const model = manifest.model;
  if (!Array.isArray(model.sample_shape) || !model.sample_shape.every((n) => Number.isSafeInteger(n) && n > 0)) {
    throw new ExportDirectoryError(`${where}: model.sample_shape must be a list of positive integers, got ${JSON.stringify(model.sample_shape)}`);
  }
  if ((model.dtype ?? 'float32') !== 'float32') throw new ExportDirectoryError(`${where}: model.dtype ${model.dtype} is not supported (float32 only)`);
  for (const key of ['init_range', 'data_range']) {
    const range = model[key];
    if (range !== undefined && !(Array.isArray(range) && range.length === 2 && range.every(Number.isFinite) && range[0] < range[1])) {
      throw new ExportDirectoryError(`${where}: model.${key} must be [low, high] with low < high, got ${JSON.stringify(range)}`);
    }
  }
  return manifest;
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
  const entry = manifest.files[relative];
  if (!entry) throw new ExportDirectoryError(`${relative} is not listed in ${MANIFEST_NAME}`);
  let bytes;
  try {
    bytes = await source.readBytes(relative);
  } catch (error) {
    throw new ExportDirectoryError(`${source.location}/${relative} is listed in ${MANIFEST_NAME} but missing (${error.message})`);
  }
  if (bytes.byteLength !== entry.bytes) {
    throw new ExportDirectoryError(`${source.location}/${relative} is ${bytes.byteLength} bytes, ${MANIFEST_NAME} says ${entry.bytes} (truncated or replaced?)`);
  }
  const digest = source.sha256 ? await source.sha256(bytes) : await sha256Hex(bytes);
  if (digest !== null && digest !== entry.sha256) {
    throw new ExportDirectoryError(`${source.location}/${relative} sha256 ${digest.slice(0, 12)}... does not match ${MANIFEST_NAME} (${String(entry.sha256).slice(0, 12)}...)`);
  }
  return bytes;
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
  const contract = GRAPH_CONTRACT[name];
  for (const side of /** @type {const} */ (['inputs', 'outputs'])) {
    if (!Array.isArray(graph[side])) continue;
    const names = graph[side].map((value) => value.name);
    if (names.join(',') !== contract[side].join(',')) {
      throw new ExportDirectoryError(`${name} graph ${side} are [${names}], the contract is [${contract[side]}]: export directory mismatched`);
    }
  }
  return graph.file;
}
