/**
 * What a LLaDA checkpoint folder holds, whatever its weight format: the
 * weights config.json implies, the side files (tokenizer, generation config,
 * VQ-VAE), and the `Checkpoint` record both readers (folder.ts for
 * safetensors as published, quantized.ts for `dimoo quantize` output) return.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DimooError } from '../errors.js';
import type { LladaConfig } from './config.js';
import type { Dtype } from './dtypes.js';
import type { TensorInfo } from './safetensors.js';

export interface Checkpoint {
  dir: string;
  config: LladaConfig;
  /** Every language-model weight, by its checkpoint name. */
  weights: Map<string, TensorInfo>;
  tokenizerPath: string;
  tokenizerConfigPath?: string;
  specialTokensMapPath?: string;
  generationConfigPath?: string;
  vqvaeDir?: string;
  /** Absolute paths of the files this checkpoint was read from. */
  files: string[];
  /** Weight files (one, or the shards), absolute paths. */
  weightFiles: string[];
}

export interface ExpectedTensor {
  name: string;
  shape: number[];
  /** Which config fields imply the shape, for error messages. */
  origin: string;
}

export const WEIGHT_DTYPES: readonly Dtype[] = ['BF16', 'F16', 'F32'];
export const PREFIX = 'model.transformer.';

export const SINGLE_FILE = 'model.safetensors';
export const INDEX_FILE = 'model.safetensors.index.json';

/** Names and shapes of every weight the LLaDA architecture has for this config. */
export function expectedTensors(c: LladaConfig): ExpectedTensor[] {
  const d = c.dModel;
  const kv = c.nKvHeads * c.headDim;
  const h = c.mlpHiddenSize;
  const out: ExpectedTensor[] = [];
  const add = (name: string, shape: number[], origin: string): void => {
    out.push({ name: PREFIX + name, shape, origin });
  };
  const dO = `d_model=${d}`;
  const kvO = `n_kv_heads=${c.nKvHeads} x head_dim=${c.headDim} (d_model/n_heads), d_model=${d}`;
  const hO = `mlp_hidden_size=${h}, d_model=${d}`;
  const qkvBias = c.includeBias || c.includeQkvBias;
  add('wte.weight', [c.embeddingSize, d], `embedding_size=${c.embeddingSize}, d_model=${d}`);
  for (let i = 0; i < c.nLayers; i++) {
    const b = `blocks.${i}.`;
    add(b + 'attn_norm.weight', [d], dO);
    if (c.normBias) add(b + 'attn_norm.bias', [d], dO + ', bias_for_layer_norm/include_bias');
    add(b + 'q_proj.weight', [d, d], dO);
    add(b + 'k_proj.weight', [kv, d], kvO);
    add(b + 'v_proj.weight', [kv, d], kvO);
    if (qkvBias) {
      add(b + 'q_proj.bias', [d], dO + ', include_qkv_bias/include_bias');
      add(b + 'k_proj.bias', [kv], kvO + ', include_qkv_bias/include_bias');
      add(b + 'v_proj.bias', [kv], kvO + ', include_qkv_bias/include_bias');
    }
    add(b + 'attn_out.weight', [d, d], dO);
    if (c.includeBias) add(b + 'attn_out.bias', [d], dO + ', include_bias');
    add(b + 'ff_norm.weight', [d], dO);
    if (c.normBias) add(b + 'ff_norm.bias', [d], dO + ', bias_for_layer_norm/include_bias');
    add(b + 'ff_proj.weight', [h, d], hO);
    add(b + 'up_proj.weight', [h, d], hO);
    add(b + 'ff_out.weight', [d, h], hO);
    if (c.includeBias) {
      add(b + 'ff_proj.bias', [h], hO + ', include_bias');
      add(b + 'up_proj.bias', [h], hO + ', include_bias');
      add(b + 'ff_out.bias', [d], dO + ', include_bias');
    }
  }
  add('ln_f.weight', [d], dO);
  if (c.normBias) add('ln_f.bias', [d], dO + ', bias_for_layer_norm/include_bias');
  if (!c.weightTying) {
    add(
      'ff_out.weight',
      [c.embeddingSize, d],
      `embedding_size=${c.embeddingSize}, d_model=${d}, weight_tying=false`,
    );
    if (c.includeBias)
      add('ff_out.bias', [c.embeddingSize], `embedding_size=${c.embeddingSize}, include_bias`);
  }
  return out;
}

/** The files beside the weights, as absolute paths (tokenizer.json is required). */
export interface SideFiles {
  tokenizerPath: string;
  tokenizerConfigPath?: string;
  specialTokensMapPath?: string;
  generationConfigPath?: string;
  vqvaeDir?: string;
}

export function findSideFiles(root: string): SideFiles {
  const tokenizerPath = path.join(root, 'tokenizer.json');
  if (!fs.existsSync(tokenizerPath))
    throw new DimooError(
      `${tokenizerPath}: missing (the text tokenizer is required)`,
      'E_CHECKPOINT',
    );
  const opt = (name: string): string | undefined => {
    const p = path.join(root, name);
    return fs.existsSync(p) ? p : undefined;
  };
  const vq = path.join(root, 'vqvae');
  return {
    tokenizerPath,
    tokenizerConfigPath: opt('tokenizer_config.json'),
    specialTokensMapPath: opt('special_tokens_map.json'),
    generationConfigPath: opt('generation_config.json'),
    vqvaeDir: fs.existsSync(vq) && fs.statSync(vq).isDirectory() ? vq : undefined,
  };
}

/** The side files that exist, for `Checkpoint.files`. */
export function sideFileList(s: SideFiles): string[] {
  return [
    s.tokenizerPath,
    s.tokenizerConfigPath,
    s.specialTokensMapPath,
    s.generationConfigPath,
  ].filter((p): p is string => !!p);
}
