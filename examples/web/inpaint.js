// Browser inpainting page (examples/web/inpaint.html, served by serve.mjs at /examples/web/inpaint.html).
// The digit is the model's own sample for a seed (sampler.onnx); the user paints the region to fill in (mask 0) on
// an enlarged canvas, then NCSNPipeline.inpaint fills it: stepwise (score.onnx + the JS scheduler, the completions
// redrawn after every noise level) or fused (inpaint.onnx, one call). Same completions as the Python runtime's
// `pipe.inpaint` for the same seeds.
// Query parameters (for links and automation): ?export=/export/&digit=D&seed=S&count=N&mode=stepwise|fused
// &mask=right|none|all (a preset instead of drawing) &autorun=1.
// State for automation: window.__inpaint = {state: 'loading'|'ready'|'running'|'done'|'error', levels,
// result?: {samples, known, mask, shape, mode, graph, seconds, seeds}, error?}.

import { NCSNPipeline, fetchSource, gridToRGBA, makeGrid } from '/runtime/js/index.js';

const params = new URLSearchParams(location.search);
const ort = await import('/ort/ort.wasm.min.mjs');
const form = /** @type {HTMLFormElement} */ (document.getElementById('controls'));
const buttons = ['new-digit', 'right-half', 'clear', 'inpaint'].map((id) => /** @type {HTMLButtonElement} */ (document.getElementById(id)));
const progress = /** @type {HTMLProgressElement} */ (document.getElementById('progress'));
const status = /** @type {HTMLElement} */ (document.getElementById('status'));
const editor = /** @type {HTMLCanvasElement} */ (document.getElementById('editor'));
const completions = /** @type {HTMLCanvasElement} */ (document.getElementById('completions'));
const note = /** @type {HTMLElement} */ (document.getElementById('completions-note'));
const modelInfo = /** @type {HTMLElement} */ (document.getElementById('model'));
const EDITOR_SCALE = 12;
const GAP_SHADE = 128;
const state = (window.__inpaint = { state: 'loading', levels: [] });

ort.env.wasm.wasmPaths = '/ort/';
ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;

/** @param {string} text @param {boolean} [error] */
function say(text, error = false) {
  status.textContent = text;
  status.className = error ? 'error' : '';
}

/** Put an 8-bit grid (or RGBA bytes) on a canvas, enlarged `scale` times (nearest-neighbour via CSS). */
function paint(target, width, height, rgba, scale) {
  target.width = width;
  target.height = height;
  target.style.width = `${width * scale}px`;
  target.getContext('2d').putImageData(new ImageData(rgba, width, height), 0, 0);
}

async function main() {
  const exportUrl = params.get('export') ?? '/export/';
  for (const key of ['digit', 'seed', 'count', 'mode']) if (params.has(key)) form.elements[key].value = params.get(key);
  let pipe;
  try {
    const manifest = await (await fetch(`${exportUrl.replace(/\/?$/, '/')}manifest.json`)).json();
    if (!manifest.model?.is_image) throw new Error('this page inpaints images; the export\'s samples are not images');
    const graphs = ['sampler', 'score', 'inpaint'].filter((key) => key in (manifest.graphs ?? {}));
    if (!graphs.includes('sampler') || !graphs.includes('score')) throw new Error('the export needs sampler.onnx and score.onnx');
    form.elements.mode.options[1].disabled = !graphs.includes('inpaint');
    pipe = await NCSNPipeline.load(fetchSource(exportUrl), { ort, graphs, sessionOptions: { executionProviders: ['wasm'] } });
  } catch (error) {
    Object.assign(state, { state: 'error', error: String(error.message ?? error) });
    say(`cannot load ${exportUrl}: ${error.message ?? error}`, true);
    return;
  }
  const [channels, height, width] = pipe.sampleShape;
  const size = channels * height * width;
  const range = pipe.model.data_range ?? [0, 1];
  const mask = new Float32Array(height * width).fill(1); // 1 = known, 0 = fill in (one plane, repeated over channels)
  let known = new Float32Array(size);
  modelInfo.textContent = `${pipe.model.name}: samples [${pipe.sampleShape}], ${pipe.schedulerConfig.num_train_timesteps} levels × `
    + `${pipe.schedulerConfig.num_annealed_steps} steps; inpaint.onnx ${pipe.sessions.inpaint ? 'loaded' : 'not in this export (stepwise only)'}`;

  const drawEditor = () => {
    const grid = makeGrid(known, [1, ...pipe.sampleShape], range, 1, GAP_SHADE);
    const rgba = gridToRGBA(grid);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        if (mask[y * width + x]) continue;
        const at = ((y + 2) * grid.width + x + 2) * 4; // makeGrid's 2-pixel gap
        rgba[at] = Math.round(0.5 * rgba[at] + 127), rgba[at + 1] >>= 1, rgba[at + 2] >>= 1; // red tint: to be filled in
      }
    }
    paint(editor, grid.width, grid.height, rgba, EDITOR_SCALE);
  };
  const drawCompletions = (samples, count) => {
    const grid = makeGrid(samples, [count, ...pipe.sampleShape], range, undefined, GAP_SHADE);
    paint(completions, grid.width, grid.height, gridToRGBA(grid), Math.max(2, Math.floor(360 / grid.width)));
  };
  const newDigit = async () => {
    const digit = await pipe.generate({ seed: form.elements.digit.value.trim(), numSamples: 1, graph: 'sampler' });
    known = digit.samples.slice();
    drawEditor();
  };
  const preset = (name) => {
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) mask[y * width + x] = name === 'none' ? 1 : name === 'all' ? 0 : Number(x < Math.floor(width / 2));
    }
    drawEditor();
  };

  let painting = false;
  const brush = (event) => {
    const box = editor.getBoundingClientRect();
    const cx = ((event.clientX - box.left) / box.width) * editor.width - 2;
    const cy = ((event.clientY - box.top) / box.height) * editor.height - 2;
    const radius = Number(form.elements.brush.value) / 2 || 1;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) if ((x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 <= radius ** 2) mask[y * width + x] = 0;
    }
    drawEditor();
  };
  editor.addEventListener('pointerdown', (event) => { painting = true; editor.setPointerCapture(event.pointerId); brush(event); });
  editor.addEventListener('pointermove', (event) => { if (painting) brush(event); });
  editor.addEventListener('pointerup', () => { painting = false; });
  buttons[0].addEventListener('click', () => newDigit().catch((error) => say(`error: ${error.message ?? error}`, true)));
  buttons[1].addEventListener('click', () => preset('right'));
  buttons[2].addEventListener('click', () => preset('none'));

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const count = Number(form.elements.count.value);
    const mode = form.elements.mode.value;
    for (const button of buttons) button.disabled = true;
    Object.assign(state, { state: 'running', result: undefined, error: undefined, levels: [] });
    progress.value = 0;
    note.textContent = mode === 'fused' ? 'completions (inpaint.onnx runs every level in one call: the final completions only)'
      : 'completions, redrawn after every noise level';
    say('inpainting…');
    const fullMask = new Float32Array(size);
    for (let c = 0; c < channels; c++) fullMask.set(mask, c * height * width);
    const start = performance.now();
    try {
      const result = await pipe.inpaint({
        known, mask: fullMask, seed: form.elements.seed.value.trim(), numSamples: count, mode,
        onProgress: async (p) => {
          state.levels.push(p.position);
          progress.max = p.numLevels;
          progress.value = p.position + 1;
          say(`level ${p.position + 1}/${p.numLevels} (sigma ${p.sigma.toPrecision(4)})`);
          drawCompletions(p.sample, count);
          await new Promise((resolve) => setTimeout(resolve, 0)); // let the page repaint
        },
      });
      const seconds = (performance.now() - start) / 1000;
      drawCompletions(result.samples, count);
      say(`done: ${count} completions, seeds ${result.seeds[0]}…${result.seeds[count - 1]}, ${result.mode} (${result.graph}.onnx), ${seconds.toFixed(2)} s`);
      Object.assign(state, {
        state: 'done',
        result: { samples: Array.from(result.samples), known: Array.from(known), mask: Array.from(fullMask), shape: result.shape,
          mode: result.mode, graph: result.graph, seconds, seeds: result.seeds.map(String) },
      });
    } catch (error) {
      Object.assign(state, { state: 'error', error: String(error.message ?? error) });
      say(`error: ${error.message ?? error}`, true);
    } finally {
      for (const button of buttons) button.disabled = false;
    }
  });

  try {
    await newDigit();
  } catch (error) {
    Object.assign(state, { state: 'error', error: String(error.message ?? error) });
    say(`error: ${error.message ?? error}`, true);
    return;
  }
  preset(params.get('mask') ?? 'none');
  for (const button of buttons) button.disabled = false;
  state.state = 'ready';
  say('paint the region to fill in, then Inpaint');
  if (params.get('autorun') === '1') form.requestSubmit();
}

main();
