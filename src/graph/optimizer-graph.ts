/**
 * Optimiser graphs, run once per parameter tensor (flattened to 1-D, any length):
 *
 *  - `buildSumSquaresGraph`: g [n] -> sum(g * g) [], for the total gradient norm
 *    that clip_grad_norm_ computes (per-tensor norms, then the norm of those);
 *  - `buildAdamWGraph`: one AdamW step with PyTorch's single-tensor arithmetic,
 *    clipping included:
 *      g  = g * clip_coef
 *      p  = p * (1 - lr * wd)                    (decoupled weight decay)
 *      m  = m + (1 - beta1) * (g - m)            (lerp)
 *      v  = v * beta2 + (1 - beta2) * g * g
 *      p  = p - step_size * m / (sqrt(v) / sqrt(1 - beta2^t) + eps),  step_size = lr / (1 - beta1^t)
 *    The scalars come in as inputs (computed in float64 on the host, as PyTorch does in Python);
 *    products are grouped as PyTorch's addcmul/addcdiv kernels group them.
 *    The engine binds p_out, m_out and v_out to the very buffers it feeds as p, m and v
 *    (training/engine.ts): keep every use of an old value upstream of the node that
 *    writes its output, elementwise.
 */
import { GraphBuilder } from './onnx/builder.js';

export const ADAMW_SCALARS = [
  'clip_coef',
  'decay',
  'one_minus_beta1',
  'beta2',
  'one_minus_beta2',
  'bc2_sqrt',
  'eps',
  'neg_step_size',
] as const;
export type AdamWScalar = (typeof ADAMW_SCALARS)[number];

export function buildSumSquaresGraph(): Uint8Array {
  const g = new GraphBuilder('dimoo_sumsq');
  const x = g.input('g', 'float32', ['n']);
  g.output(g.reduceSum(g.mul(x, x), [0], false), 'sumsq', 'float32', []);
  return g.toBytes('sum of squares');
}

export function buildAdamWGraph(): Uint8Array {
  const g = new GraphBuilder('dimoo_adamw');
  const p = g.input('p', 'float32', ['n']);
  const m = g.input('m', 'float32', ['n']);
  const v = g.input('v', 'float32', ['n']);
  const grad = g.input('g', 'float32', ['n']);
  const s = Object.fromEntries(ADAMW_SCALARS.map((k) => [k, g.input(k, 'float32', [])])) as Record<
    AdamWScalar,
    ReturnType<typeof g.input>
  >;
  const gc = g.mul(grad, s.clip_coef);
  const pDecayed = g.mul(p, s.decay);
  const m1 = g.add(m, g.mul(s.one_minus_beta1, g.sub(gc, m)));
  const v1 = g.add(g.mul(v, s.beta2), g.mul(g.mul(s.one_minus_beta2, gc), gc));
  const denom = g.add(g.div(g.sqrt(v1), s.bc2_sqrt), s.eps);
  const p1 = g.add(pDecayed, g.div(g.mul(s.neg_step_size, m1), denom));
  g.output(p1, 'p_out', 'float32', ['n']);
  g.output(m1, 'm_out', 'float32', ['n']);
  g.output(v1, 'v_out', 'float32', ['n']);
  return g.toBytes('AdamW step');
}
