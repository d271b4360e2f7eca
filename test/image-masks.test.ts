import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import {
  centeredRectPixelMask,
  dilateCells,
  image8ToPixelMask,
  paintCellMask,
  pixelMaskToCells,
  pixelMaskToImage8,
  rectsToCellMask,
  type CellMask,
} from '../src/image/masks.js';
import { readMask } from '../src/image/io.js';
import { applyCropPlan, planCrop } from '../src/image/crop.js';
import { readGoldenJson } from './helpers/golden.js';
import { gridCellTokens, gridRows } from '../src/pipelines/prompts.js';

interface PaintCase {
  width: number;
  height: number;
  grid_h: number;
  grid_w: number;
  input_grid: { codes: number[] };
  masked_image_tokens: number[];
  paint: {
    mask_h_ratio: number;
    mask_w_ratio: number;
    mode: 'inpainting' | 'outpainting';
    dilate_latent_k: number;
  };
}

const rows = (m: CellMask): string[] =>
  Array.from({ length: m.gridH }, (_, i) =>
    Array.from(m.cells.subarray(i * m.gridW, (i + 1) * m.gridW)).join(''),
  );

test('golden inpaint/outpaint masked_image_tokens from the centred rectangle', () => {
  for (const name of ['inpaint_96x64.json', 'outpaint_96x64.json']) {
    const c = readGoldenJson<PaintCase>(name);
    const mask = paintCellMask(c.width, c.height, {
      maskHRatio: c.paint.mask_h_ratio,
      maskWRatio: c.paint.mask_w_ratio,
      mode: c.paint.mode,
      dilate: c.paint.dilate_latent_k,
    });
    assert.deepEqual([mask.gridH, mask.gridW], [c.grid_h, c.grid_w]);
    const masked = c.input_grid.codes.map((code, i) => (mask.cells[i] ? -1 : code));
    assert.deepEqual(
      gridRows(gridCellTokens(masked), mask.gridH, mask.gridW),
      c.masked_image_tokens,
      name,
    );
  }
  // What those masks look like: inpainting a full-height band of 0.34 width; outpainting everything but a
  // 0.5 x 0.5 box, whose 48 px width covers half of its two edge cells (half is not "more than half").
  assert.deepEqual(rows(paintCellMask(96, 64, { maskHRatio: 1, maskWRatio: 0.34 })), [
    '001100',
    '001100',
    '001100',
    '001100',
  ]);
  assert.deepEqual(
    rows(paintCellMask(96, 64, { maskHRatio: 0.5, maskWRatio: 0.5, mode: 'outpainting' })),
    ['111111', '100001', '100001', '111111'],
  );
});

test('centred rectangle arithmetic: round-half-even sizes, floor centring, rescale to the encoder size', () => {
  // 0.25 * 10 = 2.5 -> 2 (ties to even); top = (10 - 2) // 2 = 4.
  const m = centeredRectPixelMask(10, 10, { maskHRatio: 0.25, maskWRatio: 1 });
  const rowsOn = Array.from({ length: 10 }, (_, y) => m.data[y * 10]);
  assert.deepEqual(rowsOn, [0, 0, 0, 0, 1, 1, 0, 0, 0, 0]);
  // Non-multiple-of-16 image: the rectangle (x 25..75 of 100) is mapped to the 96 px encoder width
  // (x 24..72), which half-covers cells 1 and 4.
  const p = paintCellMask(100, 70, { maskHRatio: 1, maskWRatio: 0.5 });
  assert.deepEqual([p.gridH, p.gridW], [4, 6]);
  assert.deepEqual(rows(p)[0], '001100');
  assert.throws(
    () => paintCellMask(64, 64, { maskWRatio: 1.5 }),
    /mask_w_ratio must be a number in \[0, 1\]/,
  );
});

test('area mapping: a cell is masked only when more than half of it is', () => {
  const W = 32;
  const H = 16;
  const data = new Float32Array(W * H);
  // Cell 0: exactly half covered (8 of 16 columns) -> not masked; cell 1: 9 columns -> masked.
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < 8; x++) data[y * W + x] = 1;
    for (let x = 16; x < 25; x++) data[y * W + x] = 1;
  }
  assert.deepEqual(Array.from(pixelMaskToCells({ width: W, height: H, data }, 1, 2).cells), [0, 1]);
  // Soft weights average too: 0.6 everywhere -> masked.
  assert.deepEqual(
    Array.from(
      pixelMaskToCells({ width: 16, height: 16, data: new Float32Array(256).fill(0.6) }, 1, 1)
        .cells,
    ),
    [1],
  );
});

test('dilation grows the mask by k cells in every direction, clipped at the border', () => {
  const cells = new Uint8Array(25);
  cells[12] = 1;
  assert.deepEqual(rows(dilateCells({ gridH: 5, gridW: 5, cells }, 1)), [
    '00000',
    '01110',
    '01110',
    '01110',
    '00000',
  ]);
  assert.deepEqual(rows(dilateCells({ gridH: 5, gridW: 5, cells }, 5)), [
    '11111',
    '11111',
    '11111',
    '11111',
    '11111',
  ]);
  assert.throws(() => dilateCells({ gridH: 5, gridW: 5, cells }, -1), /non-negative integer/);
});

test('rectangles in pixels or cells; rectangles outside are refused', () => {
  const base = { width: 64, height: 48, gridW: 4, gridH: 3 };
  const px = rectsToCellMask([{ x: 16, y: 0, width: 24, height: 16 }], base);
  // x 16..40 covers cell 1 fully and half of cell 2 (not more than half); y 0..16 is row 0.
  assert.deepEqual(rows(px), ['0100', '0000', '0000']);
  const cells = rectsToCellMask(
    [
      { x: 3, y: 2, width: 1, height: 1 },
      { x: 0, y: 0, width: 2, height: 1 },
    ],
    { ...base, units: 'cells' },
  );
  assert.deepEqual(rows(cells), ['1100', '0000', '0001']);
  assert.throws(
    () => rectsToCellMask([{ x: 60, y: 0, width: 8, height: 8 }], base),
    /rectangle 0 .* lies outside the 64x48 image/,
  );
  assert.throws(
    () => rectsToCellMask([{ x: 0, y: 0, width: 1, height: 4 }], { ...base, units: 'cells' }),
    /outside the 4x3 token grid/,
  );
  assert.throws(() => rectsToCellMask([{ x: 0, y: 0, width: 0, height: 4 }], base), /rectangle 0/);
});

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-mask-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('user mask PNGs: alpha (transparent = regenerate), luminance (white = regenerate), size must match', async () => {
  const W = 32;
  const H = 16;
  // Alpha mask: left half transparent.
  const rgba = Buffer.alloc(W * H * 4, 255);
  for (let y = 0; y < H; y++) for (let x = 0; x < 16; x++) rgba[(y * W + x) * 4 + 3] = 0;
  const alphaFile = path.join(tmp, 'alpha.png');
  await sharp(rgba, { raw: { width: W, height: H, channels: 4 } })
    .png()
    .toFile(alphaFile);
  const a = await readMask(alphaFile, { width: W, height: H });
  assert.deepEqual(Array.from(pixelMaskToCells(a, 1, 2).cells), [1, 0]);

  // Luminance mask: right half white, no alpha.
  const gray = Buffer.alloc(W * H);
  for (let y = 0; y < H; y++) for (let x = 16; x < W; x++) gray[y * W + x] = 255;
  const lumFile = path.join(tmp, 'lum.png');
  await sharp(gray, { raw: { width: W, height: H, channels: 1 } })
    .png()
    .toFile(lumFile);
  const l = await readMask(lumFile, { width: W, height: H });
  assert.deepEqual(Array.from(pixelMaskToCells(l, 1, 2).cells), [0, 1]);
  // Forcing luminance on the alpha mask ignores transparency (its colour is white everywhere).
  const forced = await readMask(alphaFile, { source: 'luminance' });
  assert.deepEqual(Array.from(pixelMaskToCells(forced, 1, 2).cells), [1, 1]);

  await assert.rejects(
    readMask(lumFile, { width: 64, height: 16 }),
    /mask .*lum\.png is 32x16 but the image is 64x16/,
  );
});

test('a user mask follows the image through the crop plan', () => {
  const mask = { width: 200, height: 100, data: new Float32Array(200 * 100) };
  for (let y = 0; y < 100; y++) for (let x = 100; x < 200; x++) mask.data[y * 200 + x] = 1;
  const plan = planCrop(200, 100, [64, 32]);
  const cropped = image8ToPixelMask(applyCropPlan(pixelMaskToImage8(mask), plan));
  assert.deepEqual([cropped.width, cropped.height], [64, 32]);
  assert.deepEqual(Array.from(pixelMaskToCells(cropped, 2, 4).cells), [0, 0, 1, 1, 0, 0, 1, 1]);
});
