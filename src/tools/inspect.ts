/**
 * Summary of a checkpoint folder as plain data (the CLI formats it):
 * architecture, parameter counts, dtypes, disk usage and rough memory needs.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openCheckpoint } from '../checkpoint/folder.js';
import { countParameters, type LladaConfig } from '../checkpoint/config.js';
import { numel } from '../checkpoint/safetensors.js';

export interface CheckpointInspection {
  dir: string;
  /** The config fields the report shows (names and types are LladaConfig's own). */
  config: Pick<
    LladaConfig,
    | 'dModel'
    | 'nHeads'
    | 'nKvHeads'
    | 'headDim'
    | 'nLayers'
    | 'mlpHiddenSize'
    | 'vocabSize'
    | 'embeddingSize'
    | 'maxSequenceLength'
    | 'ropeTheta'
    | 'rmsNormEps'
    | 'weightTying'
    | 'includeBias'
    | 'includeQkvBias'
    | 'maskTokenId'
    | 'eosTokenId'
    | 'padTokenId'
  >;
  parameters: {
    total: number;
    embedding: number;
    head: number;
    perLayer: number;
    layers: number;
    finalNorm: number;
  };
  tensorCount: number;
  /** Number of weight tensors per dtype, e.g. { BF16: 21 }. */
  dtypes: Record<string, number>;
  /** Tensor bytes per dtype as stored. */
  bytesByDtype: Record<string, number>;
  disk: {
    /** Sizes of the weight files (shards) on disk. */
    weightFileBytes: number;
    /** Everything in the folder, vqvae/ and tokenizer included. */
    folderBytes: number;
    weightFiles: number;
  };
  hasVqvae: boolean;
  hasTokenizerConfig: boolean;
  /**
   * Approximate bytes to hold the language-model weights at each precision.
   * int8: one byte per matrix element + an f32 scale per output row;
   * int4: half a byte + an f16 scale per 32 elements. Norms and biases stay f32
   * in the quantized variants. Activations and KV are not included.
   */
  memory: { fp32: number; bf16: number; fp16: number; int8: number; int4: number };
}

function folderSize(dir: string): number {
  let total = 0;
  for (const ent of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, ent.name);
    if (ent.isDirectory()) total += folderSize(p);
    else if (ent.isFile()) total += fs.statSync(p).size;
  }
  return total;
}

export function inspectCheckpoint(dir: string): CheckpointInspection {
  const ck = openCheckpoint(dir);
  const c = ck.config;
  const dtypes: Record<string, number> = {};
  const bytesByDtype: Record<string, number> = {};
  let int8 = 0;
  let int4 = 0;
  let elems = 0;
  for (const t of ck.weights.values()) {
    dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + 1;
    bytesByDtype[t.dtype] = (bytesByDtype[t.dtype] ?? 0) + t.byteLength;
    const n = numel(t.shape);
    elems += n;
    if (t.shape.length === 2) {
      int8 += n + t.shape[0]! * 4;
      int4 += Math.ceil(n / 2) + Math.ceil(n / 32) * 2;
    } else {
      int8 += n * 4;
      int4 += n * 4;
    }
  }
  const weightFileBytes = ck.weightFiles.reduce((s, f) => s + fs.statSync(f).size, 0);
  return {
    dir: ck.dir,
    config: {
      dModel: c.dModel,
      nHeads: c.nHeads,
      nKvHeads: c.nKvHeads,
      headDim: c.headDim,
      nLayers: c.nLayers,
      mlpHiddenSize: c.mlpHiddenSize,
      vocabSize: c.vocabSize,
      embeddingSize: c.embeddingSize,
      maxSequenceLength: c.maxSequenceLength,
      ropeTheta: c.ropeTheta,
      rmsNormEps: c.rmsNormEps,
      weightTying: c.weightTying,
      includeBias: c.includeBias,
      includeQkvBias: c.includeQkvBias,
      maskTokenId: c.maskTokenId,
      eosTokenId: c.eosTokenId,
      padTokenId: c.padTokenId,
    },
    parameters: countParameters(c),
    tensorCount: ck.weights.size,
    dtypes,
    bytesByDtype,
    disk: { weightFileBytes, folderBytes: folderSize(ck.dir), weightFiles: ck.weightFiles.length },
    hasVqvae: ck.vqvaeDir !== undefined,
    hasTokenizerConfig: ck.tokenizerConfigPath !== undefined,
    memory: { fp32: elems * 4, bf16: elems * 2, fp16: elems * 2, int8, int4 },
  };
}
