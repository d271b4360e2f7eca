import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Prng } from '../src/samplers/prng.js';
import { DimooError } from '../src/errors.js';

test('xoshiro128** core matches the reference sequence for state (1, 2, 3, 4)', () => {
  const p = Prng.fromState(1, 2, 3, 4);
  const got = Array.from({ length: 8 }, () => p.nextUint32());
  assert.deepEqual(
    got,
    [11520, 0, 5927040, 70819200, 2031721883, 1637235492, 1287239034, 3734860849],
  );
});

test('seeded streams are pinned (same numbers on every machine)', () => {
  const p = new Prng(42);
  assert.deepEqual(
    [p.nextUint32(), p.nextUint32(), p.nextUint32()],
    [2121865826, 2993806264, 1342924406],
  );
  assert.equal(p.uniform(), 0.25377705279129226);
  assert.equal(new Prng(2 ** 40 + 3).nextUint32(), 3609777551);
  // fork(label) is the same stream as constructing with that label, and does not advance the parent
  const root = new Prng(42);
  assert.equal(root.fork(7).nextUint32(), 373796978);
  assert.equal(new Prng(42, 7).nextUint32(), 373796978);
  assert.equal(root.nextUint32(), 2121865826);
});

test('streams differ by seed, label and label path', () => {
  const first = (p: Prng): number => p.nextUint32();
  const vals = [
    first(new Prng(0)),
    first(new Prng(1)),
    first(new Prng(0, 0)),
    first(new Prng(0, 1)),
    first(new Prng(0, 0, 0)),
    first(new Prng(0).fork(1, 2)),
    first(new Prng(0).fork(2, 1)),
  ];
  assert.equal(new Set(vals).size, vals.length);
});

test('uniform is in (0, 1) and roughly uniform; gumbel has the right mean', () => {
  const p = new Prng(123);
  let sum = 0;
  let gsum = 0;
  const n = 200000;
  for (let i = 0; i < n; i++) {
    const u = p.uniform();
    assert.ok(u > 0 && u < 1);
    sum += u;
    gsum += p.gumbel();
  }
  assert.ok(Math.abs(sum / n - 0.5) < 0.005);
  // E[Gumbel(0,1)] = Euler-Mascheroni constant
  assert.ok(Math.abs(gsum / n - 0.5772156649) < 0.01);
});

test('randint covers [lo, hi) evenly and checks its range', () => {
  const p = new Prng(9);
  const counts = new Array<number>(6).fill(0);
  for (let i = 0; i < 60000; i++) {
    const v = p.randint(-2, 4);
    assert.ok(Number.isInteger(v) && v >= -2 && v < 4);
    counts[v + 2]!++;
  }
  for (const c of counts) assert.ok(Math.abs(c - 10000) < 500, String(counts));
  assert.throws(() => p.randint(3, 3), DimooError);
});

test('bad seeds and labels are rejected with the parameter named', () => {
  assert.throws(() => new Prng(-1), /seed/);
  assert.throws(() => new Prng(1.5), /seed/);
  assert.throws(() => new Prng(1, -3), /stream label/);
  assert.throws(() => new Prng(1).fork(2 ** 32), /fork label/);
});

test('shuffle: an in-place permutation, one randint(0, i + 1) per position from the end', () => {
  const list = Array.from({ length: 50 }, (_, i) => i);
  const out = new Prng(5).shuffle(list);
  assert.equal(out, list, 'in place');
  assert.deepEqual(
    [...out].sort((a, b) => a - b),
    Array.from({ length: 50 }, (_, i) => i),
  );
  // The same draws by hand: what resumable data orders rely on.
  const p = new Prng(5);
  const want = Array.from({ length: 50 }, (_, i) => i);
  for (let i = want.length - 1; i > 0; i--) {
    const j = p.randint(0, i + 1);
    [want[i], want[j]] = [want[j]!, want[i]!];
  }
  assert.deepEqual(out, want);
  assert.notDeepEqual(
    out,
    [...out].sort((a, b) => a - b),
  );
});
