/**
 * The host optimiser arithmetic (training/optimizer.ts): PyTorch's arithmetic in float32.
 * Whole-model parity is checked against the golden training cases
 * (train-cli.test.ts); these check the step itself.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { adamwScalars, adamwStep, sumOfSquares } from '../src/training/optimizer.js';
import { Prng } from '../src/samplers/prng.js';

const opt = { lr: 3e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };

function randn(rng: Prng, n: number, scale: number): Float32Array {
  return Float32Array.from({ length: n }, () => (rng.uniform() - 0.5) * scale);
}

describe('adamwStep', () => {
  it('follows the AdamW formulas (float64 reference) over several steps, clipping included', () => {
    const rng = new Prng(3, 0);
    const n = 257;
    const p = randn(rng, n, 2);
    const p0 = p.slice();
    const m = new Float32Array(n);
    const v = new Float32Array(n);
    const P = Float64Array.from(p);
    const M = new Float64Array(n);
    const V = new Float64Array(n);
    for (let t = 1; t <= 5; t++) {
      const g = randn(rng, n, 0.2);
      const clip = t === 3 ? 0.25 : 1;
      adamwStep(p, m, v, g, adamwScalars(opt, t, clip));
      for (let i = 0; i < n; i++) {
        const gc = g[i]! * clip;
        P[i] = P[i]! * (1 - opt.lr * opt.weightDecay);
        M[i] = opt.beta1 * M[i]! + (1 - opt.beta1) * gc;
        V[i] = opt.beta2 * V[i]! + (1 - opt.beta2) * gc * gc;
        const den = Math.sqrt(V[i]!) / Math.sqrt(1 - opt.beta2 ** t) + opt.eps;
        P[i] = P[i]! - (opt.lr / (1 - opt.beta1 ** t)) * (M[i]! / den);
      }
    }
    let worst = 0;
    for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(p[i]! - P[i]!));
    assert.ok(worst < 1e-6, `largest difference from the float64 reference: ${worst}`);
    // The comparison means something only if the weights moved well beyond it.
    assert.ok(p.every((x, i) => Math.abs(x - p0[i]!) > 1e-4));
  });

  it('leaves a weight with zero gradient and zero moments exactly as it was (no decay)', () => {
    const p = Float32Array.of(0.123, -4.5, 1e-30);
    const before = p.slice();
    const z = () => new Float32Array(3);
    adamwStep(p, z(), z(), z(), adamwScalars({ ...opt, weightDecay: 0 }, 7, 1));
    assert.deepEqual(p, before);
  });

  it('refuses tensors of different lengths', () => {
    const a = new Float32Array(4);
    assert.throws(
      () => adamwStep(a, a, a, new Float32Array(3), adamwScalars(opt, 1, 1)),
      /lengths differ.*g 3/,
    );
  });
});

describe('sumOfSquares', () => {
  it('is the sum of the squares', () => {
    assert.equal(sumOfSquares(Float32Array.of(3, -4, 0.5)), 25.25);
    assert.equal(sumOfSquares(new Float32Array(0)), 0);
  });
});
