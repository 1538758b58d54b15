// Test probe: reads a JSON list of requests on stdin, runs runtime/js functions, prints a JSON list of results.
// Seeds/counters arrive as decimal strings (or tagged {"number": n} / {"bigint": "..."}), arrays come back as plain lists.
import * as ncsn from '../../runtime/js/index.js';

/** @param {any} value */
function seedArg(value) {
  if (value && typeof value === 'object' && 'number' in value) return value.number;
  if (value && typeof value === 'object' && 'bigint' in value) return BigInt(value.bigint);
  return value;
}

const handlers = {
  words: (r) => ncsn.philoxWords(r.seeds.map(seedArg), seedArg(r.counter), r.num_elements, r.stream),
  normal: (r) => ncsn.counterNormal(r.seeds.map(seedArg), seedArg(r.counter), r.shape, r.stream),
  uniform: (r) => ncsn.counterUniform(r.seeds.map(seedArg), seedArg(r.counter), r.shape, r.stream),
  initial: (r) => ncsn.initialSample(r.seeds.map(seedArg), r.shape, r.low, r.high),
  seeds_for_batch: (r) => ncsn.seedsForBatch(Array.isArray(r.seed) ? r.seed.map(seedArg) : seedArg(r.seed), r.batch_size).map(String),
  schedule: (r) => {
    const scheduler = ncsn.AnnealedLangevinDynamicsScheduler.fromConfig(r.config);
    if (r.set_timesteps) scheduler.setTimesteps(r.set_timesteps);
    if (r.set_sigmas) scheduler.setSigmas(r.set_sigmas.numInferenceSteps, r.set_sigmas);
    return { timesteps: Array.from(scheduler.timesteps, Number), sigmas: Array.from(scheduler.sigmas), step_size: Array.from(scheduler.stepSize), train_sigmas: Array.from(scheduler.trainSigmas) };
  },
  step: (r) => {
    const scheduler = ncsn.AnnealedLangevinDynamicsScheduler.fromConfig(r.config);
    scheduler.setTimesteps({ numInferenceSteps: r.num_inference_steps });
    const f32 = (list) => Float32Array.from(list);
    return scheduler.step(f32(r.score), r.timestep, f32(r.sample), { noise: f32(r.noise) }).prevSample;
  },
  add_noise: (r) => {
    const scheduler = ncsn.AnnealedLangevinDynamicsScheduler.fromConfig(r.config);
    return scheduler.addNoise(Float32Array.from(r.sample), Float32Array.from(r.noise), r.timesteps);
  },
};

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const results = JSON.parse(Buffer.concat(chunks).toString('utf8')).map((request) => {
  try {
    const value = handlers[request.op](request);
    return { ok: true, value: ArrayBuffer.isView(value) ? Array.from(value, (v) => (typeof v === 'bigint' ? String(v) : v)) : value };
  } catch (error) {
    return { ok: false, error: `${error.name}: ${error.message}` };
  }
});
process.stdout.write(JSON.stringify(results));
