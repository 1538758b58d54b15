// Counter-based Gaussian noise: the JavaScript twin of runtime/ncsn_runtime/noise.py (the spec).
//
// One draw is a pure function of (seed, counter, element, stream):
//   * Philox4x32-10, key (seed & 0xFFFFFFFF, seed >> 32), counter (block, counter lo, counter hi, stream);
//     element e uses block e >> 2, output word e & 3.
//   * word w -> uniform u = (2 * (w >>> 9) + 1) * 2**-24, exact in float64 and float32.
//   * Box-Muller on word pairs (0, 1) and (2, 3) of a block in float64, rounded to float32 (Math.fround):
//     r = sqrt(-2 ln u_a), z_a = r cos(2 pi u_b), z_b = r sin(2 pi u_b).
// All 32-bit arithmetic uses `>>> 0` / Math.imul; the high word of a 32x32 product is built from 16-bit halves,
// so every intermediate stays an exact float64 integer (< 2**53). BigInt is used only to split 64-bit seeds and
// counters into their two 32-bit words.
//
// Seeds are in [0, 2**63 - 1]. A seed may be a Number only while it is a safe integer (<= 2**53 - 1); larger seeds
// must be given as a BigInt or a decimal string (a Number above 2**53 has already lost its low bits).

/** @typedef {number | bigint | string} SeedLike  a seed: safe-integer Number, BigInt, or decimal string */

export const PHILOX_M0 = 0xd2511f53;
export const PHILOX_M1 = 0xcd9e8d57;
export const PHILOX_W0 = 0x9e3779b9;
export const PHILOX_W1 = 0xbb67ae85;
export const PHILOX_ROUNDS = 10;
export const LANGEVIN_STREAM = 0;
export const INIT_STREAM = 1;
export const INPAINT_STREAM = 2; // inpainting's known-region target known + sigma_i * z_i (counter = schedule position i)
export const MAX_SEED = (1n << 63n) - 1n;
export const MAX_COUNTER = (1n << 63n) - 1n;
export const MAX_STREAM = 0xffffffff;

const M0_LO = PHILOX_M0 & 0xffff;
const M0_HI = PHILOX_M0 >>> 16;
const M1_LO = PHILOX_M1 & 0xffff;
const M1_HI = PHILOX_M1 >>> 16;
const TWO_PI = 2.0 * Math.PI;
const TWO_POW_M24 = 2 ** -24;

/**
 * High 32 bits of the 64-bit product a * m for uint32 `a` and a constant m given by its 16-bit halves.
 * @param {number} a uint32
 * @param {number} mLo low 16 bits of m
 * @param {number} mHi high 16 bits of m
 * @returns {number} uint32
 */
function mulhi(a, mLo, mHi) {
  const aLo = a & 0xffff;
  const aHi = a >>> 16;
  const ll = aLo * mLo; // each product < 2**32: exact
  const lh = aLo * mHi;
  const hl = aHi * mLo;
  const hh = aHi * mHi;
  const mid = (ll >>> 16) + (lh & 0xffff) + (hl & 0xffff); // < 3 * 2**16
  return (hh + (lh >>> 16) + (hl >>> 16) + Math.floor(mid / 65536)) >>> 0;
}

/**
 * Philox4x32-10 block function on uint32 words.
 * @param {number} c0 @param {number} c1 @param {number} c2 @param {number} c3 counter words (uint32)
 * @param {number} k0 @param {number} k1 key words (uint32)
 * @param {Uint32Array} [out] receives the four output words (allocated when absent)
 * @returns {Uint32Array} the four output words
 */
export function philox4x32(c0, c1, c2, c3, k0, k1, out = new Uint32Array(4)) {
  c0 >>>= 0; c1 >>>= 0; c2 >>>= 0; c3 >>>= 0; k0 >>>= 0; k1 >>>= 0;
  for (let round = 0; round < PHILOX_ROUNDS; round++) {
    if (round) {
      k0 = (k0 + PHILOX_W0) >>> 0;
      k1 = (k1 + PHILOX_W1) >>> 0;
    }
    const hi0 = mulhi(c0, M0_LO, M0_HI);
    const lo0 = Math.imul(c0, PHILOX_M0) >>> 0;
    const hi1 = mulhi(c2, M1_LO, M1_HI);
    const lo1 = Math.imul(c2, PHILOX_M1) >>> 0;
    c0 = (hi1 ^ c1 ^ k0) >>> 0;
    c1 = lo1;
    c2 = (hi0 ^ c3 ^ k1) >>> 0;
    c3 = lo0;
  }
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
  return out;
}

/**
 * Parse one 64-bit value (seed or counter) into a BigInt in [0, max], with errors naming the argument.
 * @param {string} name argument name for messages
 * @param {SeedLike} value
 * @param {bigint} max inclusive upper bound
 * @returns {bigint}
 */
export function toUint64(name, value, max) {
  let big;
  if (typeof value === 'bigint') {
    big = value;
  } else if (typeof value === 'number') {
    if (!Number.isInteger(value)) throw new TypeError(`\`${name}\` must be an integer in [0, ${max}], got ${value}`);
    if (!Number.isSafeInteger(value)) {
      throw new TypeError(`\`${name}\` ${value} is above 2**53 - 1 and has lost precision as a Number; pass it as a BigInt or a decimal string`);
    }
    big = BigInt(value);
  } else if (typeof value === 'string') {
    if (!/^[0-9]+$/.test(value.trim())) throw new TypeError(`\`${name}\` must be a decimal integer string in [0, ${max}], got ${JSON.stringify(value)}`);
    big = BigInt(value.trim());
  } else {
    throw new TypeError(`\`${name}\` must be a Number, BigInt or decimal string in [0, ${max}], got ${value === null ? 'null' : typeof value}`);
  }
  if (big < 0n || big > max) throw new RangeError(`\`${name}\` must be in [0, ${max}], got ${big}`);
  return big;
}

/**
 * Split a uint64 BigInt into its [low, high] 32-bit words.
 * @param {bigint} value
 * @returns {[number, number]}
 */
function words64(value) {
  return [Number(value & 0xffffffffn), Number(value >> 32n)];
}

/**
 * Check a list of per-sample seeds.
 * @param {ArrayLike<SeedLike> | BigInt64Array} seeds
 * @returns {bigint[]}
 */
export function checkSeeds(seeds) {
  if (seeds == null || typeof seeds === 'string' || typeof seeds.length !== 'number' || seeds.length === 0) {
    throw new TypeError('`seed` must be a non-empty array of seeds (Number, BigInt or decimal string)');
  }
  return Array.from(seeds, (seed, b) => toUint64(`seed[${b}]`, seed, MAX_SEED));
}

/**
 * Per-sample seeds: a single seed gives seed + b; an array is taken as is (its length must match).
 * @param {SeedLike | ArrayLike<SeedLike>} seed
 * @param {number} batchSize
 * @returns {bigint[]}
 */
export function seedsForBatch(seed, batchSize) {
  if (!Number.isSafeInteger(batchSize) || batchSize < 1) throw new RangeError(`\`batchSize\` must be an integer >= 1, got ${batchSize}`);
  if (typeof seed === 'number' || typeof seed === 'bigint' || typeof seed === 'string') {
    const base = toUint64('seed', seed, MAX_SEED - BigInt(batchSize - 1)); // the last sample's seed S + B - 1 <= 2**63 - 1 (as Python)
    return Array.from({ length: batchSize }, (_, b) => base + BigInt(b));
  }
  const seeds = checkSeeds(seed);
  if (seeds.length !== batchSize) throw new RangeError(`\`seed\` has ${seeds.length} entries but batchSize is ${batchSize}`);
  return seeds;
}

/**
 * @param {string} name
 * @param {number} value
 * @param {number} max
 */
function checkSmallInt(name, value, max) {
  if (!Number.isSafeInteger(value) || value < 0 || value > max) throw new RangeError(`\`${name}\` must be an integer in [0, ${max}], got ${value}`);
  return value;
}

/** @param {ArrayLike<number>} shape */
function numel(shape) {
  let count = 1;
  for (const size of shape) {
    checkSmallInt('shape entry', size, 2 ** 31);
    count *= size;
  }
  return count;
}

/**
 * Raw Philox words, uint32 [B, numElements] flattened.
 * @param {ArrayLike<SeedLike>} seeds per-sample seeds [B]
 * @param {SeedLike} counter draw counter in [0, 2**63 - 1]
 * @param {number} numElements words per sample
 * @param {number} stream stream id in [0, 2**32 - 1]
 * @returns {Uint32Array}
 */
export function philoxWords(seeds, counter, numElements, stream) {
  const keys = checkSeeds(seeds).map(words64);
  const [cLo, cHi] = words64(toUint64('counter', counter, MAX_COUNTER));
  checkSmallInt('stream', stream, MAX_STREAM);
  checkSmallInt('numElements', numElements, 2 ** 34);
  const out = new Uint32Array(keys.length * numElements);
  const block = new Uint32Array(4);
  for (let b = 0; b < keys.length; b++) {
    const [k0, k1] = keys[b];
    const base = b * numElements;
    for (let e = 0; e < numElements; e += 4) {
      philox4x32(e / 4, cLo, cHi, stream, k0, k1, block);
      for (let w = 0; w < 4 && e + w < numElements; w++) out[base + e + w] = block[w];
    }
  }
  return out;
}

/**
 * uint32 word -> float64 uniform in (0, 1) on the 2**-23 grid offset by 2**-24.
 * @param {number} word
 * @returns {number}
 */
export function wordToUniform(word) {
  return ((word >>> 9) * 2 + 1) * TWO_POW_M24;
}

/**
 * Standard normal noise, float32 [B, ...shape] flattened; equals ncsn_runtime.noise.counter_normal.
 * @param {ArrayLike<SeedLike>} seeds per-sample seeds [B]
 * @param {SeedLike} counter draw counter (Langevin: position * T + step)
 * @param {ArrayLike<number>} shape per-sample shape
 * @param {number} [stream] stream id (LANGEVIN_STREAM by default)
 * @returns {Float32Array}
 */
export function counterNormal(seeds, counter, shape, stream = LANGEVIN_STREAM) {
  const numElements = numel(shape);
  const padded = numElements + ((4 - (numElements % 4)) % 4);
  const words = philoxWords(seeds, counter, padded, stream);
  const batch = words.length / padded;
  const out = new Float32Array(batch * numElements);
  for (let b = 0; b < batch; b++) {
    const src = b * padded;
    const dst = b * numElements;
    for (let e = 0; e < padded; e += 2) {
      const radius = Math.sqrt(-2.0 * Math.log(wordToUniform(words[src + e])));
      const angle = TWO_PI * wordToUniform(words[src + e + 1]);
      if (e < numElements) out[dst + e] = radius * Math.cos(angle); // Float32Array stores round like Math.fround
      if (e + 1 < numElements) out[dst + e + 1] = radius * Math.sin(angle);
    }
  }
  return out;
}

/**
 * Uniform noise in (0, 1), float32 [B, ...shape] flattened; equals ncsn_runtime.noise.counter_uniform.
 * @param {ArrayLike<SeedLike>} seeds
 * @param {SeedLike} counter
 * @param {ArrayLike<number>} shape
 * @param {number} [stream] INIT_STREAM by default
 * @returns {Float32Array}
 */
export function counterUniform(seeds, counter, shape, stream = INIT_STREAM) {
  const words = philoxWords(seeds, counter, numel(shape), stream);
  return Float32Array.from(words, wordToUniform);
}

/**
 * The initial x of sampling: low + (high - low) * u in float64 at counter 0 of INIT_STREAM, float32 [B, ...shape].
 * @param {ArrayLike<SeedLike>} seeds
 * @param {ArrayLike<number>} shape
 * @param {number} [low]
 * @param {number} [high]
 * @returns {Float32Array}
 */
export function initialSample(seeds, shape, low = 0.0, high = 1.0) {
  const words = philoxWords(seeds, 0, numel(shape), INIT_STREAM);
  const span = high - low;
  return Float32Array.from(words, (word) => low + span * wordToUniform(word));
}

/**
 * Noise counter of annealed step `annealedStep` at schedule position `levelPosition`: i * T + t.
 * @param {number} levelPosition
 * @param {number} annealedStep
 * @param {number} numAnnealedSteps
 * @returns {number}
 */
export function langevinCounter(levelPosition, annealedStep, numAnnealedSteps) {
  return levelPosition * numAnnealedSteps + annealedStep;
}
