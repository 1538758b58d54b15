// Browser example: load an ncsn-export directory served from the same origin and generate with onnxruntime-web (wasm).
// Query parameters: ?export=/export/ (export URL), &seed=S&count=N&mode=stepwise|fused&steps=n&threads=K&autorun=1.
// State for automation: window.__ncsn = {state: 'loading'|'ready'|'running'|'done'|'error', result?, error?}.

import * as ort from '/ort/ort.wasm.min.mjs';
import { NCSNPipeline, fetchSource, gridToRGBA, makeGrid } from '/runtime/js/index.js';

const params = new URLSearchParams(location.search);
const form = /** @type {HTMLFormElement} */ (document.getElementById('controls'));
const button = /** @type {HTMLButtonElement} */ (document.getElementById('generate'));
const progress = /** @type {HTMLProgressElement} */ (document.getElementById('progress'));
const status = /** @type {HTMLElement} */ (document.getElementById('status'));
const canvas = /** @type {HTMLCanvasElement} */ (document.getElementById('canvas'));
const modelInfo = /** @type {HTMLElement} */ (document.getElementById('model'));
const state = (window.__ncsn = { state: 'loading' });

ort.env.wasm.wasmPaths = '/ort/';
// wasm threads need cross-origin isolation (COOP/COEP, see serve.mjs); ?threads=N overrides the default
ort.env.wasm.numThreads = params.has('threads') ? Number(params.get('threads'))
  : self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;

/** @param {string} text @param {boolean} [error] */
function say(text, error = false) {
  status.textContent = text;
  status.className = error ? 'error' : '';
}

/** Draw samples: an image grid, or a scatter plot of 2-D points over the data range. */
function draw(pipe, samples, shape) {
  const ctx = canvas.getContext('2d');
  if (pipe.model.is_image) {
    const grid = makeGrid(samples, shape, pipe.model.data_range ?? [0, 1]);
    canvas.width = grid.width;
    canvas.height = grid.height;
    const scale = Math.max(1, Math.floor(480 / grid.width));
    canvas.style.width = `${grid.width * scale}px`;
    ctx.putImageData(new ImageData(gridToRGBA(grid), grid.width, grid.height), 0, 0);
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

async function main() {
  const exportUrl = params.get('export') ?? '/export/';
  for (const key of ['seed', 'count', 'steps', 'mode']) if (params.has(key)) form.elements[key].value = params.get(key);
  let pipe;
  try {
    pipe = await NCSNPipeline.load(fetchSource(exportUrl), { ort, mode: 'both', sessionOptions: { executionProviders: ['wasm'] } });
  } catch (error) {
    Object.assign(state, { state: 'error', error: String(error.message ?? error) });
    modelInfo.textContent = '';
    say(`cannot load ${exportUrl}: ${error.message ?? error}`, true);
    return;
  }
  const config = pipe.schedulerConfig;
  modelInfo.textContent = `${pipe.model.name}: samples [${pipe.sampleShape}], ${config.num_train_timesteps} levels × ${config.num_annealed_steps} steps, ` +
    `wasm threads: ${ort.env.wasm.numThreads}${self.crossOriginIsolated ? '' : ' (page not cross-origin isolated)'}`;
  state.state = 'ready';
  button.disabled = false;

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const seed = form.elements.seed.value.trim();
    const count = Number(form.elements.count.value);
    const stepsText = form.elements.steps.value.trim();
    const mode = form.elements.mode.value;
    button.disabled = true;
    Object.assign(state, { state: 'running', result: undefined, error: undefined, levels: [] });
    progress.value = 0;
    say('generating…');
    const start = performance.now();
    try {
      const result = await pipe.generate({
        seed,
        numSamples: count,
        numInferenceSteps: stepsText ? Number(stepsText) : undefined,
        mode,
        onProgress: async (p) => {
          state.levels.push(p.position);
          progress.max = p.numLevels;
          progress.value = p.position + 1;
          say(`level ${p.position + 1}/${p.numLevels} (trained level ${p.level}, sigma ${p.sigma.toPrecision(4)})`);
          draw(pipe, p.sample, [count, ...pipe.sampleShape]);
          await new Promise((resolve) => setTimeout(resolve, 0)); // let the page repaint
        },
      });
      const seconds = (performance.now() - start) / 1000;
      draw(pipe, result.samples, result.shape);
      say(`done: ${count} samples, seeds ${result.seeds[0]}…${result.seeds[count - 1]}, ${mode}, ${seconds.toFixed(2)} s`);
      Object.assign(state, {
        state: 'done',
        result: { samples: Array.from(result.samples), shape: result.shape, seconds, mode, seeds: result.seeds.map(String) },
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
