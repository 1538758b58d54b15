// ncsn-export JavaScript runtime: one ES module for Node and the browser (no build step).
// Scheduler, counter noise and schedule math need nothing; the pipeline takes an onnxruntime module
// (onnxruntime-node or onnxruntime-web) and a file reader (fs in Node, fetch in the browser).
export * from './noise.js';
export * from './schedule.js';
export * from './scheduler.js';
export * from './manifest.js';
export * from './npy.js';
export * from './grid.js';
export * from './pipeline.js';
export * from './inpaint.js';
