/**
 * LLaDA `config.json` (the schema DiMOO inherits) -> typed, validated config.
 * Only the architecture this runtime implements is accepted (llama blocks,
 * RMSNorm, SwiGLU/SiLU, RoPE, no ALiBi); anything else is rejected up front
 * with the field named, rather than silently computing something different.
 */
import * as fs from 'node:fs';
import { DimooError } from '../errors.js';

export interface LladaConfig {
  dModel: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  nLayers: number;
  mlpHiddenSize: number;
  vocabSize: number;
  /** Rows of the embedding and of the output head (logits width). */
  embeddingSize: number;
  ropeTheta: number;
  rmsNormEps: number;
  maxSequenceLength: number;
  weightTying: boolean;
  includeBias: boolean;
  includeQkvBias: boolean;
  /** Norm layers carry a bias (bias_for_layer_norm, defaulting to include_bias). */
  normBias: boolean;
  maskTokenId: number;
  eosTokenId: number;
  padTokenId: number;
  blockType: 'llama';
  layerNormType: 'rms';
  activationType: 'silu';
  /** The parsed JSON as found, for fields this runtime does not interpret. */
  raw: Record<string, unknown>;
}

const E = 'E_CONFIG';

// LLaDA's ids, used only when a config omits them.
export const DEFAULT_MASK_TOKEN_ID = 126336;
export const DEFAULT_EOS_TOKEN_ID = 126081;

/**
 * Upper bounds far above any LLaDA/DiMOO model (8B: d_model 4096, 32 layers,
 * mlp 12288, 126k vocabulary), so a corrupted size fails at parse time instead
 * of sizing allocations. The weights are then checked against every size.
 */
export const SIZE_LIMITS: Readonly<Record<string, number>> = {
  d_model: 65_536,
  n_heads: 4_096,
  n_kv_heads: 4_096,
  n_layers: 4_096,
  mlp_hidden_size: 1 << 20,
  vocab_size: 1 << 24,
  embedding_size: 1 << 24,
  max_sequence_length: 1 << 24,
  block_group_size: 4_096,
};

export function parseLladaConfig(raw: unknown, source = 'config.json'): LladaConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new DimooError(`${source}: must be a JSON object`, E);
  }
  const r = raw as Record<string, unknown>;
  const bad = (field: string, msg: string): DimooError =>
    new DimooError(`${source}: field "${field}" ${msg}`, E);

  const has = (f: string): boolean => r[f] !== undefined && r[f] !== null;
  const posInt = (f: string): number => {
    const v = r[f];
    if (v === undefined || v === null) throw bad(f, 'is required (a positive integer)');
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) {
      throw bad(f, `must be a positive integer, got ${JSON.stringify(v)}`);
    }
    const limit = SIZE_LIMITS[f];
    if (limit !== undefined && v > limit) {
      // Caught here, before anything sized by it (tensor lists, graphs) is built.
      throw bad(f, `= ${v} is beyond any real model (at most ${limit}); config.json corrupted?`);
    }
    return v;
  };
  const optPosInt = (f: string): number | undefined => (has(f) ? posInt(f) : undefined);
  const nonNegInt = (f: string, dflt: number): number => {
    if (!has(f)) return dflt;
    const v = r[f];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
      throw bad(f, `must be a non-negative integer, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const posNum = (f: string, dflt: number): number => {
    if (!has(f)) return dflt;
    const v = r[f];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
      throw bad(f, `must be a positive number, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const bool = (f: string, dflt: boolean): boolean => {
    if (!has(f)) return dflt;
    const v = r[f];
    if (typeof v !== 'boolean') throw bad(f, `must be true or false, got ${JSON.stringify(v)}`);
    return v;
  };
  const oneOf = <T extends string>(f: string, allowed: T, dflt?: T): T => {
    const v = has(f) ? r[f] : dflt;
    if (v === undefined) throw bad(f, `is required ("${allowed}")`);
    if (v !== allowed)
      throw bad(f, `= ${JSON.stringify(v)} is unsupported (only "${allowed}" is implemented)`);
    return allowed;
  };
  const mustBe = (f: string, want: boolean, dflt: boolean, why: string): void => {
    if (bool(f, dflt) !== want) throw bad(f, `= ${!want} is unsupported (${why})`);
  };

  const dModel = posInt('d_model');
  const nHeads = posInt('n_heads');
  const nLayers = posInt('n_layers');
  const vocabSize = posInt('vocab_size');
  const maxSequenceLength = posInt('max_sequence_length');

  let nKvHeads: number;
  if (bool('multi_query_attention', false)) {
    nKvHeads = 1;
    if (has('n_kv_heads') && r.n_kv_heads !== 1) {
      throw bad(
        'n_kv_heads',
        `= ${JSON.stringify(r.n_kv_heads)} contradicts multi_query_attention = true (which means 1)`,
      );
    }
  } else {
    nKvHeads = optPosInt('n_kv_heads') ?? nHeads;
  }
  if (dModel % nHeads !== 0)
    throw bad('d_model', `= ${dModel} is not divisible by n_heads = ${nHeads}`);
  if (nHeads % nKvHeads !== 0)
    throw bad('n_heads', `= ${nHeads} is not divisible by n_kv_heads = ${nKvHeads}`);

  let mlpHiddenSize: number;
  if (has('mlp_hidden_size')) {
    mlpHiddenSize = posInt('mlp_hidden_size');
  } else {
    const ratio = r.mlp_ratio;
    if (typeof ratio !== 'number' || !(ratio > 0)) {
      throw bad(
        'mlp_hidden_size',
        'is missing and mlp_ratio is not a positive number to derive it from',
      );
    }
    mlpHiddenSize = ratio * dModel;
    if (!Number.isSafeInteger(mlpHiddenSize)) {
      throw bad('mlp_ratio', `= ${ratio} times d_model = ${dModel} is not an integer hidden size`);
    }
  }

  const embeddingSize = optPosInt('embedding_size') ?? vocabSize;
  if (embeddingSize < vocabSize) {
    throw bad('embedding_size', `= ${embeddingSize} is smaller than vocab_size = ${vocabSize}`);
  }

  const blockType = oneOf('block_type', 'llama');
  const layerNormType = oneOf('layer_norm_type', 'rms');
  const activationType = oneOf('activation_type', 'silu');
  mustBe('rope', true, false, 'this runtime needs rotary position embeddings');
  mustBe('alibi', false, false, 'ALiBi attention bias is not implemented');
  mustBe('layer_norm_with_affine', true, true, 'norm layers without weights are not implemented');
  mustBe('attention_layer_norm', false, false, 'q/k layer norms are not implemented');
  mustBe('input_emb_norm', false, false, 'embedding norm is not implemented');
  if (has('scale_logits') && bool('scale_logits', false)) {
    throw bad('scale_logits', '= true is unsupported (logit scaling is not implemented)');
  }
  if (has('block_group_size') && posInt('block_group_size') !== 1) {
    throw bad(
      'block_group_size',
      `= ${JSON.stringify(r.block_group_size)} is unsupported (only 1)`,
    );
  }

  const includeBias = bool('include_bias', false);
  const includeQkvBias = bool('include_qkv_bias', false);
  const normBias = has('bias_for_layer_norm') ? bool('bias_for_layer_norm', false) : includeBias;

  const eosTokenId = nonNegInt('eos_token_id', DEFAULT_EOS_TOKEN_ID);
  const cfg: LladaConfig = {
    dModel,
    nHeads,
    nKvHeads,
    headDim: dModel / nHeads,
    nLayers,
    mlpHiddenSize,
    vocabSize,
    embeddingSize,
    ropeTheta: posNum('rope_theta', 10000),
    rmsNormEps: posNum('rms_norm_eps', 1e-5),
    maxSequenceLength,
    weightTying: bool('weight_tying', false),
    includeBias,
    includeQkvBias,
    normBias,
    maskTokenId: nonNegInt('mask_token_id', DEFAULT_MASK_TOKEN_ID),
    eosTokenId,
    padTokenId: nonNegInt('pad_token_id', eosTokenId),
    blockType,
    layerNormType,
    activationType,
    raw: r,
  };
  for (const [f, v] of [
    ['mask_token_id', cfg.maskTokenId],
    ['eos_token_id', cfg.eosTokenId],
    ['pad_token_id', cfg.padTokenId],
  ] as const) {
    if (v >= embeddingSize)
      throw bad(f, `= ${v} is outside the vocabulary (embedding_size ${embeddingSize})`);
  }
  return cfg;
}

export function loadLladaConfig(file: string): LladaConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new DimooError(`${file}: cannot read config (${(e as Error).message})`, E);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new DimooError(`${file}: not valid JSON (${(e as Error).message})`, E);
  }
  return parseLladaConfig(raw, file);
}

/** Total parameters implied by a config (weights + biases). */
export function countParameters(c: LladaConfig): {
  total: number;
  embedding: number;
  head: number;
  perLayer: number;
  layers: number;
  finalNorm: number;
} {
  const d = c.dModel;
  const kv = c.nKvHeads * c.headDim;
  const b = (on: boolean, n: number): number => (on ? n : 0);
  const qkvBias = c.includeBias || c.includeQkvBias;
  const perLayer =
    d * d +
    2 * kv * d +
    d * d + // q, k, v, attn_out
    3 * d * c.mlpHiddenSize + // ff_proj, up_proj, ff_out
    2 * d + // attn_norm, ff_norm
    b(qkvBias, d + 2 * kv) +
    b(c.includeBias, d + 2 * c.mlpHiddenSize + d) +
    b(c.normBias, 2 * d);
  const embedding = c.embeddingSize * d;
  const head = c.weightTying ? 0 : c.embeddingSize * d + b(c.includeBias, c.embeddingSize);
  const finalNorm = d + b(c.normBias, d);
  const layers = perLayer * c.nLayers;
  return {
    total: embedding + head + layers + finalNorm,
    embedding,
    head,
    perLayer,
    layers,
    finalNorm,
  };
}
