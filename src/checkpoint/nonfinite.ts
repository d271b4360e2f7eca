/**
 * NaN/Inf detection. Scanning every weight at every step would cost as much
 * as the model itself, so outputs are checked where they are small (logits of
 * the rows a step samples, decoded pixels) and the weights are scanned only
 * once such a check fails, to say which tensor is to blame.
 */
import { DimooError } from '../errors.js';
import { numel, readTensorFloat32, type TensorInfo } from './safetensors.js';

/** Index of the first NaN or ±Inf in `a`, or -1. */
export function firstNonFinite(a: ArrayLike<number>): number {
  for (let i = 0; i < a.length; i++) {
    const v = a[i]!;
    // v - v is 0 for every finite v, NaN for NaN and ±Inf.
    if (v - v !== 0) return i;
  }
  return -1;
}

export interface NonFiniteWeight {
  tensor: TensorInfo;
  index: number;
  value: number;
}

const FLOAT_DTYPES = new Set(['F16', 'BF16', 'F32', 'F64']);
const CHUNK = 1 << 20;

/** The first floating-point weight holding NaN/Inf (read in chunks; quantized blocks are skipped). */
export function findNonFiniteWeight(tensors: Iterable<TensorInfo>): NonFiniteWeight | undefined {
  for (const t of tensors) {
    if (!FLOAT_DTYPES.has(t.dtype)) continue;
    const n = numel(t.shape);
    for (let start = 0; start < n; start += CHUNK) {
      const part = readTensorFloat32(t, start, Math.min(CHUNK, n - start));
      const i = firstNonFinite(part);
      if (i >= 0) return { tensor: t, index: start + i, value: part[i]! };
    }
  }
  return undefined;
}

/** " (tensor X in FILE holds NaN at element i)", or a note that no weight does. */
export function blameWeights(tensors: Iterable<TensorInfo>): string {
  const bad = findNonFiniteWeight(tensors);
  if (!bad) return ' (every weight is finite)';
  return ` (tensor "${bad.tensor.name}" in ${bad.tensor.file} holds ${bad.value} at element ${bad.index})`;
}

export const E_NONFINITE = 'E_NONFINITE';

/** Thrown by the engines; the facade adds which weight is to blame. */
export class NonFiniteError extends DimooError {
  constructor(message: string) {
    super(message, E_NONFINITE);
  }
}
