// NCSNPipeline: run an ncsn-export directory with onnxruntime (onnxruntime-node or onnxruntime-web, passed in).
//
// Every graph of the contract can drive sampling (`graph` option; `mode` is the shorthand):
//   sampler / gpu_sampler (fused, mode 'fused' = sampler): the whole annealed loop in one call;
//   score (mode 'stepwise'): score.onnx once per Langevin step, the JS scheduler and counter noise in between;
//   step:     step.onnx once per Langevin step (network + update + counter noise in the graph);
//   gpu_step: gpu_step.onnx once per Langevin step with the JS counter noise as its `noise` input (drawn while
//             the previous step runs); no control flow, bitwise ops or float64: the graph for the WebGPU EP.
// All give the Python runtime's samples for the same seeds (same initial sample, schedule and noise counters).
//
// callbackOnStepEnd(pipe, stepIndex, timestep, callbackKwargs) runs after every Langevin step with the conventions
// of the Python runtime (and of diffusers-ncsn, the seed): stepIndex is the annealed step within its level,
// timestep the level, callbackKwargs.samples the state; a returned { samples } replaces it (checked). The fused
// graphs run every step in one call and cannot stop for it: a callback needs a stepwise graph.

import { ExportDirectoryError, checkRelativePath, graphFile, listedEntry, loadManifest, readVerified, DEFAULT_SCHEDULER_CONFIG } from './manifest.js';
import { ExternalDataError, externalDataLocations, hoistExternalInitializers } from './external_data.js';
import { counterNormal, initialSample, langevinCounter, seedsForBatch } from './noise.js';
import { inpaintWith } from './inpaint.js';
import { checkCount, denoiseUpdate } from './schedule.js';
import { AnnealedLangevinDynamicsScheduler, parseSchedulerConfig } from './scheduler.js';

/** One call holds float32 [B, ...sampleShape] arrays of at most this many bytes (SECURITY.md). */
export const MAX_BATCH_BYTES = 2 * 2 ** 30;

/** @typedef {import('./manifest.js').FileSource} FileSource */
/** @typedef {import('./manifest.js').Manifest} Manifest */
/** @typedef {import('./noise.js').SeedLike} SeedLike */
/** @typedef {'fused' | 'stepwise'} Mode */
/** @typedef {'sampler' | 'gpu_sampler' | 'step' | 'gpu_step' | 'score'} GraphKey */

/** Names `callbackOnStepEndTensorInputs` may list (the seed's `_callback_tensor_inputs`). */
export const CALLBACK_TENSOR_INPUTS = Object.freeze(['samples']);

/**
 * @typedef {object} StepEndKwargs
 * @property {Float32Array} [samples] the state x after this step, C-ordered [B, ...sampleShape] (when asked for; the default)
 * @property {number[]} shape [B, ...sampleShape]
 * @property {number} position schedule position of the level
 * @property {number} annealedStep the annealed step within the level (= stepIndex)
 * @property {number} sigma noise level of this position
 * @property {number} globalStep position * numAnnealedSteps + annealedStep
 */

/**
 * @callback StepEndCallback
 * @param {NCSNPipeline} pipe
 * @param {number} stepIndex the annealed step within its level, 0 .. numAnnealedSteps - 1
 * @param {number} timestep the level's trained index
 * @param {StepEndKwargs} callbackKwargs
 * @returns {void | null | { samples?: Float32Array | ArrayLike<number> } | Promise<void | null | { samples?: Float32Array | ArrayLike<number> }>}
 *   a returned `samples` replaces the state (length B * D, every value finite)
 */

/**
 * @typedef {object} Progress
 * @property {number} position schedule position i (0-based) just finished
 * @property {number} numLevels N, levels in the schedule
 * @property {number} level trained level index fed to the network
 * @property {number} sigma noise level of this position
 * @property {Float32Array} sample current x [B * D] (stepwise: after this level; fused: the final sample)
 */

/**
 * @typedef {object} GenerateOptions
 * @property {SeedLike | SeedLike[]} [seed] one seed (sample b gets seed + b) or one per sample; default 0
 * @property {number} [numSamples] batch size B (>= 1; default 1, or the seed list's length)
 * @property {number} [numInferenceSteps] levels to use (default: every trained level)
 * @property {number} [samplingEps] step-size scale (default: the config's)
 * @property {Mode} [mode] overrides the pipeline's mode
 * @property {GraphKey} [graph] the graph to run (default: the mode's, fused = sampler, stepwise = score)
 * @property {(progress: Progress) => void | Promise<void>} [onProgress] called after each level (stepwise) or once (fused)
 * @property {StepEndCallback} [callbackOnStepEnd] called after every Langevin step; picks a loaded stepwise graph
 *   when neither mode nor graph is given (the fused graphs cannot stop between steps)
 * @property {string[]} [callbackOnStepEndTensorInputs] tensors to put in callbackKwargs: names of CALLBACK_TENSOR_INPUTS
 */

/**
 * @typedef {object} GenerateResult
 * @property {Float32Array} samples final samples, C-ordered [B, ...sampleShape]
 * @property {number[]} shape [B, ...sampleShape]
 * @property {bigint[]} seeds per-sample seeds
 * @property {BigInt64Array} timesteps the schedule's level indices
 * @property {Float32Array} stepSizes the schedule's step sizes
 */

const MODES = ['fused', 'stepwise'];
/** Samples came out NaN/inf (as ncsn_runtime.steppers.NonFiniteSampleError): `samples` lists the bad ones. */
export class NonFiniteSampleError extends Error {
  /** @param {string} message @param {number[]} samples */
  constructor(message, samples) {
    super(message);
    this.name = 'NonFiniteSampleError';
    this.samples = samples;
  }
}

export const GRAPH_KEYS = ['sampler', 'gpu_sampler', 'step', 'gpu_step', 'score'];
/** Graphs `load` takes: the sampling graphs plus inpaint.onnx (run by `inpaint`, not `generate`). */
export const LOADABLE_GRAPHS = [...GRAPH_KEYS, 'inpaint'];
const FUSED_GRAPHS = ['sampler', 'gpu_sampler'];
const MODE_GRAPH = { fused: 'sampler', stepwise: 'score' };
const STEP_GRAPHS = ['step', 'gpu_step', 'score'];

export class NCSNPipeline {
  /**
   * Use {@link NCSNPipeline.load}.
   * @param {object} parts
   * @param {any} parts.ort onnxruntime module (InferenceSession, Tensor)
   * @param {Manifest} parts.manifest
   * @param {import('./scheduler.js').SchedulerConfig} parts.schedulerConfig
   * @param {Record<string, any>} parts.sessions InferenceSession per graph name
   * @param {Mode} parts.mode
   * @param {string} parts.location
   */
  constructor({ ort, manifest, schedulerConfig, sessions, mode, location }) {
    this.ort = ort;
    this.manifest = manifest;
    this.model = manifest.model;
    this.sampleShape = manifest.model.sample_shape.slice();
    this.schedulerConfig = schedulerConfig;
    this.sessions = sessions;
    this.mode = mode;
    this.location = location;
  }

  /**
   * Load an export directory: manifest, scheduler config and the graphs the mode needs (size + sha256 checked).
   * @param {FileSource} source where the export directory's files come from
   * @param {object} options
   * @param {any} options.ort onnxruntime-node or onnxruntime-web module
   * @param {Mode | 'both'} [options.mode] graphs to load: 'fused' (sampler.onnx), 'stepwise' (score.onnx) or 'both'
   * @param {GraphKey[]} [options.graphs] load exactly these graphs instead (the first one is the default graph)
   * @param {object} [options.sessionOptions] passed to InferenceSession.create (e.g. executionProviders)
   * @returns {Promise<NCSNPipeline>}
   */
  static async load(source, { ort, mode = 'fused', graphs, sessionOptions = {} }) {
    if (!ort?.InferenceSession || !ort?.Tensor) throw new TypeError('`ort` must be the onnxruntime-node or onnxruntime-web module');
    if (![...MODES, 'both'].includes(mode)) throw new RangeError(`\`mode\` must be one of fused, stepwise, both; got ${JSON.stringify(mode)}`);
    if (graphs !== undefined && (!Array.isArray(graphs) || !graphs.length || graphs.some((key) => !LOADABLE_GRAPHS.includes(key)))) {
      throw new RangeError(`\`graphs\` must be a non-empty list of ${LOADABLE_GRAPHS.join(', ')}; got ${JSON.stringify(graphs)}`);
    }
    const manifest = await loadManifest(source);
    const configPath = manifest.scheduler_config ?? DEFAULT_SCHEDULER_CONFIG;
    const configBytes = await readVerified(source, manifest, configPath); // listed, inside the directory, sha256 checked
    let configPayload;
    try {
      configPayload = JSON.parse(new TextDecoder().decode(configBytes));
    } catch (error) {
      throw new ExportDirectoryError(`${source.location}/${configPath} is not valid JSON: ${error.message}`);
    }
    const schedulerConfig = parseSchedulerConfig(configPayload, `${source.location}/${configPath}`);
    const checked = new AnnealedLangevinDynamicsScheduler(schedulerConfig); // validates the values and limits
    const levels = manifest.model.num_train_timesteps;
    if (levels !== undefined && levels !== null && levels !== checked.numTrainTimesteps) { // null: not recorded (as Python)
      throw new ExportDirectoryError(`${source.location}/${configPath} has num_train_timesteps=${checked.numTrainTimesteps} but the graphs were exported for ${levels} noise levels`);
    }
    const wanted = graphs ?? (mode === 'both' ? ['sampler', 'score'] : [MODE_GRAPH[mode]]);
    /** @type {Record<string, any>} */
    const sessions = {};
    const shared = new Map(); // external-data file -> verified bytes: the weights file every graph reads is read once
    const byPath = Boolean(ort.env?.versions?.node && typeof source.verifyLocal === 'function');
    for (const name of wanted) {
      const file = graphFile(manifest, /** @type {GraphKey} */ (name));
      const options = { ...sessionOptions };
      if (byPath) {
        sessions[name] = await openByPath(ort, source, manifest, file, options, shared);
        continue;
      }
      let bytes = await readVerified(source, manifest, file);
      const externalData = await readExternalData(source, manifest, file, bytes, shared);
      if (externalData.length) {
        options.externalData = externalData;
        bytes = hoistExternalInitializers(bytes); // from bytes, onnxruntime reads external data of main-graph tensors only
      }
      sessions[name] = await ort.InferenceSession.create(bytes, options);
    }
    const pipeline = new NCSNPipeline({ ort, manifest, schedulerConfig, sessions, mode: mode === 'both' ? 'fused' : mode, location: source.location });
    pipeline.graph = graphs?.find((key) => GRAPH_KEYS.includes(key));
    return pipeline;
  }

  /** A fresh scheduler from the export's scheduler_config.json. */
  makeScheduler() {
    return new AnnealedLangevinDynamicsScheduler(this.schedulerConfig);
  }

  /**
   * Generate samples for the given seeds.
   * @param {GenerateOptions} [options]
   * @returns {Promise<GenerateResult>}
   */
  async generate({ seed = 0, numSamples, numInferenceSteps, samplingEps, mode, graph, onProgress, callbackOnStepEnd,
    callbackOnStepEndTensorInputs } = {}) {
    if (mode !== undefined && !MODES.includes(mode)) throw new RangeError(`\`mode\` must be fused or stepwise, got ${JSON.stringify(mode)}`);
    if (graph !== undefined && !GRAPH_KEYS.includes(graph)) throw new RangeError(`\`graph\` must be one of ${GRAPH_KEYS.join(', ')}, got ${JSON.stringify(graph)}`);
    const tensorInputs = callbackTensorInputs(callbackOnStepEnd, callbackOnStepEndTensorInputs);
    const chosen = graph ?? (mode !== undefined ? MODE_GRAPH[mode] : this.graph ?? MODE_GRAPH[this.mode]);
    if (callbackOnStepEnd && graph === undefined && mode === undefined && FUSED_GRAPHS.includes(chosen)) {
      // a callback means stepwise: the loaded stepwise graph (as Python's mode='auto')
      graph = STEP_GRAPHS.find((key) => this.sessions[key]);
      if (graph === undefined) {
        throw new Error('callbackOnStepEnd needs a stepwise graph (step, gpu_step or score), which this pipeline did not load '
          + "(load it with mode: 'stepwise' or 'both'): the fused graph runs every step in one call and cannot stop for it");
      }
    } else {
      graph = chosen;
    }
    const kind = FUSED_GRAPHS.includes(graph) ? 'fused' : 'stepwise';
    if (mode !== undefined && mode !== kind) throw new RangeError(`mode ${mode} conflicts with graph ${graph} (a ${kind} graph): pass graph alone`);
    if (callbackOnStepEnd && kind === 'fused') {
      throw new RangeError(`callbackOnStepEnd needs a stepwise graph (step, gpu_step, score); ${graph} runs every step in one call`);
    }
    if (!this.sessions[graph]) throw new Error(`graph ${graph} needs ${graph}.onnx, which this pipeline did not load (load it with graphs: ['${graph}'])`);
    if (this.model.final_denoise && (graph === 'step' || graph === 'score') && !this.sessions.score) {
      throw new Error(`this export applies a final denoising step: graph ${graph} also needs score.onnx loaded (or use gpu_step)`);
    }
    const batch = numSamples ?? (Array.isArray(seed) ? seed.length : 1);
    checkCount('numSamples', batch, 1, Math.max(1, Math.floor(MAX_BATCH_BYTES / (4 * this.sampleShape.reduce((a, b) => a * b, 1)))));
    const seeds = seedsForBatch(seed, batch);
    const scheduler = this.makeScheduler();
    if (numInferenceSteps !== undefined || samplingEps !== undefined) {
      scheduler.setTimesteps({ numInferenceSteps: numInferenceSteps ?? scheduler.numTrainTimesteps, samplingEps });
    }
    const [low, high] = this.model.init_range ?? [0, 1];
    const shape = [batch, ...this.sampleShape];
    const x0 = initialSample(seeds, this.sampleShape, low, high);
    const afterStep = callbackOnStepEnd ? stepEndHook(this, callbackOnStepEnd, tensorInputs, scheduler, shape) : null;
    let samples;
    if (kind === 'fused') samples = await this._fused(x0, seeds, scheduler, shape, onProgress, graph);
    else if (graph === 'score') samples = await this._stepwise(x0, seeds, scheduler, shape, onProgress, afterStep);
    else samples = await this._stepGraph(graph, x0, seeds, scheduler, shape, onProgress, afterStep);
    const perSample = samples.length / batch;
    const bad = [];
    for (let b = 0; b < batch; b++) {
      if (!samples.subarray(b * perSample, (b + 1) * perSample).every(Number.isFinite)) bad.push(b);
    }
    if (bad.length) {
      throw new NonFiniteSampleError(`NaN/inf in the final samples [${bad.slice(0, 10)}] (graph ${graph}): the export's init_range, `
        + 'sigmas or score network overflow float32; no samples are written', bad);
    }
    return { samples, shape, seeds, timesteps: scheduler.timesteps, stepSizes: scheduler.stepSize, graph };
  }

  /**
   * Fill in the unknown region of `known` (Song & Ermon 2019, Algorithm 2; runtime/js/inpaint.js): B completions,
   * sample b with seed + b, equal to the Python runtime's `pipe.inpaint` for the same seeds.
   * @param {object} options
   * @param {ArrayLike<number>} options.known the image in the data range: [D] (every sample) or [B * D], C-ordered
   * @param {ArrayLike<number>} options.mask 1 = known, 0 = fill in (only 0 and 1, some of each per sample): [D] or [B * D]
   * @param {SeedLike | SeedLike[]} [options.seed] @param {number} [options.numSamples] B
   * @param {number} [options.numInferenceSteps]
   * @param {'auto' | 'fused' | 'stepwise'} [options.mode] fused = inpaint.onnx (auto: when loaded), stepwise = the
   *   loaded stepwise graph with the projection between steps (onProgress after every level)
   * @param {GenerateOptions['onProgress']} [options.onProgress]
   * @returns {Promise<{samples: Float32Array, shape: number[], seeds: bigint[], mode: string, graph: string}>}
   */
  async inpaint(options) {
    return inpaintWith(this, options);
  }

  /**
   * @param {Float32Array} x0 @param {bigint[]} seeds @param {AnnealedLangevinDynamicsScheduler} scheduler @param {number[]} shape
   * @param {GenerateOptions['onProgress']} onProgress @param {GraphKey} graph sampler or gpu_sampler
   */
  async _fused(x0, seeds, scheduler, shape, onProgress, graph = 'sampler') {
    const { Tensor } = this.ort;
    const feeds = {
      sample: new Tensor('float32', x0, shape),
      seed: new Tensor('int64', BigInt64Array.from(seeds), [seeds.length]),
      timesteps: new Tensor('int64', scheduler.timesteps, [scheduler.timesteps.length]),
      step_sizes: new Tensor('float32', scheduler.stepSize, [scheduler.stepSize.length]),
      num_annealed_steps: new Tensor('int64', BigInt64Array.of(BigInt(scheduler.numAnnealedSteps)), []),
    };
    const output = await this.sessions[graph].run(feeds);
    const samples = checkOutput(output.final_sample, shape, `${graph}.onnx`);
    const last = scheduler.timesteps.length - 1;
    await onProgress?.({ position: last, numLevels: last + 1, level: Number(scheduler.timesteps[last]), sigma: scheduler.sigmas[last], sample: samples });
    return samples;
  }

  /**
   * @param {Float32Array} x @param {bigint[]} seeds @param {AnnealedLangevinDynamicsScheduler} scheduler @param {number[]} shape
   * @param {GenerateOptions['onProgress']} onProgress
   * @param {((position: number, t: number, x: Float32Array) => Promise<Float32Array>) | null} [afterStep] the callback hook
   * @param {((position: number, x: Float32Array) => Promise<Float32Array>) | null} [beforeLevel] runs as each level starts (inpainting)
   */
  async _stepwise(x, seeds, scheduler, shape, onProgress, afterStep = null, beforeLevel = null) {
    const T = scheduler.numAnnealedSteps;
    const numLevels = scheduler.timesteps.length;
    for (let position = 0; position < numLevels; position++) {
      const level = scheduler.timesteps[position];
      if (beforeLevel) x = await beforeLevel(position, x);
      for (let t = 0; t < T; t++) {
        const score = await this.score(x, level, shape);
        const noise = counterNormal(seeds, langevinCounter(position, t, T), this.sampleShape);
        x = scheduler.step(score, level, x, { noise }).prevSample;
        if (afterStep) x = await afterStep(position, t, x);
      }
      await onProgress?.({ position, numLevels, level: Number(level), sigma: scheduler.sigmas[position], sample: x });
    }
    if (this.model.final_denoise) {
      // NCSNv2's x + sigma_last**2 * s(x, level_last) with the TRAINED sigma of the last level (as sampler.onnx)
      const last = scheduler.timesteps[numLevels - 1];
      const sigma = scheduler.trainSigmas[Number(last)];
      x = denoiseUpdate(x, await this.score(x, last, shape), Math.fround(sigma * sigma));
    }
    return x;
  }

  /**
   * One graph call per Langevin step: step.onnx (noise drawn in the graph from seed + counter) or gpu_step.onnx
   * (the JS counter noise fed as `noise`; the next step's noise is drawn while the current step runs).
   * The final denoising step: step_size = 2 * sigma_last**2 and noise = 0 through gpu_step, score.onnx for step.
   * @param {GraphKey} graph @param {Float32Array} x @param {bigint[]} seeds
   * @param {AnnealedLangevinDynamicsScheduler} scheduler @param {number[]} shape
   * @param {GenerateOptions['onProgress']} onProgress
   * @param {((position: number, t: number, x: Float32Array) => Promise<Float32Array>) | null} [afterStep] the callback hook
   * @param {((position: number, x: Float32Array) => Promise<Float32Array>) | null} [beforeLevel] runs as each level starts (inpainting)
   */
  async _stepGraph(graph, x, seeds, scheduler, shape, onProgress, afterStep = null, beforeLevel = null) {
    const { Tensor } = this.ort;
    const session = this.sessions[graph];
    const T = scheduler.numAnnealedSteps;
    const numLevels = scheduler.timesteps.length;
    const seedTensor = new Tensor('int64', BigInt64Array.from(seeds), [seeds.length]);
    const scalar = (type, value) => new Tensor(type, type === 'int64' ? BigInt64Array.of(BigInt(value)) : Float32Array.of(value), []);
    const noiseAt = (counter) => counterNormal(seeds, counter, this.sampleShape);
    let noise = graph === 'gpu_step' ? noiseAt(0) : null;
    const run = async (feeds) => checkOutput((await session.run(feeds)).next_sample, shape, `${graph}.onnx`);
    for (let position = 0; position < numLevels; position++) {
      const level = scheduler.timesteps[position];
      if (beforeLevel) x = await beforeLevel(position, x);
      const levelTensor = scalar('int64', level);
      const stepSize = scalar('float32', scheduler.stepSize[position]);
      for (let t = 0; t < T; t++) {
        const counter = langevinCounter(position, t, T);
        const feeds = { sample: new Tensor('float32', x, shape), timestep: levelTensor, step_size: stepSize };
        if (graph === 'gpu_step') {
          feeds.noise = new Tensor('float32', noise, shape);
          const pending = run(feeds);
          noise = noiseAt(counter + 1); // langevinCounter grows by one per step, across levels too
          x = await pending;
        } else {
          Object.assign(feeds, { seed: seedTensor, counter: scalar('int64', counter) });
          x = await run(feeds);
        }
        if (afterStep) x = await afterStep(position, t, x);
      }
      await onProgress?.({ position, numLevels, level: Number(level), sigma: scheduler.sigmas[position], sample: x });
    }
    if (this.model.final_denoise) {
      const last = scheduler.timesteps[numLevels - 1];
      const sigma = scheduler.trainSigmas[Number(last)];
      if (graph === 'gpu_step') {
        x = await run({
          sample: new Tensor('float32', x, shape), noise: new Tensor('float32', new Float32Array(x.length), shape),
          timestep: scalar('int64', last), step_size: scalar('float32', Math.fround(2 * sigma * sigma)),
        });
      } else {
        x = denoiseUpdate(x, await this.score(x, last, shape), Math.fround(sigma * sigma));
      }
    }
    return x;
  }

  /**
   * One call of score.onnx: s(x, level) for every sample at one level.
   * @param {Float32Array} x [B * D]
   * @param {bigint} level
   * @param {number[]} shape [B, ...sampleShape]
   * @returns {Promise<Float32Array>}
   */
  async score(x, level, shape) {
    const { Tensor } = this.ort;
    const output = await this.sessions.score.run({
      sample: new Tensor('float32', x, shape),
      timestep: new Tensor('int64', new BigInt64Array(shape[0]).fill(BigInt(level)), [shape[0]]),
    });
    return checkOutput(output.score, shape, 'score.onnx');
  }

  /** Release the onnxruntime sessions. */
  async release() {
    for (const session of Object.values(this.sessions)) await session.release?.();
  }
}

/**
 * The tensor names a callback receives: `names` checked against CALLBACK_TENSOR_INPUTS (default: all of them).
 * @param {StepEndCallback | undefined} callback
 * @param {string[] | undefined} names
 * @returns {string[]}
 */
export function callbackTensorInputs(callback, names) {
  if (callback !== undefined && callback !== null && typeof callback !== 'function') {
    throw new TypeError(`\`callbackOnStepEnd\` must be a function (pipe, stepIndex, timestep, callbackKwargs), got ${typeof callback}`);
  }
  if (names === undefined || names === null) return [...CALLBACK_TENSOR_INPUTS];
  if (!Array.isArray(names) || names.some((name) => typeof name !== 'string')) {
    throw new TypeError(`\`callbackOnStepEndTensorInputs\` must be a list of names from ${JSON.stringify(CALLBACK_TENSOR_INPUTS)}, got ${JSON.stringify(names)}`);
  }
  const unknown = names.filter((name) => !CALLBACK_TENSOR_INPUTS.includes(name));
  if (unknown.length) {
    throw new RangeError(`\`callbackOnStepEndTensorInputs\` has to be in ${JSON.stringify(CALLBACK_TENSOR_INPUTS)}, but found ${JSON.stringify(unknown)}`);
  }
  return [...new Set(names)];
}

/**
 * The after-step hook that calls `callback` and returns the state for the next step (a returned `samples`, checked).
 * @param {NCSNPipeline} pipe @param {StepEndCallback} callback @param {string[]} tensorInputs
 * @param {AnnealedLangevinDynamicsScheduler} scheduler @param {number[]} shape
 * @returns {(position: number, t: number, x: Float32Array) => Promise<Float32Array>}
 */
function stepEndHook(pipe, callback, tensorInputs, scheduler, shape) {
  const T = scheduler.numAnnealedSteps;
  return async (position, t, x) => {
    /** @type {Record<string, any>} */
    const kwargs = {};
    for (const name of tensorInputs) kwargs[name] = x;
    Object.assign(kwargs, { shape: shape.slice(), position, annealedStep: t, sigma: scheduler.sigmas[position], globalStep: position * T + t });
    const result = await callback(pipe, t, Number(scheduler.timesteps[position]), /** @type {StepEndKwargs} */ (kwargs));
    if (result === undefined || result === null) return x;
    if (typeof result !== 'object' || Array.isArray(result) || ArrayBuffer.isView(result)) {
      throw new TypeError(`callbackOnStepEnd must return an object (e.g. the callbackKwargs it got), null or nothing; got ${Array.isArray(result) ? 'an array' : typeof result}`);
    }
    if (result.samples === undefined || result.samples === null) return x;
    return checkReturnedSamples(result.samples, x.length, shape);
  };
}

/**
 * A callback's replacement state: B * D finite numbers, as a Float32Array.
 * @param {any} value @param {number} length B * D @param {number[]} shape [B, ...sampleShape]
 * @returns {Float32Array}
 */
function checkReturnedSamples(value, length, shape) {
  const where = 'callbackOnStepEnd returned `samples`';
  const floating = value instanceof Float32Array || value instanceof Float64Array || Array.isArray(value);
  if (!floating) throw new TypeError(`${where} as ${value?.constructor?.name ?? typeof value}; it must be a Float32Array (or Float64Array / array of numbers)`);
  if (value.length !== length) throw new RangeError(`${where} with ${value.length} values; the state [${shape}] has ${length}`);
  const samples = value instanceof Float32Array ? value : Float32Array.from(value, Number);
  const perSample = length / shape[0];
  for (let i = 0; i < samples.length; i++) {
    if (!Number.isFinite(samples[i])) throw new RangeError(`${where} with NaN/inf (or a value beyond float32) in sample ${Math.floor(i / perSample)}`);
  }
  return samples;
}

/**
 * A graph output must be float32 shaped like the manifest promises.
 * @param {any} tensor onnxruntime Tensor
 * @param {number[]} shape expected dims
 * @param {string} graph for the message
 * @returns {Float32Array}
 */
function checkOutput(tensor, shape, graph) {
  const dims = Array.from(tensor?.dims ?? [], Number);
  if (tensor?.type !== 'float32' || dims.length !== shape.length || dims.some((d, i) => d !== shape[i])) {
    throw new ExportDirectoryError(`${graph} returned ${tensor?.type} [${dims}]; the manifest promises float32 [${shape}]`);
  }
  return /** @type {Float32Array} */ (tensor.data);
}

/**
 * A FileSource over HTTP(S): files of the export directory at `baseUrl` (browser or Node's fetch).
 * @param {string} baseUrl e.g. "/export/" or "http://127.0.0.1:8000/export"
 * @returns {FileSource}
 */
export function fetchSource(baseUrl) {
  const base = baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`;
  return {
    location: base.replace(/\/$/, ''),
    async readBytes(relative) {
      checkRelativePath(relative, 'file');
      const response = await fetch(base + relative);
      if (!response.ok) throw new Error(`GET ${base + relative}: HTTP ${response.status}`);
      return new Uint8Array(await response.arrayBuffer());
    },
  };
}

/**
 * onnxruntime-node on a directory: the graph and every external-data file it names are verified on disk (listed,
 * confined, regular, size + streamed sha256: nothing held in memory), then onnxruntime opens the graph by path and
 * reads the external data itself (the samplers' weights stay in their Loop body, where onnxruntime's NCHWc pass
 * needs them: 1.5x faster on CPU than hoisted). Afterwards each file must still be the one hashed (device, inode,
 * size, ctime), so a file replaced or written between the check and onnxruntime's read is refused.
 * @param {any} ort @param {FileSource} source @param {any} manifest @param {string} file @param {object} options
 * @param {Map<string, any>} shared external-data files verified so far (relative path -> {path, stamp})
 * @returns {Promise<any>} the session
 */
async function openByPath(ort, source, manifest, file, options, shared) {
  const graph = await verifiedOnDisk(source, manifest, file, true);
  const folder = file.includes('/') ? file.slice(0, file.lastIndexOf('/') + 1) : '';
  const used = [[file, graph]];
  for (const location of graph.locations) {
    checkRelativePath(location, `external-data location of ${file}`);
    const relative = folder + location;
    if (!Object.hasOwn(manifest.files, relative)) {
      throw new ExportDirectoryError(`${file} reads external data from ${JSON.stringify(relative)}, which manifest.json does not list`);
    }
    if (!shared.has(relative)) shared.set(relative, await verifiedOnDisk(source, manifest, relative, false));
    used.push([relative, shared.get(relative)]);
  }
  const session = await ort.InferenceSession.create(graph.path, options);
  try {
    for (const [relative, checked] of used) await source.unchanged(relative, checked.path, checked.stamp);
  } catch (error) {
    try {
      await session.release?.();
    } catch {
      // the refusal below is the error to report
    }
    throw error;
  }
  return session;
}

async function verifiedOnDisk(source, manifest, relative, locations) {
  const entry = listedEntry(manifest, relative);
  try {
    return await source.verifyLocal(relative, entry, { locations });
  } catch (error) {
    if (error instanceof ExportDirectoryError) throw error;
    throw new ExportDirectoryError(`${source.location}/${relative} is listed in manifest.json but missing (${error.message})`);
  }
}

/**
 * The external-data files graph `file` names (e.g. the shared weights.onnx.data), each listed in the manifest and
 * sha256-checked, as onnxruntime's `externalData` session option ({path: the location the graph names, data}).
 * A location that is not listed is refused, so onnxruntime never reads an unverified file.
 * @param {any} source
 * @param {any} manifest
 * @param {string} file the graph's relative path
 * @param {Uint8Array} bytes the graph's bytes
 * @param {Map<string, Uint8Array>} shared files read so far
 * @returns {Promise<{path: string, data: Uint8Array}[]>}
 */
async function readExternalData(source, manifest, file, bytes, shared) {
  let locations;
  try {
    locations = externalDataLocations(bytes);
  } catch (error) {
    if (error instanceof ExternalDataError) throw new ExportDirectoryError(`${source.location}/${file} is not a readable ONNX model: ${error.message}`);
    throw error;
  }
  const folder = file.includes('/') ? file.slice(0, file.lastIndexOf('/') + 1) : '';
  const out = [];
  for (const location of locations) {
    checkRelativePath(location, `external-data location of ${file}`);
    const relative = folder + location;
    if (!Object.hasOwn(manifest.files, relative)) {
      throw new ExportDirectoryError(`${file} reads external data from ${JSON.stringify(relative)}, which manifest.json does not list`);
    }
    if (!shared.has(relative)) shared.set(relative, await readVerified(source, manifest, relative));
    out.push({ path: location, data: shared.get(relative) });
  }
  return out;
}
