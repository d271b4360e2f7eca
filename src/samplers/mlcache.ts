/**
 * ML-Cache recompute selection (image generator, `use_cache=True`).
 *
 * After a step whose successor is a partial (cached) step, the original takes,
 * per CFG branch, the max over the image-vocabulary slice of the returned
 * logits at EVERY position of that branch's sequence (prompt included, stale
 * cached rows included), and marks for recomputation the positions whose max
 * is <= torch.quantile(maxes, 1 - cacheRatio) (linear interpolation). All
 * other positions reuse cached K/V and logits at the next step.
 *
 *   DEFAULT_ML_CACHE                          original defaults (cache 0.9, warm-up 0.3, refresh 5)
 *   torchQuantile(values, q)                  float32 torch.quantile(..., q), 'linear'
 *   recomputeMask(rowMax, cacheRatio)         1 = recompute this position next step
 *   recomputePositions(rowMax, cacheRatio)    the same as ascending positions
 *   imageRowMax(logits, rows, width, start, count)  per-row max over a vocabulary slice
 *
 * torch.quantile on a float32 tensor works in float32: q is a float32
 * tensor, rank = f32(q * (n - 1)), weight = f32(rank - floor(rank)), and the
 * result is `lerp(below, above, weight)` with torch's two-sided lerp formula.
 */
import { DimooError } from '../errors.js';

const f32 = Math.fround;

/** Original defaults (inference/inference_t2i.py and generate_image's signature). */
export const DEFAULT_ML_CACHE = Object.freeze({
  cacheRatio: 0.9,
  warmupRatio: 0.3,
  refreshInterval: 5,
});

/** torch.lerp for float32: weight < 0.5 interpolates from `a`, otherwise from `b`. */
function lerpF32(a: number, b: number, w: number): number {
  const diff = f32(b - a);
  return Math.abs(w) < 0.5 ? f32(a + f32(w * diff)) : f32(b - f32(diff * f32(1 - w)));
}

/**
 * torch.quantile(values, q) for a 1-D float32 tensor, interpolation 'linear'.
 * A NaN anywhere gives NaN, as in torch.
 */
export function torchQuantile(values: Float32Array, q: number): number {
  if (values.length === 0)
    throw new DimooError('torchQuantile needs at least one value', 'E_PARAM');
  if (!(q >= 0 && q <= 1))
    throw new DimooError(`quantile q must be in [0, 1], got ${q}`, 'E_PARAM');
  const sorted = Float32Array.from(values).sort(); // numeric; NaN sorts last
  const last = sorted.length - 1;
  if (Number.isNaN(sorted[last]!)) return NaN;
  const rank = f32(f32(q) * last);
  const below = Math.trunc(rank);
  const above = Math.ceil(rank);
  const weight = f32(rank - below);
  return lerpF32(sorted[below]!, sorted[above]!, weight);
}

function checkRatio(cacheRatio: number): void {
  if (!(cacheRatio >= 0 && cacheRatio <= 1)) {
    throw new DimooError(`cacheRatio must be in [0, 1], got ${cacheRatio}`, 'E_PARAM');
  }
}

/**
 * Positions to recompute at the next (partial) step: rowMax[i] <= quantile(rowMax, 1 - cacheRatio).
 * `rowMax` covers every position of the branch's sequence. Returns 1/0 per position.
 */
export function recomputeMask(rowMax: Float32Array, cacheRatio: number): Uint8Array {
  checkRatio(cacheRatio);
  // compute_ratio = 1 - cache_ratio is a Python double, cast to float32 by torch.
  const threshold = torchQuantile(rowMax, 1 - cacheRatio);
  const mask = new Uint8Array(rowMax.length);
  for (let i = 0; i < rowMax.length; i++) mask[i] = rowMax[i]! <= threshold ? 1 : 0;
  return mask;
}

/** recomputeMask as ascending position indices. */
export function recomputePositions(rowMax: Float32Array, cacheRatio: number): Int32Array {
  const mask = recomputeMask(rowMax, cacheRatio);
  const out: number[] = [];
  for (let i = 0; i < mask.length; i++) if (mask[i]) out.push(i);
  return Int32Array.from(out);
}

/**
 * Max over columns [start, start + count) of each of `rows` rows of width
 * `width` (e.g. the image slice [126356, 126356 + 8192) of full logits rows).
 */
export function imageRowMax(
  logits: Float32Array,
  rows: number,
  width: number,
  start: number,
  count: number,
): Float32Array {
  if (logits.length !== rows * width) {
    throw new DimooError(
      `logits has ${logits.length} values, expected rows*width = ${rows * width}`,
      'E_PARAM',
    );
  }
  if (start < 0 || count <= 0 || start + count > width) {
    throw new DimooError(
      `slice [${start}, ${start + count}) is outside rows of width ${width}`,
      'E_PARAM',
    );
  }
  const out = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let m = -Infinity;
    const base = r * width + start;
    for (let j = 0; j < count; j++) {
      const v = logits[base + j]!;
      if (v > m || Number.isNaN(v)) m = v; // torch.max propagates NaN
      if (Number.isNaN(m)) break;
    }
    out[r] = m;
  }
  return out;
}

/**
 * ML-Cache for block-wise text decoding (our variant; the original has none).
 * At a partial step inside a block, recompute the still-masked positions whose
 * last computed confidence is <= quantile(confidences, 1 - cacheRatio) (the
 * least sure predictions; the others keep their cached prediction and K/V),
 * plus `changed`: positions committed at the previous step, whose token, and
 * so whose K/V, changed. Returns ascending, distinct positions.
 */
export function textRecomputePositions(
  masked: ArrayLike<number>,
  confidence: Float32Array,
  cacheRatio: number,
  changed: ArrayLike<number> = [],
): Int32Array {
  checkRatio(cacheRatio);
  if (confidence.length !== masked.length) {
    throw new DimooError(
      `confidence has ${confidence.length} values for ${masked.length} masked positions`,
      'E_PARAM',
    );
  }
  const out = new Set<number>(Array.from(changed));
  if (masked.length > 0) {
    const threshold = torchQuantile(confidence, 1 - cacheRatio);
    for (let i = 0; i < masked.length; i++) if (confidence[i]! <= threshold) out.add(masked[i]!);
  }
  return Int32Array.from(out).sort();
}
