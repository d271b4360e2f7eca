import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readGoldenJson } from './helpers/golden.js';
import {
  cacheRefreshSchedule,
  cosineSchedule,
  isCacheRefreshStep,
  keepMaskedCount,
  maskRatio,
  numTransferTokens,
} from '../src/samplers/schedule.js';
import { cosF32, fmaF32, nextDownF32, nextUpF32 } from '../src/samplers/f32.js';
import { DimooError } from '../src/errors.js';

interface Schedules {
  cosine_schedule: Record<string, number[]>;
  keep_masked: Record<string, number[]>;
  num_transfer_tokens: Record<string, number[]>;
  cache_refresh_steps: Record<string, boolean[]>;
}
const golden = readGoldenJson<Schedules>('schedules.json');

test('cosine schedule equals the golden float32 values bit for bit', () => {
  for (const [T, values] of Object.entries(golden.cosine_schedule)) {
    values.forEach((v, s) => assert.equal(maskRatio(s, Number(T)), v, `T=${T} s=${s}`));
  }
});

test('keep_masked matches golden for every T and n', () => {
  let checked = 0;
  for (const [key, values] of Object.entries(golden.keep_masked)) {
    const m = /^T(\d+)_L(\d+)$/.exec(key);
    assert.ok(m, key);
    const T = Number(m[1]);
    const n = Number(m[2]);
    assert.equal(values.length, T);
    values.forEach((v, s) => assert.equal(keepMaskedCount(n, s, T), v, `${key} s=${s}`));
    checked++;
  }
  assert.ok(checked >= 30);
});

test('cosF32 reproduces SLEEF cosf_u10 where correct rounding differs', () => {
  // (argument bits, SLEEF result bits) from libsleef 3.5 Sleef_cosf8_u10avx2 on
  // schedule arguments f32(f32(pi/2) * f32((s+1)/T)); Math.fround(Math.cos(x)) differs on each.
  const table: Array<[number, number]> = [
    [0x3f8f9d9d, 0x3ede2600],
    [0x3e162dcf, 0x3f7d4076],
    [0x3eacd62c, 0x3f718d44],
    [0x3f162815, 0x3f553607],
    [0x3e043b6e, 0x3f7dde57],
    [0x3f84a4bc, 0x3f0269d3],
    [0x3eaedf1b, 0x3f713683],
    [0x3eb75c0b, 0x3f6fc223],
    [0x3f9e43a4, 0x3ea804d8],
    [0x3f8dfe6b, 0x3ee3f9b5],
    [0x3ec23180, 0x3f6dce5c],
    [0x3e8f4138, 0x3f760b74],
    [0x3ec18535, 0x3f6dee34],
    [0x3e892329, 0x3f76df31],
    [0x3e756f65, 0x3f78ae8c],
    [0x3ea71041, 0x3f727e12],
    [0x3e97b069, 0x3f74d8c8],
    [0x3ed763af, 0x3f69adf3],
    [0x3f6fedb2, 0x3f178f4b],
    [0x3f831a4f, 0x3f050e35],
    [0x3f8586f4, 0x3f00e3b4],
    [0x3e861ce9, 0x3f77448b],
    [0x3e6c0651, 0x3f793ad5],
    [0x3c108293, 0x3f7ffd74],
  ];
  const buf = new DataView(new ArrayBuffer(4));
  const fromBits = (b: number): number => {
    buf.setUint32(0, b);
    return buf.getFloat32(0);
  };
  for (const [xb, rb] of table) {
    const x = fromBits(xb);
    const want = fromBits(rb);
    assert.equal(cosF32(x), want, `cos(${x})`);
    assert.notEqual(Math.fround(Math.cos(x)), want);
  }
  assert.equal(cosF32(0), 1);
  assert.equal(cosineSchedule(0), 1);
  // cos(f32(pi/2)) is slightly negative in float32, as in the golden T schedules.
  assert.equal(cosineSchedule(1), -4.371138828673793e-8);
});

test('fmaF32 rounds once', () => {
  const one = 1;
  const eps = 2 ** -23;
  // (1 + eps)(1 - eps) = 1 - eps^2: a separate product would round to 1; then -1 leaves -eps^2.
  assert.equal(fmaF32(one + eps, one - eps, -1), -(eps * eps));
  assert.equal(fmaF32(3, 5, 7), 22);
  assert.equal(nextUpF32(1), 1 + eps);
  assert.equal(nextDownF32(1), 1 - eps / 2);
  // A double sum landing exactly on a float32 midpoint, with a residual deciding the direction.
  const a = 1 + 2 ** -23;
  // 1 + 3*2^-24 - 2^-60 is just below the midpoint: ties-to-even on the double sum would go up.
  assert.equal(Math.fround(a + (2 ** -24 - 2 ** -60)), 1 + 2 ** -22);
  assert.equal(fmaF32(a, 1, 2 ** -24 - 2 ** -60), a);
  assert.equal(fmaF32(a, 1, 2 ** -24 + 2 ** -60), 1 + 2 ** -22);
});

test('num_transfer_tokens matches golden', () => {
  for (const [key, values] of Object.entries(golden.num_transfer_tokens)) {
    const [m, steps] = key.split('_').map(Number) as [number, number];
    assert.deepEqual(numTransferTokens(m, steps), values, key);
  }
});

test('cache refresh steps match golden', () => {
  for (const [key, values] of Object.entries(golden.cache_refresh_steps)) {
    const m = /^T(\d+)_w([\d.]+)_r(\d+)$/.exec(key);
    assert.ok(m, key);
    const T = Number(m[1]);
    const opts = { warmupRatio: Number(m[2]), refreshInterval: Number(m[3]) };
    assert.deepEqual(cacheRefreshSchedule(T, opts), values, key);
    values.forEach((v, s) =>
      assert.equal(isCacheRefreshStep(s, T, opts.warmupRatio, opts.refreshInterval), v),
    );
  }
  assert.deepEqual(
    cacheRefreshSchedule(6, { useCache: false, warmupRatio: 0, refreshInterval: 4 }),
    Array(6).fill(true),
  );
  assert.equal(isCacheRefreshStep(3, 8, 0.25, 2, false), true);
  // The golden ML-Cache cases: refresh at 0,1,2,4,6.
  assert.deepEqual(cacheRefreshSchedule(8, { warmupRatio: 0.25, refreshInterval: 2 }), [
    true,
    true,
    true,
    false,
    true,
    false,
    true,
    false,
  ]);
});

test('schedule parameter errors name the parameter', () => {
  assert.throws(
    () => keepMaskedCount(10, 8, 8),
    (e: unknown) => e instanceof DimooError && /step/.test(e.message),
  );
  assert.throws(() => keepMaskedCount(-1, 0, 8), /initialMasked/);
  assert.throws(() => numTransferTokens(4, 0), /steps/);
  assert.throws(() => isCacheRefreshStep(0, 8, 1.5, 2), /warmupRatio/);
  assert.throws(() => cacheRefreshSchedule(8, { refreshInterval: 0 }), /refreshInterval/);
});
