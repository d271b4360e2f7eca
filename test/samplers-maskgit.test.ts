import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MASKED, MaskGitState, maskGitStep, softmaxProbF32 } from '../src/samplers/maskgit.js';
import { guideImageToImage, guideText, guideTextToImage } from '../src/samplers/guidance.js';
import { Prng } from '../src/samplers/prng.js';
import { DimooError } from '../src/errors.js';

const f = Math.fround;

/** rows x V logits with row r peaked at code[r] with height h[r]. */
function peaked(V: number, codes: number[], heights: number[]): Float32Array {
  const out = new Float32Array(codes.length * V);
  codes.forEach((c, r) => (out[r * V + c] = heights[r]!));
  return out;
}

test('greedy step: argmax codes, softmax probs, k lowest-confidence rows re-masked', () => {
  const V = 8;
  const logits = peaked(V, [3, 0, 7, 5], [4, 1, 6, 2]);
  const r = maskGitStep(logits, 4, V, 2);
  assert.deepEqual(Array.from(r.codes), [3, 0, 7, 5]);
  const p = (h: number): number => f(Math.exp(h) / (Math.exp(h) + 7));
  assert.deepEqual(Array.from(r.probs), [p(4), p(1), p(6), p(2)]);
  assert.deepEqual(
    Array.from(r.confidence),
    [p(4), p(1), p(6), p(2)].map((x) => f(Math.log(x))),
  );
  // two lowest confidences: rows 1 and 3
  assert.deepEqual(Array.from(r.remask), [0, 1, 0, 1]);
  assert.equal(r.k, 2);
  assert.equal(r.remaskCount, 2);
});

test('argmax ties pick the first index; keepN is clamped to rows - 1', () => {
  const V = 4;
  const logits = Float32Array.from([1, 5, 5, 0, 2, 2, 2, 2]);
  const r = maskGitStep(logits, 2, V, 10);
  assert.deepEqual(Array.from(r.codes), [1, 0]);
  assert.equal(r.k, 1);
  assert.equal(r.remaskCount, 1);
  assert.deepEqual(Array.from(r.remask), [0, 1]); // uniform row is less confident
});

test('a tie at the cut leaves fewer than k masked (strictly-below semantics)', () => {
  const V = 4;
  // rows 0,1,2 identical confidence, row 3 most confident; k = 2 -> cut = 2nd smallest = tie value
  const logits = peaked(V, [0, 1, 2, 3], [1, 1, 1, 5]);
  const r = maskGitStep(logits, 4, V, 2);
  assert.equal(r.k, 2);
  assert.equal(r.remaskCount, 0);
  // k = 0 (last step) never re-masks
  assert.equal(maskGitStep(peaked(V, [0, 1], [1, 2]), 2, V, 0).remaskCount, 0);
});

test('softmaxProbF32 is stable for large logits', () => {
  const row = Float32Array.from([1000, 999, -1000]);
  assert.equal(softmaxProbF32(row, 0, 3, 0), f(1 / (1 + Math.exp(-1))));
});

test('sampling at temperature tau draws codes from softmax(logits / tau); probs are at temperature 1', () => {
  const row = [2, 0.5, -1, 1.5, 0, -3, 1, 0.25];
  const V = row.length;
  const n = 40000;
  for (const tau of [1, 0.5, 2]) {
    const logits = new Float32Array(n * V);
    for (let r = 0; r < n; r++) logits.set(row, r * V);
    const res = maskGitStep(logits, n, V, 0, { temperature: tau, rng: new Prng(7) });
    const count = new Array<number>(V).fill(0);
    res.codes.forEach((c) => count[c]!++);
    const z = row.reduce((s, l) => s + Math.exp(Math.fround(l) / tau), 0);
    const z1 = row.reduce((s, l) => s + Math.exp(l), 0);
    row.forEach((l, c) => {
      const p = Math.exp(Math.fround(l) / tau) / z;
      const sigma = Math.sqrt((p * (1 - p)) / n);
      assert.ok(
        Math.abs(count[c]! / n - p) < 5 * sigma + 1e-9,
        `tau ${tau} code ${c}: ${count[c]! / n} vs ${p}`,
      );
    });
    res.codes.forEach((c, r) => assert.ok(Math.abs(res.probs[r]! - Math.exp(row[c]!) / z1) < 1e-6));
  }
});

test('MaskGitState decodes a grid in T steps, keeping known cells (inpainting)', () => {
  const V = 16;
  const cells = [5, MASKED, MASKED, 7, MASKED, MASKED, MASKED, 9];
  const st = new MaskGitState({ cells, timesteps: 4, codebookSize: V });
  assert.equal(st.initialMasked, 5);
  const seen: number[][] = [];
  while (!st.done) {
    const m = Array.from(st.maskedCells());
    seen.push(m);
    // Cell i wants code i, confidence increasing with the cell index.
    const logits = peaked(
      V,
      m,
      m.map((i) => 1 + i),
    );
    const rec = st.step(logits);
    assert.equal(rec.maskedBefore, m.length);
    assert.equal(rec.remaskK, Math.min(rec.keepNSchedule, m.length - 1));
  }
  assert.equal(st.stepIndex <= 4, true);
  assert.deepEqual(seen[0], [1, 2, 4, 5, 6]);
  // keep_n for n=5, T=4: floor(5*cos(pi/8))=4, floor(5*cos(pi/4))=3, floor(5*cos(3pi/8))=1, 0
  assert.deepEqual(
    st.records.map((r) => r.keepNSchedule),
    [4, 3, 1, 0].slice(0, st.records.length),
  );
  // Lowest-index (least confident) cells are re-masked first.
  assert.deepEqual(Array.from(st.records[0]!.remasked), [1, 2, 4, 5]);
  assert.deepEqual(Array.from(st.codes()), [5, 1, 2, 7, 4, 5, 6, 9]);
  assert.throws(() => st.step(new Float32Array(0)), DimooError);
});

test('MaskGitState with temperature is seeded and reproducible', () => {
  const V = 32;
  const run = (seed: number): number[] => {
    const st = MaskGitState.allMasked(6, {
      timesteps: 3,
      codebookSize: V,
      temperature: 1,
      rng: new Prng(seed),
    });
    while (!st.done) {
      const n = st.maskedCells().length;
      st.step(new Float32Array(n * V)); // flat logits: codes come from the noise only
    }
    return Array.from(st.codes());
  };
  assert.deepEqual(run(1), run(1));
  assert.notDeepEqual(run(1), run(2));
  assert.throws(() => MaskGitState.allMasked(2, { timesteps: 2, temperature: 1 }), /rng/);
});

test('MaskGitState validates its inputs', () => {
  assert.throws(() => new MaskGitState({ cells: [0, 8192], timesteps: 2 }), /cells\[1\]/);
  assert.throws(() => new MaskGitState({ cells: [0.5], timesteps: 2 }), /cells\[0\]/);
  assert.throws(() => MaskGitState.allMasked(2, { timesteps: 0 }), /timesteps/);
  const st = MaskGitState.allMasked(2, { timesteps: 2, codebookSize: 4 });
  assert.throws(() => st.step(new Float32Array(7)), /guidedLogits/);
  const done = new MaskGitState({ cells: [1, 2], timesteps: 3, codebookSize: 4 });
  assert.equal(done.done, true);
});

test('guidance formulas round every operation to float32 in the original order', () => {
  const cond = Float32Array.from([1.1, -3.3, 7.25, 1e-3]);
  const unc = Float32Array.from([0.7, 2.2, -1.5, 3.0]);
  const unc2 = Float32Array.from([0.3, -0.2, 5.5, -2.0]);
  const t2i = guideTextToImage(cond, unc, 4.3, new Float32Array(4));
  cond.forEach((c, i) => assert.equal(t2i[i], f(f(f(1 + 4.3) * c) - f(f(4.3) * unc[i]!))));
  const i2i = guideImageToImage(cond, unc, unc2, 2.5, 4.0, new Float32Array(4));
  cond.forEach((c, i) =>
    assert.equal(i2i[i], f(f(c + f(2.5 * f(c - unc[i]!))) + f(4 * f(c - unc2[i]!)))),
  );
  const txt = guideText(cond, unc, 1.7, new Float32Array(4));
  cond.forEach((c, i) => assert.equal(txt[i], f(unc[i]! + f(f(2.7) * f(c - unc[i]!)))));
  // in place by default
  const a = Float32Array.from([2]);
  guideTextToImage(a, Float32Array.from([1]), 4);
  assert.equal(a[0], 6);
  assert.throws(() => guideTextToImage(a, new Float32Array(2), 1), /uncond/);
  assert.throws(() => guideImageToImage(a, a, a, NaN, 1), /cfgScale/);
});
