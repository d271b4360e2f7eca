import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  applyCropPlan,
  chooseCropSize,
  cropImage,
  cropSizeListForBudget,
  generateCropSizeList,
  planCrop,
  varCenterCrop,
  type Size,
} from '../src/image/crop.js';
import { readGoldenJson } from './helpers/golden.js';

interface CropsJson {
  crop_size_lists: Record<string, [number, number][]>;
  var_center_crop: {
    budget: number;
    input_size: [number, number];
    output_size: [number, number];
  }[];
}

const crops = readGoldenJson<CropsJson>('crops.json');

test('generate_crop_size_list matches golden crops.json for every budget (order included)', () => {
  for (const [budget, list] of Object.entries(crops.crop_size_lists)) {
    const b = Number(budget);
    assert.deepEqual(generateCropSizeList(Math.floor(b / 32) ** 2, 32), list, `budget ${budget}`);
    assert.deepEqual(cropSizeListForBudget(b), list);
  }
});

test('var_center_crop chooses the golden sizes (ties towards the larger size)', () => {
  for (const c of crops.var_center_crop) {
    const got = chooseCropSize(c.input_size[0], c.input_size[1], cropSizeListForBudget(c.budget));
    assert.deepEqual(got, c.output_size, `budget ${c.budget}, input ${c.input_size.join('x')}`);
  }
  // An exact tie: 64x64 in a list holding both 32x32 and 64x64 (ratio 1 each) goes to the larger.
  assert.deepEqual(
    chooseCropSize(100, 100, [
      [32, 32],
      [64, 64],
      [64, 32],
    ]),
    [64, 64],
  );
});

function synth(width: number, height: number, channels: number, seed: number): Uint8Array {
  const out = new Uint8Array(width * height * channels);
  let s = seed >>> 0;
  for (let i = 0; i < out.length; i++) {
    s = (Math.imul(s, 1103515245) + 12345) & 0x7fffffff; // LCG mod 2^31, as the Pillow script
    const p = Math.floor(i / channels);
    const y = Math.floor(p / width);
    const x = p % width;
    const c = i % channels;
    out[i] =
      (Math.floor(x / 5) + Math.floor(y / 3)) % 3
        ? (x * 37 + y * 11 + c * 50) & 255
        : (s >> 16) & 255;
  }
  return out;
}

// The original center_crop run in Python with Pillow 11.3, with the random window
// replaced by the centred one: [w, h, budget, crop, halvings, resized, left, top, sha256[:16]].
const PIL_CROPS: [number, number, number, Size, number, Size, number, number, string][] = [
  [1203, 701, 512, [672, 384], 0, [672, 392], 0, 4, '75c44598e51aec58'],
  [300, 200, 512, [608, 416], 0, [624, 416], 8, 0, '60a3c3c04c80e389'],
  [2500, 1300, 512, [672, 352], 1, [677, 352], 2, 0, '41c3e2ab61d07451'],
  [333, 1000, 1024, [576, 1728], 0, [576, 1730], 0, 1, 'a9e5eaccc59c53c5'],
  [4000, 300, 512, [1024, 256], 0, [3413, 256], 1194, 0, '8fce17b02f16d5fe'],
];

test('the whole crop (box halvings, bicubic, centred window) matches Pillow byte for byte', () => {
  for (const [w, h, budget, crop, halvings, resized, left, top, sha] of PIL_CROPS) {
    const { image, plan } = varCenterCrop(
      { data: synth(w, h, 3, 7), width: w, height: h, channels: 3 },
      { budget },
    );
    assert.deepEqual(plan.crop, crop);
    assert.equal(plan.halvings, halvings);
    assert.deepEqual(plan.resized, resized);
    assert.deepEqual([plan.left, plan.top], [left, top]);
    assert.equal(
      createHash('sha256').update(image.data).digest('hex').slice(0, 16),
      sha,
      `${w}x${h}`,
    );
    assert.deepEqual([image.width, image.height], crop);
  }
});

test('halving stops once either side is below twice the target; resize uses round-half-even', () => {
  const p = planCrop(2048, 2048, [512, 512]);
  assert.equal(p.halvings, 2);
  assert.deepEqual(p.halved, [512, 512]);
  assert.deepEqual(p.resized, [512, 512]);
  const q = planCrop(2003, 1025, [500, 256]);
  assert.equal(q.halvings, 2);
  assert.deepEqual(q.halved, [500, 256]);
  // Python's round(35 * 1.5) = round(52.5) = 52 (ties to even), not 53.
  assert.deepEqual(planCrop(35, 32, [48, 48]).resized, [52, 48]);
});

test('seeded random window is reproducible and stays inside', () => {
  const a = planCrop(1000, 400, [512, 256], { seed: 42 });
  const b = planCrop(1000, 400, [512, 256], { seed: 42 });
  assert.deepEqual(a, b);
  assert.ok(a.left >= 0 && a.left + 512 <= a.resized[0]);
  assert.ok(a.top >= 0 && a.top + 256 <= a.resized[1]);
  const lefts = new Set(
    Array.from({ length: 20 }, (_, s) => planCrop(1000, 400, [512, 256], { seed: s }).left),
  );
  assert.ok(lefts.size > 1);
});

test('a one-channel mask follows the same plan as its image', () => {
  const w = 130;
  const h = 90;
  const plan = planCrop(w, h, [64, 32]);
  const mask = { data: new Uint8Array(w * h).fill(255), width: w, height: h, channels: 1 };
  const out = applyCropPlan(mask, plan);
  assert.deepEqual([out.width, out.height, out.channels], [64, 32, 1]);
  assert.ok(out.data.every((v) => v === 255));
  assert.throws(
    () => applyCropPlan({ ...mask, width: 10, height: 13 * 90 }, plan),
    /crop plan is for 130x90/,
  );
});

test('bad crop windows and lists are refused', () => {
  const im = { data: new Uint8Array(4 * 4 * 3), width: 4, height: 4, channels: 3 };
  assert.throws(() => cropImage(im, 2, 0, 3, 2), /outside the 4x4 image/);
  assert.throws(() => chooseCropSize(10, 10, []), /empty/);
  assert.throws(() => cropSizeListForBudget(7), /budget/);
});
