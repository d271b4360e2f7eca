import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  blendWithAlpha,
  cellMaskToPixelMask,
  compositeOutsideMask,
  featherMask,
} from '../src/image/composite.js';
import type { Image8 } from '../src/image/image.js';

const solid = (w: number, h: number, v: number): Image8 => ({
  data: new Uint8Array(w * h * 3).fill(v),
  width: w,
  height: h,
  channels: 3,
});

function noisy(w: number, h: number): Image8 {
  return {
    data: new Uint8Array(w * h * 3).map((_, i) => (i * 97 + 13) % 251),
    width: w,
    height: h,
    channels: 3,
  };
}

test('outside the mask the original is kept byte for byte, with or without feathering', () => {
  const W = 64;
  const H = 48;
  const orig = noisy(W, H);
  const gen = solid(W, H, 7);
  const cells = new Uint8Array(12);
  cells[5] = 1; // cell (1, 1): pixels x 16..32, y 16..32
  cells[6] = 1;
  const mask = { gridH: 3, gridW: 4, cells };
  for (const featherPx of [0, 1, 4, 100]) {
    const out = compositeOutsideMask(orig, gen, mask, { featherPx });
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const inside = y >= 16 && y < 32 && x >= 16 && x < 48;
        const i = (y * W + x) * 3;
        if (!inside)
          assert.deepEqual(
            out.data.subarray(i, i + 3),
            orig.data.subarray(i, i + 3),
            `feather ${featherPx} at ${x},${y}`,
          );
        if (inside && featherPx === 0)
          assert.deepEqual(Array.from(out.data.subarray(i, i + 3)), [7, 7, 7]);
      }
    }
  }
});

test('feather ramps inwards with the Euclidean distance to the nearest unmasked pixel', () => {
  // 9x1 strip, pixels 2..8 masked: distances to pixel 1 are 1..7.
  const data = new Float32Array(9);
  data.fill(1, 2);
  const f = featherMask({ width: 9, height: 1, data }, 4);
  assert.deepEqual(Array.from(f.data), [0, 0, 0.25, 0.5, 0.75, 1, 1, 1, 1]);
  // 2-D: in a 5x5 masked block the corner pixel touches the outside (distance 1), the centre is 3 away.
  const W = 7;
  const block = new Float32Array(W * W);
  for (let y = 1; y < 6; y++) for (let x = 1; x < 6; x++) block[y * W + x] = 1;
  const g = featherMask({ width: W, height: W, data: block }, 10);
  assert.ok(Math.abs(g.data[1 * W + 1]! - 0.1) < 1e-7);
  assert.ok(Math.abs(g.data[3 * W + 3]! - 0.3) < 1e-7); // centre: 3 px from the border ring
  assert.equal(g.data[0], 0);
  // Whole image masked: nothing to ramp from, alpha 1.
  assert.ok(
    featherMask({ width: 3, height: 2, data: new Float32Array(6).fill(1) }, 5).data.every(
      (v) => v === 1,
    ),
  );
});

test('blend is exact at alpha 0 and 1 and rounds in between', () => {
  const a = solid(2, 1, 10);
  const b = solid(2, 1, 21);
  const out = blendWithAlpha(a, b, { width: 2, height: 1, data: Float32Array.from([0.5, 1]) });
  assert.deepEqual(Array.from(out.data), [16, 16, 16, 21, 21, 21]); // 15.5 rounds up
  assert.throws(
    () => blendWithAlpha(a, solid(3, 1, 0), { width: 2, height: 1, data: new Float32Array(2) }),
    /differ in size/,
  );
  assert.throws(
    () => blendWithAlpha(a, b, { width: 1, height: 1, data: new Float32Array(1) }),
    /mask is 1x1/,
  );
});

test('cell masks expand to their 16x16 pixel blocks', () => {
  const px = cellMaskToPixelMask({ gridH: 1, gridW: 2, cells: Uint8Array.from([0, 1]) }, 32, 16);
  assert.equal(px.data[15], 0);
  assert.equal(px.data[16], 1);
  assert.equal(
    px.data.reduce((s, v) => s + v, 0),
    256,
  );
});
