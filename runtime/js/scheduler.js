// AnnealedLangevinDynamicsScheduler on Float32Arrays: the JavaScript sibling of ncsn_runtime.AnnealedLangevinDynamicsScheduler.
// Same config (diffusers' scheduler_config.json), same schedule, same numbers (float32).

import {
  MAX_ANNEALED_STEPS,
  MAX_TOTAL_STEPS,
  MAX_TRAIN_TIMESTEPS,
  checkCount,
  checkPositiveFloat,
  checkSigmaRange,
  geometricSigmas,
  langevinUpdate,
  spanningTimesteps,
  stepSizes,
} from './schedule.js';

export const SCHEDULER_CLASS_NAME = 'AnnealedLangevinDynamicsScheduler';
export const SCHEDULER_PARAMETERS = ['num_train_timesteps', 'num_annealed_steps', 'sigma_min', 'sigma_max', 'sampling_eps'];

/**
 * @typedef {object} SchedulerConfig
 * @property {number} num_train_timesteps number L of trained noise levels (>= 1)
 * @property {number} num_annealed_steps Langevin steps T per level (>= 1)
 * @property {number} sigma_min smallest trained sigma (> 0)
 * @property {number} sigma_max largest trained sigma (> sigma_min)
 * @property {number} sampling_eps step-size scale epsilon (> 0)
 */

/**
 * Validate a parsed scheduler_config.json and keep the five parameters.
 * @param {unknown} payload parsed JSON
 * @param {string} [source] file name for messages
 * @returns {SchedulerConfig}
 */
export function parseSchedulerConfig(payload, source = 'scheduler_config.json') {
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) throw new TypeError(`${source} must hold a JSON object`);
  const record = /** @type {Record<string, unknown>} */ (payload);
  const className = record._class_name ?? SCHEDULER_CLASS_NAME;
  if (className !== SCHEDULER_CLASS_NAME) throw new Error(`${source} configures \`${className}\`, expected \`${SCHEDULER_CLASS_NAME}\``);
  const missing = SCHEDULER_PARAMETERS.filter((key) => !(key in record));
  if (missing.length) throw new Error(`${source} is missing required keys: ${missing.join(', ')}`);
  return /** @type {SchedulerConfig} */ (Object.fromEntries(SCHEDULER_PARAMETERS.map((key) => [key, record[key]])));
}

/**
 * Output of {@link AnnealedLangevinDynamicsScheduler#step}.
 * @typedef {object} AnnealedLangevinDynamicsOutput
 * @property {Float32Array} prevSample the sample after one Langevin step, [B * D]
 */

export class AnnealedLangevinDynamicsScheduler {
  /**
   * @param {SchedulerConfig} config the five parameters of scheduler_config.json
   */
  constructor(config) {
    const numTrain = checkCount('num_train_timesteps', config.num_train_timesteps, 1, MAX_TRAIN_TIMESTEPS);
    const numAnnealed = checkCount('num_annealed_steps', config.num_annealed_steps, 1, MAX_ANNEALED_STEPS);
    if (numTrain * numAnnealed > MAX_TOTAL_STEPS) {
      throw new RangeError(`\`num_train_timesteps\` x \`num_annealed_steps\` = ${numTrain * numAnnealed} exceeds the limit of ${MAX_TOTAL_STEPS} Langevin steps per run`);
    }
    const [sigmaMin, sigmaMax] = checkSigmaRange(config.sigma_min, config.sigma_max);
    const eps = checkPositiveFloat('sampling_eps', config.sampling_eps);
    /** @type {Readonly<SchedulerConfig>} */
    this.config = Object.freeze({
      num_train_timesteps: numTrain,
      num_annealed_steps: numAnnealed,
      sigma_min: sigmaMin,
      sigma_max: sigmaMax,
      sampling_eps: eps,
    });
    this.numTrainTimesteps = numTrain;
    this.numAnnealedSteps = numAnnealed;
    /** @type {number | null} */
    this.numInferenceSteps = null;
    /** trained noise levels, float32 [L] */
    this.trainSigmas = geometricSigmas(sigmaMax, sigmaMin, numTrain);
    this._setSchedule(BigInt64Array.from({ length: numTrain }, (_, i) => BigInt(i)), this.trainSigmas, eps);
  }

  /**
   * Build from parsed scheduler_config.json (extra keys such as _class_name are ignored).
   * @param {unknown} payload
   * @returns {AnnealedLangevinDynamicsScheduler}
   */
  static fromConfig(payload) {
    return new AnnealedLangevinDynamicsScheduler(parseSchedulerConfig(payload));
  }

  /**
   * @param {BigInt64Array} timesteps
   * @param {Float32Array} sigmas
   * @param {number} samplingEps
   */
  _setSchedule(timesteps, sigmas, samplingEps) {
    /** level indices int64 [N], largest sigma first */
    this.timesteps = timesteps;
    /** noise levels float32 [N], aligned with timesteps */
    this.sigmas = Float32Array.from(sigmas);
    /** Langevin step sizes float32 [N], aligned with timesteps */
    this.stepSize = stepSizes(this.sigmas, samplingEps);
    this.samplingEps = samplingEps;
    /** @type {Map<number, number>} level -> schedule position */
    this._positionOfLevel = new Map(Array.from(timesteps, (level, position) => [Number(level), position]));
  }

  /**
   * Choose the noise levels to sample with (run before inference). Pass exactly one of
   * numInferenceSteps (n levels spread over the trained range) and timesteps (custom, strictly increasing).
   * @param {{numInferenceSteps?: number, samplingEps?: number, timesteps?: ArrayLike<number | bigint>}} options
   */
  setTimesteps({ numInferenceSteps, samplingEps, timesteps } = {}) {
    if ((numInferenceSteps === undefined) === (timesteps === undefined)) throw new Error('pass exactly one of `numInferenceSteps` and `timesteps`');
    const eps = samplingEps === undefined ? this.config.sampling_eps : checkPositiveFloat('samplingEps', samplingEps);
    let levels;
    if (timesteps !== undefined) {
      levels = this._checkCustomTimesteps(timesteps);
    } else {
      const count = checkCount('numInferenceSteps', numInferenceSteps, 1, this.numTrainTimesteps);
      levels = spanningTimesteps(count, this.numTrainTimesteps);
    }
    this.numInferenceSteps = levels.length;
    this._setSchedule(levels, Float32Array.from(levels, (level) => this.trainSigmas[Number(level)]), eps);
  }

  /**
   * @param {ArrayLike<number | bigint>} timesteps
   * @returns {BigInt64Array}
   */
  _checkCustomTimesteps(timesteps) {
    const list = Array.from(timesteps, Number);
    const top = this.numTrainTimesteps - 1;
    if (list.length === 0) throw new RangeError('`timesteps` must be a non-empty list of level indices');
    if (!list.every(Number.isSafeInteger)) throw new TypeError(`\`timesteps\` must hold integers, got [${list}]`);
    if (Math.min(...list) < 0 || Math.max(...list) > top) throw new RangeError(`\`timesteps\` must lie in [0, ${top}], got [${list}]`);
    if (list.some((level, i) => i > 0 && level <= list[i - 1])) {
      throw new RangeError(`\`timesteps\` must be strictly increasing (largest sigma first), got [${list}]`);
    }
    return BigInt64Array.from(list, BigInt);
  }

  /**
   * Set n geometric sigmas between custom bounds (undefined = config value); timesteps become the n
   * evenly spread trained levels.
   * @param {number} numInferenceSteps
   * @param {{sigmaMin?: number, sigmaMax?: number, samplingEps?: number}} [options]
   */
  setSigmas(numInferenceSteps, { sigmaMin, sigmaMax, samplingEps } = {}) {
    const count = checkCount('numInferenceSteps', numInferenceSteps, 1, this.numTrainTimesteps);
    const [low, high] = checkSigmaRange(sigmaMin ?? this.config.sigma_min, sigmaMax ?? this.config.sigma_max);
    const eps = samplingEps === undefined ? this.config.sampling_eps : checkPositiveFloat('samplingEps', samplingEps);
    this.numInferenceSteps = count;
    this._setSchedule(spanningTimesteps(count, this.numTrainTimesteps), geometricSigmas(high, low, count), eps);
  }

  /**
   * Schedule position of a level index, with an error naming the accepted levels.
   * @param {number | bigint} timestep
   * @returns {number}
   */
  positionOf(timestep) {
    const level = Number(timestep);
    const top = this.numTrainTimesteps - 1;
    if (!Number.isSafeInteger(level)) throw new TypeError(`\`timestep\` must be an integer level index, got ${timestep}`);
    if (level < 0 || level > top) throw new RangeError(`\`timestep\` must be a trained level in [0, ${top}], got ${level}`);
    const position = this._positionOfLevel.get(level);
    if (position === undefined) {
      throw new RangeError(`\`timestep\` ${level} is not in the current schedule (timesteps=[${this.timesteps}]); call setTimesteps() to include it`);
    }
    return position;
  }

  /**
   * Identity (NCSN feeds the sample unscaled); kept for diffusers compatibility.
   * @param {Float32Array} sample
   * @returns {Float32Array}
   */
  scaleModelInput(sample) {
    return sample;
  }

  /**
   * One Langevin step x + alpha/2 * score + sqrt(alpha) * z at level `timestep`.
   * @param {Float32Array} modelOutput score s(x, timestep), same length as sample
   * @param {number | bigint} timestep level index present in `timesteps`
   * @param {Float32Array} sample current x, [B * D] flattened
   * @param {{noise: Float32Array}} options z, e.g. from counterNormal(seeds, langevinCounter(i, t, T), shape)
   * @returns {AnnealedLangevinDynamicsOutput}
   */
  step(modelOutput, timestep, sample, { noise } = /** @type {any} */ ({})) {
    for (const [name, value] of /** @type {[string, unknown][]} */ ([['modelOutput', modelOutput], ['sample', sample], ['noise', noise]])) {
      if (!(value instanceof Float32Array)) throw new TypeError(`\`${name}\` must be a Float32Array, got ${value === undefined ? 'undefined' : value?.constructor?.name}`);
    }
    if (modelOutput.length !== sample.length) throw new RangeError(`\`modelOutput\` has ${modelOutput.length} values but \`sample\` has ${sample.length}`);
    if (noise.length !== sample.length) throw new RangeError(`\`noise\` has ${noise.length} values but \`sample\` has ${sample.length}`);
    const alpha = this.stepSize[this.positionOf(timestep)];
    return { prevSample: langevinUpdate(sample, modelOutput, alpha, noise) };
  }

  /**
   * x + sigma_t * noise with one level per sample (timesteps of length B) or one for all (a single level).
   * @param {Float32Array} originalSamples [B * D]
   * @param {Float32Array} noise [B * D]
   * @param {number | bigint | ArrayLike<number | bigint>} timesteps
   * @returns {Float32Array}
   */
  addNoise(originalSamples, noise, timesteps) {
    if (!(originalSamples instanceof Float32Array) || !(noise instanceof Float32Array)) throw new TypeError('`originalSamples` and `noise` must be Float32Arrays');
    if (noise.length !== originalSamples.length) throw new RangeError(`\`noise\` has ${noise.length} values but \`originalSamples\` has ${originalSamples.length}`);
    const levels = typeof timesteps === 'number' || typeof timesteps === 'bigint' ? [timesteps] : Array.from(timesteps);
    const sigmas = levels.map((level) => this.sigmas[this.positionOf(level)]);
    if (sigmas.length !== 1 && originalSamples.length % sigmas.length !== 0) {
      throw new RangeError(`\`timesteps\` has ${sigmas.length} entries, which does not divide a sample buffer of ${originalSamples.length} values`);
    }
    const perSample = originalSamples.length / sigmas.length;
    const out = new Float32Array(originalSamples.length);
    for (let i = 0; i < out.length; i++) out[i] = originalSamples[i] + Math.fround(noise[i] * sigmas[Math.floor(i / perSample)]);
    return out;
  }
}
