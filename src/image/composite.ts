/**
 * Pastes original pixels back outside the mask after a masked generation, so
 * that retouching leaves everything outside the mask pixel-identical (the VQ
 * round trip alone would change every pixel a little). The feather ramps
 * inwards only: unmasked pixels always keep their original value exactly.
 */
import { DimooError } from '../errors.js';
import { checkImage, type Image8 } from './image.js';
import type { CellMask, PixelMask } from './masks.js';

/** Expands a token mask to pixels (pixel (x, y) takes cell (y*gridH/height, x*gridW/width), floored). */
export function cellMaskToPixelMask(mask: CellMask, width: number, height: number): PixelMask {
  const { gridH, gridW, cells } = mask;
  const data = new Float32Array(width * height);
  const colCell = new Int32Array(width);
  for (let x = 0; x < width; x++) colCell[x] = Math.floor((x * gridW) / width);
  for (let y = 0; y < height; y++) {
    const rowBase = Math.floor((y * gridH) / height) * gridW;
    for (let x = 0; x < width; x++) data[y * width + x] = cells[rowBase + colCell[x]!]!;
  }
  return { width, height, data };
}

// Stands in for "no unmasked pixel on this line"; huge but finite so the parabola algebra stays valid.
const FAR = 1e20;

/** 1-D squared Euclidean distance transform (Felzenszwalb & Huttenlocher) of f[0..n) into d. */
function edt1d(f: Float64Array, n: number, d: Float64Array, v: Int32Array, z: Float64Array): void {
  let k = 0;
  v[0] = 0;
  z[0] = -Infinity;
  z[1] = Infinity;
  for (let q = 1; q < n; q++) {
    // z[0] = -Infinity stops the pop loop at the first parabola.
    let s = (f[q]! + q * q - (f[v[k]!]! + v[k]! * v[k]!)) / (2 * q - 2 * v[k]!);
    while (s <= z[k]!) {
      k--;
      s = (f[q]! + q * q - (f[v[k]!]! + v[k]! * v[k]!)) / (2 * q - 2 * v[k]!);
    }
    k++;
    v[k] = q;
    z[k] = s;
    z[k + 1] = Infinity;
  }
  k = 0;
  for (let q = 0; q < n; q++) {
    while (z[k + 1]! < q) k++;
    const dq = q - v[k]!;
    d[q] = dq * dq + f[v[k]!]!;
  }
}

/**
 * Feathered alpha from a mask: pixels with weight <= 0.5 get 0; masked pixels get
 * min(1, distance to the nearest unmasked pixel / featherPx). featherPx 0 keeps
 * the mask's own weights.
 */
export function featherMask(mask: PixelMask, featherPx: number): PixelMask {
  if (!Number.isFinite(featherPx) || featherPx < 0) {
    throw new DimooError(
      `feather must be a non-negative number of pixels, got ${featherPx}`,
      'E_PARAM',
    );
  }
  const { width: W, height: H } = mask;
  if (featherPx === 0) return { width: W, height: H, data: mask.data.slice() };
  const n = Math.max(W, H);
  const f = new Float64Array(n);
  const d = new Float64Array(n);
  const v = new Int32Array(n);
  const z = new Float64Array(n + 1);
  const grid = new Float64Array(W * H);
  for (let i = 0; i < W * H; i++) grid[i] = mask.data[i]! > 0.5 ? FAR : 0;
  for (let x = 0; x < W; x++) {
    for (let y = 0; y < H; y++) f[y] = grid[y * W + x]!;
    edt1d(f, H, d, v, z);
    for (let y = 0; y < H; y++) grid[y * W + x] = d[y]!;
  }
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) f[x] = grid[y * W + x]!;
    edt1d(f, W, d, v, z);
    for (let x = 0; x < W; x++) grid[y * W + x] = d[x]!;
  }
  const data = new Float32Array(W * H);
  for (let i = 0; i < W * H; i++) data[i] = Math.min(1, Math.sqrt(grid[i]!) / featherPx);
  return { width: W, height: H, data };
}

/** out = original + alpha * (generated - original), rounded; alpha 0 gives the original byte exactly. */
export function blendWithAlpha(original: Image8, generated: Image8, alpha: PixelMask): Image8 {
  checkImage(original, 'composite original');
  checkImage(generated, 'composite generated image');
  if (
    original.width !== generated.width ||
    original.height !== generated.height ||
    original.channels !== generated.channels
  ) {
    throw new DimooError(
      `composite: original ${original.width}x${original.height}x${original.channels} and generated ` +
        `${generated.width}x${generated.height}x${generated.channels} images differ in size`,
      'E_PARAM',
    );
  }
  if (alpha.width !== original.width || alpha.height !== original.height) {
    throw new DimooError(
      `composite: mask is ${alpha.width}x${alpha.height}, images are ${original.width}x${original.height}`,
      'E_PARAM',
    );
  }
  const ch = original.channels;
  const out = new Uint8Array(original.data.length);
  for (let p = 0; p < alpha.data.length; p++) {
    const a = alpha.data[p]!;
    for (let k = 0; k < ch; k++) {
      const i = p * ch + k;
      const o = original.data[i]!;
      out[i] =
        a <= 0 ? o : a >= 1 ? generated.data[i]! : Math.round(o + a * (generated.data[i]! - o));
    }
  }
  return { data: out, width: original.width, height: original.height, channels: ch };
}

export interface CompositeOptions {
  /** Width in pixels of the inward ramp at the mask edge (0 = hard edge). */
  featherPx?: number;
}

/** Keeps the original outside the mask and the generated pixels inside, feathered inwards. */
export function compositeOutsideMask(
  original: Image8,
  generated: Image8,
  mask: CellMask | PixelMask,
  opts: CompositeOptions = {},
): Image8 {
  const px = 'cells' in mask ? cellMaskToPixelMask(mask, original.width, original.height) : mask;
  return blendWithAlpha(original, generated, featherMask(px, opts.featherPx ?? 0));
}
