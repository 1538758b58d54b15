// Tile image samples [B, C, H, W] into one 8-bit grid (for the CLI's PNG and the browser's canvas).

/**
 * @typedef {object} Grid
 * @property {number} width
 * @property {number} height
 * @property {number} channels 1 (gray) or 3 (RGB)
 * @property {Uint8ClampedArray} pixels row-major [height, width, channels]
 */

/**
 * Map samples from `dataRange` to 0..255 (clipped) and tile them, `columns` per row with a 2-pixel gap.
 * @param {Float32Array} samples C-ordered [B, C, H, W]
 * @param {number[]} shape [B, C, H, W] with C in {1, 3}
 * @param {[number, number]} [dataRange] value range of the data (default [0, 1])
 * @param {number} [columns] images per row (default ceil(sqrt(B)))
 * @param {number} [gapShade] 0..255 grey of the gaps (default 0, black; the web page uses 128, as ncsn-sample's PNGs)
 * @returns {Grid}
 */
export function makeGrid(samples, shape, dataRange = [0, 1], columns, gapShade = 0) {
  if (shape.length !== 4 || (shape[1] !== 1 && shape[1] !== 3)) {
    throw new RangeError(`an image grid needs samples shaped [B, C, H, W] with C = 1 or 3, got [${shape}]: this model's samples are not images (write .npy)`);
  }
  const [batch, channels, h, w] = shape;
  const cols = columns ?? Math.ceil(Math.sqrt(batch));
  const rows = Math.ceil(batch / cols);
  const gap = 2;
  const width = cols * w + (cols + 1) * gap;
  const height = rows * h + (rows + 1) * gap;
  const pixels = new Uint8ClampedArray(width * height * channels).fill(gapShade);
  const [low, high] = dataRange;
  const scale = 255 / (high - low);
  for (let b = 0; b < batch; b++) {
    const x0 = gap + (b % cols) * (w + gap);
    const y0 = gap + Math.floor(b / cols) * (h + gap);
    for (let c = 0; c < channels; c++) {
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          const value = samples[((b * channels + c) * h + y) * w + x];
          pixels[((y0 + y) * width + x0 + x) * channels + c] = Math.round((value - low) * scale); // clamped by the array type
        }
      }
    }
  }
  return { width, height, channels, pixels };
}

/**
 * Grid -> RGBA bytes (for a canvas ImageData).
 * @param {Grid} grid
 * @returns {Uint8ClampedArray}
 */
export function gridToRGBA(grid) {
  const { width, height, channels, pixels } = grid;
  const out = new Uint8ClampedArray(width * height * 4);
  for (let i = 0; i < width * height; i++) {
    for (let c = 0; c < 3; c++) out[i * 4 + c] = pixels[i * channels + (channels === 1 ? 0 : c)];
    out[i * 4 + 3] = 255;
  }
  return out;
}
