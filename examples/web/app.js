// Browser example: load an ncsn-export directory served from the same origin and generate with onnxruntime-web.
// Query parameters: ?export=/export/ (export URL), &ep=wasm|webgpu (backend), &seed=S&count=N, &graph=score|step|gpu_step|
// sampler|gpu_sampler (or the shorthand &mode=stepwise|fused), &steps=n&threads=K&autorun=1.
// ep=webgpu runs gpu_step.onnx (no Loop, no bitwise ops, no float64) on onnxruntime-web's WebGPU EP, with the JS
// counter noise as its input; ep=wasm can run every graph.
// Stepwise graphs (score, step, gpu_step) show the digits forming: the grid is redrawn after every noise level and the
// trajectory strip below it gains one column per level (rows = the first TRAJECTORY_ROWS samples; its last column is the
// final samples, after the final denoising step). Fused graphs run every level in one call: the strip shows the final
// samples only.
// State for automation: window.__ncsn = {state: 'loading'|'ready'|'running'|'done'|'error', ep, adapter?, result?, error?,
// levels, trajectory: {rows, columns, filled: [positions], width, height, pixels (the strip, 8-bit, unscaled)}}.

import { NCSNPipeline, fetchSource, gridToRGBA, makeGrid } from '/runtime/js/index.js';

const params = new URLSearchParams(location.search);
const ep = params.get('ep') === 'webgpu' ? 'webgpu' : 'wasm';
const ort = await import(ep === 'webgpu' ? '/ort/ort.webgpu.min.mjs' : '/ort/ort.wasm.min.mjs');
const GRAPHS_FOR_EP = { wasm: ['score', 'sampler', 'step', 'gpu_step', 'gpu_sampler'], webgpu: ['gpu_step'] };
const MODE_GRAPH = { stepwise: 'score', fused: 'sampler' };
const form = /** @type {HTMLFormElement} */ (document.getElementById('controls'));
const button = /** @type {HTMLButtonElement} */ (document.getElementById('generate'));
const progress = /** @type {HTMLProgressElement} */ (document.getElementById('progress'));
const status = /** @type {HTMLElement} */ (document.getElementById('status'));
const canvas = /** @type {HTMLCanvasElement} */ (document.getElementById('canvas'));
const modelInfo = /** @type {HTMLElement} */ (document.getElementById('model'));
const strip = /** @type {HTMLCanvasElement} */ (document.getElementById('trajectory'));
const stripNote = /** @type {HTMLElement} */ (document.getElementById('trajectory-note'));
const TRAJECTORY_ROWS = 8; // samples shown in the strip
const MIN_IMAGE_PX = 64; // each image at least this wide on screen (as ncsn-sample's PNGs), when the page has room
const MAX_CANVAS_PX = 800;
const GAP_SHADE = 128; // grey gaps between images, as ncsn-sample's PNGs
const state = (window.__ncsn = { state: 'loading', ep });

ort.env.wasm.wasmPaths = '/ort/';
// wasm threads need cross-origin isolation (COOP/COEP, see serve.mjs); ?threads=N overrides the default
ort.env.wasm.numThreads = params.has('threads') ? Number(params.get('threads'))
  : self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;

/** @param {string} text @param {boolean} [error] */
function say(text, error = false) {
  status.textContent = text;
  status.className = error ? 'error' : '';
}

/** On-screen enlargement of a grid `width` pixels wide of images `size` pixels wide (nearest-neighbour via CSS). */
function displayScale(width, size, target = 480) {
  const wanted = Math.max(Math.ceil(MIN_IMAGE_PX / size), Math.floor(target / width));
  return Math.max(1, Math.min(wanted, Math.floor(MAX_CANVAS_PX / width)));
}

/** Put a grid on a canvas, enlarged by `scale`. */
function paint(target, grid, scale) {
  target.width = grid.width;
  target.height = grid.height;
  target.style.width = `${grid.width * scale}px`;
  target.getContext('2d').putImageData(new ImageData(gridToRGBA(grid), grid.width, grid.height), 0, 0);
}

/**
 * The annealing strip: row r = sample r (the first TRAJECTORY_ROWS), column l = the samples after level l.
 * `columns[l]` holds the batch after level l (undefined: not reached yet, drawn black).
 */
class Trajectory {
  constructor(pipe, count) {
    this.pipe = pipe;
    this.rows = Math.min(count, TRAJECTORY_ROWS);
    this.columns = [];
    this.numLevels = 0;
  }

  /** Record the batch `sample` (first rows kept) as level `position` of `numLevels`, and redraw. */
  add(position, numLevels, sample) {
    const per = this.pipe.sampleShape.reduce((a, b) => a * b, 1);
    this.numLevels = numLevels;
    this.columns[position] = sample.slice(0, this.rows * per);
    this.draw();
  }

  draw() {
    const [channels, h, w] = this.pipe.sampleShape;
    const per = channels * h * w;
    const cells = new Float32Array(this.rows * this.numLevels * per).fill(this.pipe.model.data_range?.[0] ?? 0);
    for (let level = 0; level < this.numLevels; level++) {
      const column = this.columns[level];
      if (!column) continue;
      for (let row = 0; row < this.rows; row++) {
        cells.set(column.subarray(row * per, (row + 1) * per), (row * this.numLevels + level) * per);
      }
    }
    const grid = makeGrid(cells, [this.rows * this.numLevels, channels, h, w], this.pipe.model.data_range ?? [0, 1], this.numLevels,
      GAP_SHADE);
    paint(strip, grid, displayScale(grid.width, w, 640));
    state.trajectory = { rows: this.rows, columns: this.numLevels, filled: this.columns.flatMap((c, i) => (c ? [i] : [])),
      width: grid.width, height: grid.height, pixels: Array.from(grid.pixels) };
  }
}

/** Draw samples: an image grid, or a scatter plot of 2-D points over the data range. */
function draw(pipe, samples, shape) {
  const ctx = canvas.getContext('2d');
  if (pipe.model.is_image) {
    const grid = makeGrid(samples, shape, pipe.model.data_range ?? [0, 1], undefined, GAP_SHADE);
    paint(canvas, grid, displayScale(grid.width, shape[3]));
  } else if (shape.length === 2 && shape[1] === 2) {
    const [low, high] = pipe.model.data_range ?? [-1, 1];
    canvas.width = canvas.height = 400;
    canvas.style.width = '400px';
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, 400, 400);
    ctx.fillStyle = '#1565c0';
    for (let b = 0; b < shape[0]; b++) {
      const x = ((samples[2 * b] - low) / (high - low)) * 400;
      const y = 400 - ((samples[2 * b + 1] - low) / (high - low)) * 400;
      ctx.fillRect(x - 2, y - 2, 4, 4);
    }
  } else {
    canvas.width = canvas.height = 1; // neither images nor 2-D points: nothing to draw (samples are in window.__ncsn)
  }
}

/** The WebGPU adapter the browser gives (null: none), as {vendor, architecture}. */
async function webgpuAdapter() {
  const adapter = await navigator.gpu?.requestAdapter();
  return adapter ? { vendor: adapter.info?.vendor ?? '', architecture: adapter.info?.architecture ?? '' } : null;
}

async function main() {
  const exportUrl = params.get('export') ?? '/export/';
  for (const key of ['seed', 'count', 'steps']) if (params.has(key)) form.elements[key].value = params.get(key);
  form.elements.ep.value = ep;
  form.elements.ep.addEventListener('change', () => {
    const next = new URLSearchParams(location.search);
    next.set('ep', form.elements.ep.value);
    next.delete('graph');
    location.search = next.toString();
  });
  let pipe;
  try {
    if (ep === 'webgpu') {
      state.adapter = await webgpuAdapter();
      if (!state.adapter) throw new Error('this browser gives no WebGPU adapter (navigator.gpu.requestAdapter() returned null); use ep=wasm');
    }
    const manifest = await (await fetch(`${exportUrl.replace(/\/?$/, '/')}manifest.json`)).json();
    const graphs = GRAPHS_FOR_EP[ep].filter((key) => key in (manifest.graphs ?? {}));
    if (!graphs.length) throw new Error(`the export has none of the graphs the ${ep} backend runs (${GRAPHS_FOR_EP[ep].join(', ')})`);
    for (const option of [...form.elements.graph.options]) option.disabled = !graphs.includes(option.value);
    const wanted = params.get('graph') ?? MODE_GRAPH[params.get('mode')] ?? graphs[0];
    form.elements.graph.value = graphs.includes(wanted) ? wanted : graphs[0];
    pipe = await NCSNPipeline.load(fetchSource(exportUrl), { ort, graphs, sessionOptions: { executionProviders: [ep] } });
  } catch (error) {
    Object.assign(state, { state: 'error', error: String(error.message ?? error) });
    modelInfo.textContent = '';
    say(`cannot load ${exportUrl}: ${error.message ?? error}`, true);
    return;
  }
  const config = pipe.schedulerConfig;
  const backend = ep === 'webgpu' ? `WebGPU (adapter ${state.adapter.vendor} ${state.adapter.architecture})`
    : `wasm threads: ${ort.env.wasm.numThreads}${self.crossOriginIsolated ? '' : ' (page not cross-origin isolated)'}`;
  modelInfo.textContent = `${pipe.model.name}: samples [${pipe.sampleShape}], ${config.num_train_timesteps} levels × ${config.num_annealed_steps} steps, ${backend}`;
  state.state = 'ready';
  button.disabled = false;

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const seed = form.elements.seed.value.trim();
    const count = Number(form.elements.count.value);
    const stepsText = form.elements.steps.value.trim();
    const graph = form.elements.graph.value;
    button.disabled = true;
    Object.assign(state, { state: 'running', result: undefined, error: undefined, levels: [], trajectory: undefined });
    progress.value = 0;
    say('generating…');
    const fused = graph === 'sampler' || graph === 'gpu_sampler';
    const trajectory = pipe.model.is_image ? new Trajectory(pipe, count) : null;
    strip.hidden = stripNote.hidden = !trajectory;
    strip.width = strip.height = 1;
    stripNote.textContent = fused
      ? `${graph}.onnx runs every noise level in one call, so only the final samples show; pick a stepwise graph (score, step, gpu_step) to watch the digits form level by level`
      : 'the digits forming: row = sample, column = the samples after each noise level (the last after the final denoising step)';
    const start = performance.now();
    try {
      const result = await pipe.generate({
        seed,
        numSamples: count,
        numInferenceSteps: stepsText ? Number(stepsText) : undefined,
        graph,
        onProgress: async (p) => {
          state.levels.push(p.position);
          progress.max = p.numLevels;
          progress.value = p.position + 1;
          say(`level ${p.position + 1}/${p.numLevels} (trained level ${p.level}, sigma ${p.sigma.toPrecision(4)})`);
          draw(pipe, p.sample, [count, ...pipe.sampleShape]);
          trajectory?.add(p.position, p.numLevels, p.sample);
          await new Promise((resolve) => setTimeout(resolve, 0)); // let the page repaint
        },
      });
      const seconds = (performance.now() - start) / 1000;
      draw(pipe, result.samples, result.shape);
      if (trajectory?.numLevels) trajectory.add(trajectory.numLevels - 1, trajectory.numLevels, result.samples); // after the final denoise
      say(`done: ${count} samples, seeds ${result.seeds[0]}…${result.seeds[count - 1]}, ${graph} on ${ep}, ${seconds.toFixed(2)} s`);
      Object.assign(state, {
        state: 'done',
        result: { samples: Array.from(result.samples), shape: result.shape, seconds, graph, ep, seeds: result.seeds.map(String) },
      });
    } catch (error) {
      Object.assign(state, { state: 'error', error: String(error.message ?? error) });
      say(`error: ${error.message ?? error}`, true);
    } finally {
      button.disabled = false;
    }
  });
  if (params.get('autorun') === '1') form.requestSubmit();
}

main();
