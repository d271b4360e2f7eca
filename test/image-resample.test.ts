import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import sharp from 'sharp';
import { precomputeCoeffs, resizePil, type PilFilter } from '../src/image/resample.js';
import type { Image8 } from '../src/image/image.js';

/**
 * Gradient bands with LCG noise patches; Pillow 11.3 produced the reference
 * hashes below from the same generator (same constants, same order).
 */
function synth(width: number, height: number, channels: number, seed: number): Uint8Array {
  const out = new Uint8Array(width * height * channels);
  let s = seed >>> 0;
  for (let i = 0; i < out.length; i++) {
    s = (Math.imul(s, 1103515245) + 12345) & 0x7fffffff; // LCG mod 2^31
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

const img = (w: number, h: number, ch: number, seed = w * 1000 + h): Image8 => ({
  data: synth(w, h, ch, seed),
  width: w,
  height: h,
  channels: ch,
});

const sha16 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex').slice(0, 16);

// [inW, inH, channels, outW, outH, filter, first 16 hex of sha256(PIL Image.resize(...).tobytes())]
const PIL_REFERENCE: [number, number, number, number, number, PilFilter, string][] = [
  [37, 23, 3, 80, 50, 'bicubic', 'ddfc34d5a68235c8'],
  [80, 50, 3, 37, 23, 'bicubic', '228ea54da4e2279c'],
  [65, 49, 3, 32, 24, 'box', '7227b59401d5c0fa'],
  [64, 48, 1, 32, 24, 'box', 'f9c787c72729df3d'],
  [30, 100, 3, 61, 100, 'bicubic', '725d8b2d5ccb521d'],
  [100, 30, 1, 100, 77, 'lanczos', '2ef8cadbb496d284'],
  [17, 9, 3, 200, 3, 'bilinear', 'd231be49f64bef19'],
  [300, 200, 3, 129, 131, 'hamming', '95c9fcf22779df5d'],
  [5, 5, 3, 1, 1, 'bicubic', '18f4933ac0d5c48d'],
  [1, 1, 3, 7, 3, 'bicubic', '2b89f42e6f92c198'],
  [96, 72, 3, 60, 45, 'lanczos', '18145aa84c09a8f9'],
  [33, 47, 1, 16, 32, 'lanczos', 'e92ec3b01ea4a395'],
];

test('resizePil matches Pillow byte for byte (all filters, up/down, odd sizes, L and RGB)', () => {
  for (const [iw, ih, ch, ow, oh, f, want] of PIL_REFERENCE) {
    const out = resizePil(img(iw, ih, ch), ow, oh, f);
    assert.equal(out.data.length, ow * oh * ch);
    assert.equal(sha16(out.data), want, `${iw}x${ih}x${ch} -> ${ow}x${oh} ${f}`);
  }
});

test('bicubic coefficients are the Keys cubic (a = -0.5), normalised, in 22-bit fixed point', () => {
  // 2x upscale: output 1 has centre 0.75 in input coordinates; taps at input centres
  // 0.5, 1.5, 2.5 (and 3.5 beyond) are at distances -0.25, 0.75, 1.75 (2.75: outside the support).
  const c = precomputeCoeffs(8, 16, 'bicubic');
  assert.equal(c.ksize, 5);
  assert.deepEqual([c.bounds[2], c.bounds[3]], [0, 3]);
  const keys = (t: number): number => {
    t = Math.abs(t);
    return t < 1
      ? 1.5 * t ** 3 - 2.5 * t ** 2 + 1
      : t < 2
        ? -0.5 * t ** 3 + 2.5 * t ** 2 - 4 * t + 2
        : 0;
  };
  const raw = [0.25, -0.75, -1.75].map(keys);
  const sum = raw.reduce((a, b) => a + b, 0);
  for (let i = 0; i < 3; i++) {
    const w = raw[i]! / sum;
    assert.ok(Math.abs(c.weights[5 + i]! - w) < 1e-15);
    assert.equal(c.fixed[5 + i], Math.trunc(w * 4194304 + (w < 0 ? -0.5 : 0.5)));
  }
});

test('box halving averages pairs per pass and rounds half up', () => {
  // One row: [0, 1, 1, 2, 10, 13] -> pairs (0+1)/2 = 0.5 -> 1, 1.5 -> 2, 11.5 -> 12.
  const out = resizePil(
    { data: Uint8Array.from([0, 1, 1, 2, 10, 13]), width: 6, height: 1, channels: 1 },
    3,
    1,
    'box',
  );
  assert.deepEqual(Array.from(out.data), [1, 2, 12]);
  // Two passes round separately: 2x2 block [0, 1; 1, 1]: rows -> 1, 1 -> 1 (a single-pass mean would give 0.75 -> 1 too),
  // block [0, 1; 0, 0]: rows -> 1, 0 -> (1 + 0) / 2 = 0.5 -> 1, where a one-pass (Reduce.c) 2x2 mean 0.25 gives 0.
  const b = resizePil(
    { data: Uint8Array.from([0, 1, 0, 0]), width: 2, height: 2, channels: 1 },
    1,
    1,
    'box',
  );
  assert.deepEqual(Array.from(b.data), [1]);
});

/** Plain double-precision separable reference: no fixed point, no rounding; like PIL it clips between passes. */
function floatReference(src: Image8, ow: number, oh: number, f: PilFilter): Float64Array {
  const { width: iw, height: ih, channels: ch } = src;
  const hc = precomputeCoeffs(iw, ow, f);
  const vc = precomputeCoeffs(ih, oh, f);
  const tmp = new Float64Array(ow * ih * ch);
  for (let y = 0; y < ih; y++)
    for (let x = 0; x < ow; x++)
      for (let k = 0; k < ch; k++) {
        let s = 0;
        for (let t = 0; t < hc.bounds[2 * x + 1]!; t++)
          s += src.data[(y * iw + hc.bounds[2 * x]! + t) * ch + k]! * hc.weights[x * hc.ksize + t]!;
        tmp[(y * ow + x) * ch + k] = Math.min(255, Math.max(0, s));
      }
  const out = new Float64Array(ow * oh * ch);
  for (let y = 0; y < oh; y++)
    for (let i = 0; i < ow * ch; i++) {
      let s = 0;
      for (let t = 0; t < vc.bounds[2 * y + 1]!; t++)
        s += tmp[(vc.bounds[2 * y]! + t) * ow * ch + i]! * vc.weights[y * vc.ksize + t]!;
      out[y * ow * ch + i] = s;
    }
  return out;
}

test('fixed-point result stays within rounding distance of the exact convolution', () => {
  for (const [iw, ih, ow, oh, f] of [
    [41, 29, 97, 71, 'bicubic'],
    [97, 71, 41, 29, 'bicubic'],
    [64, 64, 32, 32, 'box'],
    [50, 40, 31, 53, 'lanczos'],
  ] as const) {
    const src = img(iw, ih, 3);
    const got = resizePil(src, ow, oh, f).data;
    const ref = floatReference(src, ow, oh, f);
    let worst = 0;
    for (let i = 0; i < got.length; i++) {
      const clipped = Math.min(255, Math.max(0, ref[i]!));
      worst = Math.max(worst, Math.abs(got[i]! - clipped));
    }
    // Two 8-bit roundings, each amplified at most by the vertical filter's absolute sum (< 1.5).
    assert.ok(worst <= 2, `${iw}x${ih} -> ${ow}x${oh} ${f}: worst ${worst}`);
  }
});

test('same size is a copy; one-axis resizes skip the other pass', () => {
  const src = img(20, 10, 3);
  const same = resizePil(src, 20, 10, 'bicubic');
  assert.deepEqual(same.data, src.data);
  assert.notEqual(same.data, src.data);
  // Height-only change: each column is resampled independently of its neighbours.
  const col = resizePil(src, 20, 17, 'bicubic');
  const one = resizePil(
    {
      data: src.data.filter((_, i) => Math.floor(i / 3) % 20 === 4),
      width: 1,
      height: 10,
      channels: 3,
    },
    1,
    17,
    'bicubic',
  );
  for (let y = 0; y < 17; y++)
    for (let k = 0; k < 3; k++) assert.equal(col.data[(y * 20 + 4) * 3 + k], one.data[y * 3 + k]);
});

test('sharp is not a substitute: its cubic differs from PIL bicubic (documented numbers)', async () => {
  // Measured on this synthetic high-contrast image: downscaling differs by a few levels,
  // upscaling by far more (sharp's upsampling kernel and rounding are not Pillow's).
  const src = img(97, 61, 3);
  const diff = async (ow: number, oh: number): Promise<number> => {
    const mine = resizePil(src, ow, oh, 'bicubic').data;
    const sh = await sharp(Buffer.from(src.data), { raw: { width: 97, height: 61, channels: 3 } })
      .resize(ow, oh, { kernel: 'cubic', fit: 'fill' })
      .raw()
      .toBuffer();
    let m = 0;
    for (let i = 0; i < mine.length; i++) m = Math.max(m, Math.abs(mine[i]! - sh[i]!));
    return m;
  };
  const down = await diff(40, 25);
  const up = await diff(200, 130);
  assert.ok(down > 0 && down <= 16, `downscale diff ${down}`);
  assert.ok(up > 16, `upscale diff ${up}`);
});

test('invalid sizes are refused', () => {
  assert.throws(() => resizePil(img(4, 4, 3), 0, 4, 'bicubic'), /invalid target size/);
  assert.throws(
    () => resizePil({ data: new Uint8Array(5), width: 2, height: 2, channels: 3 }, 2, 2, 'box'),
    /do not match/,
  );
});
