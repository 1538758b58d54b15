// The schedule formulas of annealed Langevin dynamics: the JavaScript twin of runtime/ncsn_runtime/schedule.py.
// Computed in float64 like numpy and handed out as Float32Array (sigmas, step sizes) / BigInt64Array (timesteps).

/** Resource limits on configs read from export directories (as ncsn_runtime.schedule). */
export const MAX_TRAIN_TIMESTEPS = 100000;
export const MAX_ANNEALED_STEPS = 10000;
export const MAX_TOTAL_STEPS = 1000000;

/**
 * @param {string} name
 * @param {unknown} value
 * @param {number} [low]
 * @param {number} [high]
 * @returns {number}
 */
export function checkCount(name, value, low = 1, high = Infinity) {
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) {
    throw new TypeError(`\`${name}\` must be an integer, got ${typeof value} (${String(value)})`);
  }
  if (value < low || value > high) throw new RangeError(`\`${name}\` must be in [${low}, ${high === Infinity ? 'inf' : high}], got ${value}`);
  return value;
}

/**
 * @param {string} name
 * @param {unknown} value
 * @returns {number}
 */
export function checkPositiveFloat(name, value) {
  if (typeof value !== 'number') throw new TypeError(`\`${name}\` must be a number, got ${typeof value} (${String(value)})`);
  if (!Number.isFinite(value) || value <= 0) throw new RangeError(`\`${name}\` must be a finite number > 0, got ${value}`);
  return value;
}

/**
 * @param {unknown} sigmaMin
 * @param {unknown} sigmaMax
 * @returns {[number, number]}
 */
export function checkSigmaRange(sigmaMin, sigmaMax) {
  const low = checkPositiveFloat('sigma_min', sigmaMin);
  const high = checkPositiveFloat('sigma_max', sigmaMax);
  if (low >= high) throw new RangeError(`\`sigma_min\` must be < \`sigma_max\`, got sigma_min=${low}, sigma_max=${high}`);
  return [low, high];
}

/**
 * numpy.linspace(start, stop, num) in float64 (same formula: start + i * step, last entry = stop).
 * @param {number} start
 * @param {number} stop
 * @param {number} num
 * @returns {Float64Array}
 */
export function linspace(start, stop, num) {
  const out = new Float64Array(num);
  const step = num > 1 ? (stop - start) / (num - 1) : 0;
  for (let i = 0; i < num; i++) out[i] = i * step + start;
  if (num > 1) out[num - 1] = stop;
  return out;
}

/**
 * Round half to even, like numpy.round.
 * @param {number} value
 * @returns {number}
 */
export function roundHalfEven(value) {
  const floor = Math.floor(value);
  const diff = value - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/**
 * Noise levels float32 [numLevels]: geometric from sigmaMax down to sigmaMin.
 * @param {number} sigmaMax
 * @param {number} sigmaMin
 * @param {number} numLevels
 * @returns {Float32Array}
 */
export function geometricSigmas(sigmaMax, sigmaMin, numLevels) {
  return Float32Array.from(linspace(Math.log(sigmaMax), Math.log(sigmaMin), numLevels), Math.exp);
}

/**
 * Langevin step sizes float32 [N]: alpha_i = eps * (sigma_i / sigma_last)**2, in float64.
 * @param {ArrayLike<number>} sigmas
 * @param {number} samplingEps
 * @returns {Float32Array}
 */
export function stepSizes(sigmas, samplingEps) {
  const last = sigmas[sigmas.length - 1];
  return Float32Array.from(sigmas, (sigma) => {
    const ratio = sigma / last;
    return samplingEps * (ratio * ratio);
  });
}

/**
 * Level indices int64 [n]: n levels evenly spread from the first trained level to the last.
 * @param {number} numInferenceSteps
 * @param {number} numTrainTimesteps
 * @returns {BigInt64Array}
 */
export function spanningTimesteps(numInferenceSteps, numTrainTimesteps) {
  const values = linspace(0, numTrainTimesteps - 1, numInferenceSteps);
  return BigInt64Array.from(values, (value) => BigInt(roundHalfEven(value)));
}

/**
 * One Langevin step x + alpha/2 * score + sqrt(alpha) * z in float32, evaluated in numpy's order
 * ((x + (0.5 * alpha) * score) + sqrt(alpha) * z) with every operation rounded to float32.
 * @param {Float32Array} sample x [B * D]
 * @param {Float32Array} score s(x, level) [B * D]
 * @param {number} stepSize alpha (a float32 value)
 * @param {Float32Array} noise z [B * D]
 * @param {Float32Array} [out] result buffer (may be `sample`)
 * @returns {Float32Array}
 */
export function langevinUpdate(sample, score, stepSize, noise, out = new Float32Array(sample.length)) {
  const fround = Math.fround;
  const alpha = fround(stepSize);
  const half = fround(0.5 * alpha);
  const root = fround(Math.sqrt(alpha));
  for (let i = 0; i < sample.length; i++) {
    out[i] = fround(sample[i] + fround(half * score[i])) + fround(root * noise[i]);
  }
  return out;
}

/**
 * NCSNv2's final denoising step x + sigma_last**2 * score in float32 (sigmaLastSquared a float32 value).
 * @param {Float32Array} sample
 * @param {Float32Array} score
 * @param {number} sigmaLastSquared
 * @param {Float32Array} [out]
 * @returns {Float32Array}
 */
export function denoiseUpdate(sample, score, sigmaLastSquared, out = new Float32Array(sample.length)) {
  const factor = Math.fround(sigmaLastSquared);
  for (let i = 0; i < sample.length; i++) out[i] = sample[i] + Math.fround(factor * score[i]);
  return out;
}
