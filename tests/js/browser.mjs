// Drive examples/web in Debian's Chromium (playwright-core, no downloaded browser) and save what it generated.
// usage: node tests/js/browser.mjs SPEC_JSON
//   SPEC_JSON: {"exportDir", "outDir", "runs": [{"name", "seed", "count", "mode"? | "graph"?, "ep"?, "steps"?, "threads"?,
//               "page"? (default "/"), "stateName"? (default "__ncsn"), "query"? (more query parameters)}],
//               "executablePath"?, "timeoutMs"?}
// For each run: opens the page with ?autorun=1, waits for window[stateName].state to be done/error, saves
// outDir/NAME.png (screenshot) and outDir/NAME.npy (samples; the inpainting page also NAME.known.npy and NAME.mask.npy,
// one sample each); prints a JSON list of run summaries on stdout.

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

import { serve } from '../../examples/web/serve.mjs';
import { encodeNpy } from '../../runtime/js/npy.js';

export const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu', // no GPU process needed: WebGPU still gets Chromium's SwiftShader (CPU) adapter with the flag below
  '--enable-unsafe-webgpu',
  '--disable-quic',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

const spec = JSON.parse(process.argv[2]);
const server = await serve({ exportDir: spec.exportDir, port: 0 });
const { port } = /** @type {import('node:net').AddressInfo} */ (server.address());
const profile = await mkdtemp(path.join(os.tmpdir(), 'ncsn-chromium-')); // a fresh --user-data-dir
const context = await chromium.launchPersistentContext(profile, {
  executablePath: spec.executablePath ?? '/usr/bin/chromium',
  headless: true,
  args: CHROMIUM_FLAGS,
  viewport: { width: 900, height: 900 },
});
const summaries = [];
try {
  for (const run of spec.runs) {
    const page = await context.newPage();
    const console = [];
    page.on('console', (message) => console.push(`${message.type()}: ${message.text()}`));
    page.on('pageerror', (error) => console.push(`pageerror: ${error.message}`));
    const query = new URLSearchParams({ seed: String(run.seed), count: String(run.count), autorun: '1' });
    for (const key of ['mode', 'graph', 'ep']) if (run[key]) query.set(key, run[key]);
    for (const [key, value] of Object.entries(run.query ?? {})) query.set(key, String(value));
    const stateName = run.stateName ?? '__ncsn';
    if (run.steps) query.set('steps', String(run.steps));
    if (run.threads) query.set('threads', String(run.threads));
    await page.goto(`http://127.0.0.1:${port}${run.page ?? '/'}?${query}`);
    const timeout = spec.timeoutMs ?? 120000;
    const finished = await page
      .waitForFunction((name) => ['done', 'error'].includes(window[name]?.state), stateName, { timeout })
      .then(() => true, () => false);
    const state = await page.evaluate((name) => ({ ...window[name], isolated: self.crossOriginIsolated }), stateName);
    if (!finished) Object.assign(state, { state: 'timeout', error: `no result within ${timeout} ms (state ${state.state})` });
    await page.screenshot({ path: path.join(spec.outDir, `${run.name}.png`), fullPage: true });
    const summary = { name: run.name, state: state.state, error: state.error, levels: state.levels, isolated: state.isolated,
      ep: state.ep, adapter: state.adapter, trajectory: state.trajectory, console };
    if (state.result) {
      const { samples, shape, seconds, seeds, graph } = state.result;
      await writeFile(path.join(spec.outDir, `${run.name}.npy`), encodeNpy(Float32Array.from(samples), shape));
      Object.assign(summary, { shape, seconds, seeds, graph, mode: state.result.mode });
      for (const key of ['known', 'mask']) {
        if (state.result[key]) await writeFile(path.join(spec.outDir, `${run.name}.${key}.npy`), encodeNpy(Float32Array.from(state.result[key]), shape.slice(1)));
      }
    }
    summaries.push(summary);
    await page.close();
  }
} finally {
  await context.close();
  server.close();
  await rm(profile, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(summaries));
