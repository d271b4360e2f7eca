/**
 * Opens an official Hugging Face Lumina-DiMOO checkpoint folder and checks
 * that its weights are exactly what config.json implies, so shape problems
 * surface here with a clear message rather than deep inside an export.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DimooError } from '../errors.js';
import { type LladaConfig, loadLladaConfig } from './config.js';
import { SafetensorsFile, type TensorInfo } from './safetensors.js';
import type { Dtype } from './dtypes.js';
import { isQuantizedCheckpoint, openQuantizedCheckpoint } from './quantize.js';

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

const E = 'E_CHECKPOINT';
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

function exists(p: string): boolean {
  return fs.existsSync(p);
}

function readJson(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new DimooError(`${file}: cannot read (${(e as Error).message})`, E);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new DimooError(`${file}: not valid JSON (${(e as Error).message})`, E);
  }
}

/** Reads model.safetensors.index.json: tensor name -> shard file name. */
export function readIndex(file: string): { weightMap: Map<string, string>; totalSize?: number } {
  const j = readJson(file);
  if (typeof j !== 'object' || j === null || Array.isArray(j)) {
    throw new DimooError(`${file}: must be a JSON object with "weight_map"`, E);
  }
  const wm = (j as Record<string, unknown>).weight_map;
  if (typeof wm !== 'object' || wm === null || Array.isArray(wm)) {
    throw new DimooError(`${file}: "weight_map" must be an object of tensor name -> shard file`, E);
  }
  const weightMap = new Map<string, string>();
  for (const [name, shard] of Object.entries(wm as Record<string, unknown>)) {
    if (typeof shard !== 'string' || shard.length === 0) {
      throw new DimooError(
        `${file}: weight_map["${name}"] must be a shard file name, got ${JSON.stringify(shard)}`,
        E,
      );
    }
    // Shards must live in the checkpoint folder itself; refuse paths that escape it.
    if (path.isAbsolute(shard) || shard.split(/[\\/]/).includes('..') || /[\\/]/.test(shard)) {
      throw new DimooError(
        `${file}: weight_map["${name}"] = "${shard}" is not a plain file name in the checkpoint folder`,
        E,
      );
    }
    weightMap.set(name, shard);
  }
  const meta = (j as Record<string, unknown>).metadata;
  let totalSize: number | undefined;
  if (
    meta &&
    typeof meta === 'object' &&
    typeof (meta as Record<string, unknown>).total_size === 'number'
  ) {
    totalSize = (meta as Record<string, unknown>).total_size as number;
  }
  return { weightMap, totalSize };
}

function fmt(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

function listSome(names: string[], n = 5): string {
  const head = names.slice(0, n).join(', ');
  return names.length > n ? `${head}, ... (${names.length} in all)` : head;
}

/** Loads the weight table from model.safetensors or from the index + shards. */
export function loadWeightTable(dir: string): {
  weights: Map<string, TensorInfo>;
  files: string[];
  indexPath?: string;
} {
  const single = path.join(dir, SINGLE_FILE);
  const indexPath = path.join(dir, INDEX_FILE);
  // Same preference as transformers: a single file wins over an index.
  if (exists(single)) {
    const f = SafetensorsFile.open(single);
    return { weights: new Map(f.tensors), files: [single] };
  }
  if (!exists(indexPath)) {
    throw new DimooError(`${dir}: no weights found (neither ${SINGLE_FILE} nor ${INDEX_FILE})`, E);
  }
  const { weightMap } = readIndex(indexPath);
  if (weightMap.size === 0) throw new DimooError(`${indexPath}: weight_map is empty`, E);
  const shards = new Map<string, SafetensorsFile>();
  for (const shard of new Set(weightMap.values())) {
    const p = path.join(dir, shard);
    if (!exists(p)) {
      const users = [...weightMap].filter(([, s]) => s === shard).map(([n]) => n);
      throw new DimooError(
        `${indexPath}: shard "${shard}" is missing from ${dir} (it should hold ${listSome(users, 3)})`,
        E,
      );
    }
    shards.set(shard, SafetensorsFile.open(p));
  }
  const weights = new Map<string, TensorInfo>();
  for (const [name, shard] of weightMap) {
    const f = shards.get(shard)!;
    const t = f.tensors.get(name);
    if (!t) {
      throw new DimooError(
        `${indexPath}: maps tensor "${name}" to shard "${shard}", but ${f.path} has no such tensor`,
        E,
      );
    }
    weights.set(name, t);
  }
  return { weights, files: [...shards.values()].map((s) => s.path).sort(), indexPath };
}

/** Compares weights with what the config implies; throws on the first kind of mismatch found. */
export function validateWeights(
  config: LladaConfig,
  weights: Map<string, TensorInfo>,
  where: string,
): void {
  const expected = expectedTensors(config);
  const want = new Map(expected.map((e) => [e.name, e]));
  const missing = expected.filter((e) => !weights.has(e.name)).map((e) => e.name);
  if (missing.length > 0) {
    throw new DimooError(
      `${where}: missing tensor(s) that config.json requires: ${listSome(missing)}`,
      E,
    );
  }
  const unexpected = [...weights.keys()].filter((n) => !want.has(n));
  if (unexpected.length > 0) {
    throw new DimooError(
      `${where}: unexpected tensor(s) not implied by config.json: ${listSome(unexpected)} ` +
        `(check n_layers, weight_tying, include_bias, include_qkv_bias)`,
      E,
    );
  }
  for (const e of expected) {
    const t = weights.get(e.name)!;
    if (t.shape.length !== e.shape.length || t.shape.some((d, i) => d !== e.shape[i])) {
      throw new DimooError(
        `${t.file}: tensor "${e.name}" has shape ${fmt(t.shape)}, expected ${fmt(e.shape)} from config.json (${e.origin})`,
        E,
      );
    }
    if (!WEIGHT_DTYPES.includes(t.dtype)) {
      throw new DimooError(
        `${t.file}: tensor "${e.name}" has dtype ${t.dtype}; weights must be ${WEIGHT_DTYPES.join(', ')}`,
        E,
      );
    }
  }
}

export function openCheckpoint(dir: string): Checkpoint {
  const root = path.resolve(dir);
  let st: fs.Stats;
  try {
    st = fs.statSync(root);
  } catch {
    throw new DimooError(`${root}: checkpoint folder does not exist`, E);
  }
  if (!st.isDirectory()) throw new DimooError(`${root}: checkpoint path is not a folder`, E);
  // A folder written by `dimoo quantize` (MatMulNBits blocks + manifest, see quantize.ts).
  if (isQuantizedCheckpoint(root)) return openQuantizedCheckpoint(root);
  const configPath = path.join(root, 'config.json');
  if (!exists(configPath))
    throw new DimooError(`${configPath}: missing (every checkpoint needs config.json)`, E);
  const config = loadLladaConfig(configPath);

  const { weights, files: weightFiles, indexPath } = loadWeightTable(root);
  validateWeights(config, weights, indexPath ?? weightFiles[0]!);

  const tokenizerPath = path.join(root, 'tokenizer.json');
  if (!exists(tokenizerPath))
    throw new DimooError(`${tokenizerPath}: missing (the text tokenizer is required)`, E);
  const opt = (name: string): string | undefined => {
    const p = path.join(root, name);
    return exists(p) ? p : undefined;
  };
  const tokenizerConfigPath = opt('tokenizer_config.json');
  const specialTokensMapPath = opt('special_tokens_map.json');
  const generationConfigPath = opt('generation_config.json');
  const vq = path.join(root, 'vqvae');
  const vqvaeDir = exists(vq) && fs.statSync(vq).isDirectory() ? vq : undefined;

  const files = [
    configPath,
    ...(indexPath ? [indexPath] : []),
    ...weightFiles,
    tokenizerPath,
    ...[tokenizerConfigPath, specialTokensMapPath, generationConfigPath].filter(
      (p): p is string => !!p,
    ),
  ];
  return {
    dir: root,
    config,
    weights,
    tokenizerPath,
    tokenizerConfigPath,
    specialTokensMapPath,
    generationConfigPath,
    vqvaeDir,
    files,
    weightFiles,
  };
}
