// Inpainting (Song & Ermon 2019, Algorithm 2): the JavaScript side of runtime/ncsn_runtime/inpaint.py.
//
// At schedule position i the known region is set to y_i = known + sigma_i * z_i (z_i: counter noise on
// INPAINT_STREAM, counter i) when the level starts and after every Langevin step; the result holds `known` there:
//   fused:    one call of inpaint.onnx (the sampler's Loop conditioned on known + mask; exported by default);
//   stepwise: the pipeline's stepwise graphs (score / step / gpu_step) with the projection between steps
//             (onProgress after every level: a page can show the digit being filled in).
// Both give the Python runtime's completions for the same seeds (<= 1e-4). The mask is 1 = known, 0 = fill in:
// only 0 and 1, and every sample some of each (checkMask; the same rules and messages as Python).

import { INPAINT_STREAM, counterNormal, initialSample, seedsForBatch } from './noise.js';
import { checkCount } from './schedule.js';

export const INPAINT_MODES = ['auto', 'fused', 'stepwise'];

/**
 * A mask (as given, any length) must hold only 0 and 1 (as ncsn_runtime.inpaint.check_binary).
 * @param {ArrayLike<number>} mask
 */
export function checkBinary(mask) {
  let other = 0;
  let low = Infinity;
  let high = -Infinity;
  let min = Infinity;
  let max = -Infinity;
  for (const value of mask) {
    if (!Number.isFinite(value)) throw new RangeError('`mask` holds NaN or inf; it must hold only 0 and 1 (1 = known)');
    min = Math.min(min, value);
    max = Math.max(max, value);
    if (value !== 0 && value !== 1) {
      other++;
      low = Math.min(low, value);
      high = Math.max(high, value);
    }
  }
  if (other) {
    throw new RangeError(`\`mask\` must hold only 0 and 1 (1 = known, 0 = fill in), got ${other} other values in [${low}, ${high}] `
      + `(mask values span [${min}, ${max}])`);
  }
}

/**
 * A mask must hold only 0 and 1 and each sample some of both (as ncsn_runtime.inpaint.check_mask).
 * @param {Float32Array} mask [B * D] @param {number} batch B
 */
export function checkMask(mask, batch) {
  checkBinary(mask);
  const size = mask.length / batch;
  for (let b = 0; b < batch; b++) {
    let known = 0;
    for (let i = b * size; i < (b + 1) * size; i++) known += mask[i];
    if (known === size) throw new RangeError(`\`mask\` of sample ${b} is all 1 (everything known): nothing to fill in`);
    if (known === 0) throw new RangeError(`\`mask\` of sample ${b} is all 0 (nothing known): that is plain sampling, call generate`);
  }
}

/**
 * `values` (one sample [D] or a batch [B * D]) as a Float32Array [B * D]; `what` names it in errors.
 * @param {ArrayLike<number>} values @param {number} size D @param {number} batch B @param {string} what
 * @param {number[]} sampleShape
 */
function broadcast(values, size, batch, what, sampleShape) {
  if (values === null || values === undefined || typeof values.length !== 'number') {
    throw new TypeError(`\`${what}\` must be a Float32Array (or array of numbers) of ${size} values [${sampleShape}] or ${batch * size} [${batch}, ${sampleShape}]`);
  }
  if (values.length !== size && values.length !== batch * size) {
    throw new RangeError(`\`${what}\` has ${values.length} values; the samples need ${size} ([${sampleShape}], one for every sample) `
      + `or ${batch * size} ([${batch}, ${sampleShape}])`);
  }
  const out = new Float32Array(batch * size);
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < size; i++) out[b * size + i] = Number(values[values.length === size ? i : b * size + i]);
  }
  return out;
}

/**
 * Check and broadcast the known image and the mask to float32 [B * D] (as ncsn_runtime.inpaint.prepare_image_and_mask).
 * @param {ArrayLike<number>} known @param {ArrayLike<number>} mask @param {number[]} sampleShape @param {number} batch
 * @returns {{known: Float32Array, mask: Float32Array}}
 */
export function prepareKnownAndMask(known, mask, sampleShape, batch) {
  const size = sampleShape.reduce((a, b) => a * b, 1);
  const image = broadcast(known, size, batch, 'known', sampleShape);
  if (!image.every(Number.isFinite)) throw new RangeError('`known` holds NaN or inf (or a value beyond float32)');
  const binary = broadcast(mask, size, batch, 'mask', sampleShape);
  checkBinary(Float32Array.from(mask, Number)); // counts of the mask as given, not of its broadcast
  checkMask(binary, batch);
  return { known: image, mask: binary };
}

/**
 * The projection x -> x * (1 - mask) + (known + sigma_i * z_i) * mask in float32, the order of the Python runtime.
 * @param {Float32Array} known @param {Float32Array} mask @param {bigint[]} seeds @param {Float32Array} sigmas
 * @param {number[]} sampleShape
 */
export function knownRegionProjection(known, mask, seeds, sigmas, sampleShape) {
  const keep = Float32Array.from(mask, (m) => 1 - m);
  let position = -1;
  let knownPart = new Float32Array(0);
  return (/** @type {number} */ at, /** @type {Float32Array} */ x) => {
    if (at !== position) {
      const z = counterNormal(seeds, at, sampleShape, INPAINT_STREAM);
      const sigma = sigmas[at];
      knownPart = Float32Array.from(z, (value, i) => Math.fround(Math.fround(known[i] + Math.fround(sigma * value)) * mask[i]));
      position = at;
    }
    return Float32Array.from(x, (value, i) => Math.fround(Math.fround(value * keep[i]) + knownPart[i]));
  };
}

/**
 * Inpaint with `pipe` (an NCSNPipeline): see NCSNPipeline.inpaint.
 * @param {import('./pipeline.js').NCSNPipeline} pipe
 * @param {object} options
 * @returns {Promise<{samples: Float32Array, shape: number[], seeds: bigint[], mode: string, graph: string}>}
 */
export async function inpaintWith(pipe, { known, mask, seed = 0, numSamples, numInferenceSteps, mode = 'auto', onProgress } = {}) {
  if (!INPAINT_MODES.includes(mode)) throw new RangeError(`\`mode\` must be one of ${INPAINT_MODES.join(', ')}, got ${JSON.stringify(mode)}`);
  const size = pipe.sampleShape.reduce((a, b) => a * b, 1);
  const fromKnown = known && known.length > size && known.length % size === 0 ? known.length / size : 1;
  const batch = numSamples ?? (Array.isArray(seed) ? seed.length : fromKnown);
  checkCount('numSamples', batch, 1, Math.max(1, Math.floor(2 * 2 ** 30 / (4 * size))));
  const prepared = prepareKnownAndMask(known, mask, pipe.sampleShape, batch);
  const fusedLoaded = Boolean(pipe.sessions.inpaint);
  if (mode === 'fused' && !fusedLoaded) {
    throw new Error("mode 'fused' needs inpaint.onnx, which this pipeline did not load (load it with graphs: ['inpaint'], "
      + "or use mode 'stepwise')");
  }
  const chosen = mode === 'auto' ? (fusedLoaded ? 'fused' : 'stepwise') : mode;
  const seeds = seedsForBatch(seed, batch);
  const scheduler = pipe.makeScheduler();
  if (numInferenceSteps !== undefined) scheduler.setTimesteps({ numInferenceSteps });
  const [low, high] = pipe.model.init_range ?? [0, 1];
  const shape = [batch, ...pipe.sampleShape];
  const x0 = initialSample(seeds, pipe.sampleShape, low, high);
  let samples;
  let graph;
  if (chosen === 'fused') {
    graph = 'inpaint';
    samples = await fusedInpaint(pipe, x0, seeds, scheduler, shape, prepared, onProgress);
  } else {
    graph = ['step', 'gpu_step', 'score'].find((key) => pipe.sessions[key]);
    if (graph === undefined) {
      throw new Error('stepwise inpainting needs a stepwise graph (step, gpu_step or score), which this pipeline did not load');
    }
    if (pipe.model.final_denoise && graph === 'step' && !pipe.sessions.score) {
      throw new Error('this export applies a final denoising step: graph step also needs score.onnx loaded (or use gpu_step)');
    }
    const project = knownRegionProjection(prepared.known, prepared.mask, seeds, scheduler.sigmas, pipe.sampleShape);
    const beforeLevel = async (/** @type {number} */ position, /** @type {Float32Array} */ x) => project(position, x);
    const afterStep = async (/** @type {number} */ position, /** @type {number} */ _t, /** @type {Float32Array} */ x) => project(position, x);
    samples = graph === 'score'
      ? await pipe._stepwise(x0, seeds, scheduler, shape, onProgress, afterStep, beforeLevel)
      : await pipe._stepGraph(graph, x0, seeds, scheduler, shape, onProgress, afterStep, beforeLevel);
    samples = Float32Array.from(samples, (value, i) => Math.fround(Math.fround(value * Math.fround(1 - prepared.mask[i]))
      + Math.fround(prepared.known[i] * prepared.mask[i])));
  }
  if (!samples.every(Number.isFinite)) throw new RangeError(`NaN/inf in the inpainted samples (graph ${graph})`);
  return { samples, shape, seeds, mode: chosen, graph, timesteps: scheduler.timesteps };
}

/**
 * One call of inpaint.onnx.
 * @param {any} pipe @param {Float32Array} x0 @param {bigint[]} seeds @param {any} scheduler @param {number[]} shape
 * @param {{known: Float32Array, mask: Float32Array}} prepared @param {Function | undefined} onProgress
 */
async function fusedInpaint(pipe, x0, seeds, scheduler, shape, prepared, onProgress) {
  const { Tensor } = pipe.ort;
  const output = await pipe.sessions.inpaint.run({
    sample: new Tensor('float32', x0, shape),
    seed: new Tensor('int64', BigInt64Array.from(seeds), [seeds.length]),
    timesteps: new Tensor('int64', scheduler.timesteps, [scheduler.timesteps.length]),
    step_sizes: new Tensor('float32', scheduler.stepSize, [scheduler.stepSize.length]),
    num_annealed_steps: new Tensor('int64', BigInt64Array.of(BigInt(scheduler.numAnnealedSteps)), []),
    sigmas: new Tensor('float32', scheduler.sigmas, [scheduler.sigmas.length]),
    known: new Tensor('float32', prepared.known, shape),
    mask: new Tensor('float32', prepared.mask, shape),
  });
  const tensor = output.final_sample;
  const dims = Array.from(tensor?.dims ?? [], Number);
  if (tensor?.type !== 'float32' || dims.length !== shape.length || dims.some((d, i) => d !== shape[i])) {
    throw new Error(`inpaint.onnx returned ${tensor?.type} [${dims}]; the manifest promises float32 [${shape}]`);
  }
  const last = scheduler.timesteps.length - 1;
  await onProgress?.({ position: last, numLevels: last + 1, level: Number(scheduler.timesteps[last]), sigma: scheduler.sigmas[last], sample: tensor.data });
  return /** @type {Float32Array} */ (tensor.data);
}
