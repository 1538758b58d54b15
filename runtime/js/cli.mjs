#!/usr/bin/env node
// node runtime/js/cli.mjs EXPORT_DIR --seed S --num-samples N --output FILE [--mode fused|stepwise] [...]
// Generates samples from an ncsn-export directory with onnxruntime-node; same seeds -> same samples as `ncsn-sample`.

import path from 'node:path';
import { parseArgs } from 'node:util';

import { makeGrid } from './grid.js';
import { MAX_SEED, toUint64 } from './noise.js';
import { decodeNpy } from './npy.js';
import { MAX_THREADS, checkOutputPath, encodePng, loadPipeline, readRegularFile, saveNpy, writeFileAtomic } from './node.js';
import { GRAPH_KEYS } from './pipeline.js';

const USAGE = `usage: node runtime/js/cli.mjs EXPORT_DIR --output FILE [options]

Generate samples from an ncsn-export directory with onnxruntime-node (CPU).

options:
  -o, --output FILE      .npy (raw float32 samples [N, ...sample_shape]) or .png (image grid; image models only)
  -s, --seed S           decimal integer in [0, 2**63 - N]; sample b uses seed S + b (default 0)
  -n, --num-samples N    batch size (default 16)
  --mode M               fused (sampler.onnx, default) or stepwise (score.onnx + JS scheduler); shorthand for --graph
  --graph G              sampler | gpu_sampler (fused loop) | step | gpu_step (one graph call per step; gpu_step takes
                         the JS counter noise as an input) | score; same samples for the same seeds. Overrides --mode;
                         an explicit --mode must agree (fused: sampler, gpu_sampler; stepwise: step, gpu_step, score)
  --steps n              noise levels to anneal through (default: all trained levels)
  --sampling-eps E       Langevin step-size scale (default: scheduler_config.json's)
  --threads K            onnxruntime intra-op threads (default: onnxruntime's choice)
  --inpaint KNOWN.npy    inpaint this float32 image ([...sample_shape] or [H, W], in the data range) where --mask is 0:
                         N completions; fused inpaint.onnx (default, --mode fused) or stepwise (--mode stepwise)
  --mask MASK.npy        with --inpaint: float32, 1 = known, 0 = fill in, nothing else; same shape as KNOWN
  --json                 print a JSON summary (shape, seconds, mode) on stdout
  -h, --help             show this help`;

class UsageError extends Error {}

const MAX_NPY_BYTES = 1 << 30; // --inpaint / --mask hold one sample

/** @param {string} name @param {string | undefined} value @param {number} low @param {number} [high] */
function parseInteger(name, value, low, high = Number.MAX_SAFE_INTEGER) {
  if (value === undefined) return undefined;
  if (!/^[0-9]+$/.test(value) || Number(value) < low || Number(value) > high || !Number.isSafeInteger(Number(value))) {
    const range = high === Number.MAX_SAFE_INTEGER ? `>= ${low}` : `in [${low}, ${high}]`;
    throw new UsageError(`--${name} must be an integer ${range}, got ${JSON.stringify(value)}`);
  }
  return Number(value);
}

function parse(argv) {
  let parsed;
  try {
    parsed = parseArgs(ARGS(argv));
  } catch (error) {
    throw new UsageError(error.message.replace(/\s*\n\s*/g, ' '));
  }
  return check(parsed);
}

/** node:util parseArgs configuration of the command line. */
const ARGS = (argv) => ({
  args: argv,
  allowPositionals: true,
  options: {
    output: { type: 'string', short: 'o' },
    seed: { type: 'string', short: 's', default: '0' },
    'num-samples': { type: 'string', short: 'n', default: '16' },
    mode: { type: 'string' },
    graph: { type: 'string' },
    steps: { type: 'string' },
    'sampling-eps': { type: 'string' },
    threads: { type: 'string' },
    json: { type: 'boolean', default: false },
    inpaint: { type: 'string' },
    mask: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});

function check({ values, positionals }) {
  if (values.help) return { help: true };
  if (positionals.length !== 1) throw new UsageError(`expected exactly one EXPORT_DIR, got ${positionals.length}`);
  if (!values.output) throw new UsageError('--output FILE is required (.npy or .png)');
  const extension = path.extname(values.output).toLowerCase();
  if (extension !== '.npy' && extension !== '.png') throw new UsageError(`--output must end in .npy or .png, got ${JSON.stringify(values.output)}`);
  if (values.mode !== undefined && !['fused', 'stepwise'].includes(values.mode)) {
    throw new UsageError(`--mode must be fused or stepwise, got ${JSON.stringify(values.mode)}`);
  }
  if (values.graph !== undefined && !GRAPH_KEYS.includes(values.graph)) {
    throw new UsageError(`--graph must be one of ${GRAPH_KEYS.join(', ')}, got ${JSON.stringify(values.graph)}`);
  }
  const fusedGraph = ['sampler', 'gpu_sampler'].includes(values.graph);
  if (values.graph !== undefined && values.mode !== undefined && (values.mode === 'fused') !== fusedGraph) {
    throw new UsageError(`--mode ${values.mode} conflicts with --graph ${values.graph} (a ${fusedGraph ? 'fused' : 'stepwise'} graph): pass --graph alone`);
  }
  if ((values.inpaint === undefined) !== (values.mask === undefined)) throw new UsageError('--inpaint KNOWN.npy and --mask MASK.npy go together: give both');
  if (values.inpaint !== undefined && values.graph !== undefined) throw new UsageError('--graph picks a sampling graph; --inpaint runs inpaint.onnx (--mode fused) or the stepwise graph (--mode stepwise): drop --graph');
  for (const name of ['inpaint', 'mask']) {
    if (values[name] !== undefined && path.extname(values[name]).toLowerCase() !== '.npy') throw new UsageError(`--${name} must be a .npy file (float32), got ${JSON.stringify(values[name])}`);
  }
  const graph = values.graph ?? (values.mode === 'stepwise' ? 'score' : 'sampler');
  const numSamples = parseInteger('num-samples', values['num-samples'], 1);
  let seed;
  try {
    seed = toUint64('seed', values.seed, MAX_SEED - BigInt(numSamples - 1)); // sample b uses S + b <= 2**63 - 1 (as ncsn-sample)
  } catch (error) {
    throw new UsageError(`--seed: ${error.message}`);
  }
  let samplingEps;
  if (values['sampling-eps'] !== undefined) {
    samplingEps = Number(values['sampling-eps']);
    if (!Number.isFinite(samplingEps) || samplingEps <= 0) throw new UsageError(`--sampling-eps must be a number > 0, got ${JSON.stringify(values['sampling-eps'])}`);
  }
  return {
    exportDir: positionals[0],
    output: values.output,
    extension,
    seed,
    numSamples,
    mode: fusedGraph || (values.graph === undefined && values.mode !== 'stepwise') ? 'fused' : 'stepwise',
    graph,
    numInferenceSteps: parseInteger('steps', values.steps, 1),
    samplingEps,
    threads: parseInteger('threads', values.threads, 1, MAX_THREADS),
    json: values.json,
    inpaint: values.inpaint,
    mask: values.mask,
  };
}

/**
 * A float32 .npy of one sample ([...sampleShape], or [H, W] for one channel): its values, C-ordered.
 * @param {string} file @param {string} flag @param {number[]} sampleShape
 */
async function readNpyArray(file, flag, sampleShape) {
  let array;
  try {
    array = decodeNpy(new Uint8Array(await readRegularFile(file, file, MAX_NPY_BYTES)));
  } catch (error) {
    throw new UsageError(`${flag} ${file}: ${error.message}`);
  }
  const size = sampleShape.reduce((a, b) => a * b, 1);
  const fits = array.shape.join(',') === sampleShape.join(',')
    || (sampleShape.length === 3 && sampleShape[0] === 1 && array.shape.join(',') === sampleShape.slice(1).join(','));
  if (!fits || array.data.length !== size) throw new UsageError(`${flag} ${file} has shape [${array.shape}]; this export's samples are [${sampleShape}]`);
  if (!(array.data instanceof Float32Array)) throw new UsageError(`${flag} ${file} must hold float32 values (save it with numpy as float32)`);
  return array.data;
}

async function main(argv) {
  let args;
  try {
    args = parse(argv);
  } catch (error) {
    process.stderr.write(`error: ${error.message} (see --help)\n`); // one line, as ncsn-sample
    return 2;
  }
  if (args.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  try {
    await checkOutputPath(args.output, '--output'); // before any work, as ncsn-sample
  } catch (error) {
    process.stderr.write(`error: ${error.message}\n`);
    return 2;
  }
  const sessionOptions = args.threads ? { intraOpNumThreads: args.threads } : {};
  const loadStart = performance.now();
  // the step graph needs score.onnx for the final denoising step, if the export applies one
  let graphs = args.graph === 'step' ? ['step', 'score'] : [args.graph];
  if (args.inpaint !== undefined) graphs = args.mode === 'fused' ? ['inpaint'] : ['score'];
  const pipeline = await loadPipeline(args.exportDir, { graphs, sessionOptions });
  if (args.extension === '.png' && !pipeline.model.is_image) {
    throw new UsageError(`model ${pipeline.model.name} has non-image samples of shape [${pipeline.sampleShape}]: write .npy instead of .png`);
  }
  const loadSeconds = (performance.now() - loadStart) / 1000;
  const start = performance.now();
  const result = args.inpaint === undefined
    ? await pipeline.generate({
      seed: args.seed,
      numSamples: args.numSamples,
      numInferenceSteps: args.numInferenceSteps,
      samplingEps: args.samplingEps,
    })
    : await pipeline.inpaint({
      known: await readNpyArray(args.inpaint, '--inpaint', pipeline.sampleShape),
      mask: await readNpyArray(args.mask, '--mask', pipeline.sampleShape),
      seed: args.seed,
      numSamples: args.numSamples,
      numInferenceSteps: args.numInferenceSteps,
      mode: args.mode,
    }).catch((error) => { throw error instanceof RangeError || error instanceof TypeError ? new UsageError(error.message) : error; });
  const seconds = (performance.now() - start) / 1000;
  if (args.extension === '.npy') {
    await saveNpy(args.output, result.samples, result.shape);
  } else {
    await writeFileAtomic(args.output, encodePng(makeGrid(result.samples, result.shape, pipeline.model.data_range ?? [0, 1])));
  }
  await pipeline.release();
  const summary = { output: args.output, shape: result.shape, mode: result.mode ?? args.mode, graph: result.graph, seconds, load_seconds: loadSeconds, levels: result.timesteps.length };
  if (args.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
  else process.stdout.write(`wrote ${args.output}: [${result.shape}] float32, ${result.mode ?? args.mode} (${result.graph})${args.inpaint ? `, inpainting ${args.inpaint}` : ''}, ${result.timesteps.length} levels, ${seconds.toFixed(3)} s\n`);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => {
    process.stderr.write(`error: ${error.message}\n`);
    process.exit(error instanceof UsageError ? 2 : 1);
  },
);
