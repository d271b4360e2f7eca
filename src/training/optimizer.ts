/**
 * The optimiser step on the host: clip_grad_norm_'s sum of squares and one
 * AdamW step over a flat float32 tensor, each a single pass.
 *
 * AdamW, in place:
 *
 * The arithmetic is PyTorch's single-tensor AdamW (clipping folded in):
 *   g = g * clip_coef
 *   p = p * (1 - lr * wd)                     (decoupled weight decay)
 *   m = m + (1 - beta1) * (g - m)             (lerp)
 *   v = v * beta2 + (1 - beta2) * g * g
 *   p = p - step_size * m / (sqrt(v) / sqrt(1 - beta2^t) + eps),  step_size = lr / (1 - beta1^t)
 * with every operation rounded to float32 as PyTorch's float32 kernels round
 * it (Math.fround after each op: double rounding is exact for + - * / sqrt of
 * float32 operands), and the scalars computed in float64 first, as PyTorch
 * does in Python.
 *
 * Why here and not an ONNX graph: ONNX Runtime's CPU provider has no fused
 * optimiser, so the same step as a graph is ~14 elementwise nodes, each a
 * full pass over the tensor (memory-bound: ~12% of a training step on the
 * shapes model). One host loop reads p, m, v, g once and writes p, m, v once.
 */

export interface AdamWScalars {
  clipCoef: number;
  /** 1 - lr * weight_decay. */
  decay: number;
  oneMinusBeta1: number;
  beta2: number;
  oneMinusBeta2: number;
  /** sqrt(1 - beta2^t). */
  bc2Sqrt: number;
  eps: number;
  /** -lr / (1 - beta1^t). */
  negStepSize: number;
}

/** The step-t scalars (t counts from 1) in float64, as PyTorch computes them. */
export function adamwScalars(
  o: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number },
  t: number,
  clipCoef: number,
): AdamWScalars {
  return {
    clipCoef,
    decay: 1 - o.lr * o.weightDecay,
    oneMinusBeta1: 1 - o.beta1,
    beta2: o.beta2,
    oneMinusBeta2: 1 - o.beta2,
    bc2Sqrt: Math.sqrt(1 - o.beta2 ** t),
    eps: o.eps,
    negStepSize: -(o.lr / (1 - o.beta1 ** t)),
  };
}

/**
 * sum(g * g) for clip_grad_norm_'s per-tensor norm, accumulated in float64
 * (PyTorch's float32 reduction is within 1e-6 relative of it at these sizes;
 * as an ONNX graph, Mul + ReduceSum wrote a full-size intermediate: ~0.5 s a
 * step on the small preset's 102M values).
 */
export function sumOfSquares(g: Float32Array): number {
  let s = 0;
  for (let i = 0; i < g.length; i++) s += g[i]! * g[i]!;
  return s;
}

/** Updates p, m and v in place from the gradient g (all the same length). */
export function adamwStep(
  p: Float32Array,
  m: Float32Array,
  v: Float32Array,
  g: Float32Array,
  s: AdamWScalars,
): void {
  const n = p.length;
  if (m.length !== n || v.length !== n || g.length !== n)
    throw new Error(
      `adamwStep: lengths differ (p ${n}, m ${m.length}, v ${v.length}, g ${g.length})`,
    );
  const f = Math.fround;
  const cc = f(s.clipCoef);
  const dec = f(s.decay);
  const omb1 = f(s.oneMinusBeta1);
  const b2 = f(s.beta2);
  const omb2 = f(s.oneMinusBeta2);
  const bc = f(s.bc2Sqrt);
  const eps = f(s.eps);
  const nss = f(s.negStepSize);
  for (let i = 0; i < n; i++) {
    const gc = f(g[i]! * cc);
    const mi = m[i]!;
    const m1 = f(mi + f(omb1 * f(gc - mi)));
    const v1 = f(f(v[i]! * b2) + f(f(omb2 * gc) * gc));
    const den = f(f(Math.sqrt(v1) / bc) + eps);
    p[i] = f(p[i]! * dec) + f(f(nss * m1) / den);
    m[i] = m1;
    v[i] = v1;
  }
}
