/**
 * Model FLOPs (multiply-adds x 2) of one transformer pass, counting the
 * matrix products only (what the GEMM limit measures): the linears of P
 * computed rows, attention of P queries over S keys, and the head rows.
 */
import type { LladaConfig } from '../src/checkpoint/config.js';

export interface PassShape {
  /** Rows computed. */
  P: number;
  /** Keys attended (S = P for a plain pass; the whole sequence for a cached one). */
  S: number;
  /** Rows through the image head (8192 columns). */
  imageRows: number;
  /** Rows through the full head. */
  textRows?: number;
}

export function passFlops(c: LladaConfig, s: PassShape, imageVocab = 8192): number {
  const d = c.dModel;
  const kv = c.nKvHeads * c.headDim;
  const h = c.mlpHiddenSize;
  const linears = 2 * s.P * (2 * d * d + 2 * d * kv + 3 * d * h);
  const attention = 2 * 2 * s.P * s.S * c.nHeads * c.headDim;
  const head = 2 * d * (s.imageRows * imageVocab + (s.textRows ?? 0) * c.embeddingSize);
  return c.nLayers * (linears + attention) + head;
}
