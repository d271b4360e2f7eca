/**
 * The optimiser's one graph, run once per parameter tensor (flattened to 1-D,
 * any length): `buildSumSquaresGraph`, g [n] -> sum(g * g) [], for the total
 * gradient norm that clip_grad_norm_ computes (per-tensor norms, then the norm
 * of those). The AdamW update itself is a single host loop
 * (training/adamw.ts): as a graph it took ~14 full passes over each tensor.
 */
import { GraphBuilder } from './onnx/builder.js';

export function buildSumSquaresGraph(): Uint8Array {
  const g = new GraphBuilder('dimoo_sumsq');
  const x = g.input('g', 'float32', ['n']);
  g.output(g.reduceSum(g.mul(x, x), [0], false), 'sumsq', 'float32', []);
  return g.toBytes('sum of squares');
}
