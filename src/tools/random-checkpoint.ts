/**
 * Writes a randomly initialised checkpoint in the official Hugging Face
 * layout (config.json, bf16 shards + index, tokenizer files), for tests and
 * benchmarks at sizes up to the real 8B shape without downloading weights.
 *
 * Values are a pure function of (seed, tensor name), independent of sharding,
 * and are generated chunk by chunk so the 16 GB `8b` preset streams to disk.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DimooError } from '../errors.js';
import { type LladaConfig, countParameters, parseLladaConfig } from '../checkpoint/config.js';
import { expectedTensors, INDEX_FILE, SINGLE_FILE } from '../checkpoint/layout.js';
import { f32ToBf16Scalar } from '../checkpoint/dtypes.js';
import { type TensorProducer, numel, writeSafetensors } from '../checkpoint/safetensors.js';
import { atomicWriteFileSync } from '../util/atomic-write.js';
import { END_ADDED_ID, writeTokenizerFiles } from './tokenizer-files.js';
import { makeDirs } from '../util/fs-errors.js';

export type PresetName = 'tiny' | 'small' | '1b' | '8b';

export interface RandomModelSizes {
  dModel: number;
  nHeads: number;
  /** Defaults to nHeads; fewer gives grouped-KV attention. */
  nKvHeads?: number;
  nLayers: number;
  mlpHiddenSize: number;
  /** vocab_size = embedding_size; defaults to DiMOO's 134548. */
  vocabSize?: number;
  ropeTheta?: number;
  rmsNormEps?: number;
  maxSequenceLength?: number;
  weightTying?: boolean;
  includeBias?: boolean;
  includeQkvBias?: boolean;
}

export const DIMOO_VOCAB_SIZE = 134548;
const GiB = 1024 ** 3;

/**
 * tiny = the golden checkpoint's sizes; 8b = the real model's shape. The
 * 134548 x d embedding and head dominate small models, so `small` and `1b`
 * use a wide-ish d with few layers to land near their nominal sizes.
 */
export const PRESETS: Readonly<Record<PresetName, Readonly<RandomModelSizes>>> = {
  tiny: { dModel: 32, nHeads: 4, nLayers: 2, mlpHiddenSize: 64 },
  small: { dModel: 320, nHeads: 5, nLayers: 12, mlpHiddenSize: 960 },
  '1b': { dModel: 2048, nHeads: 16, nLayers: 8, mlpHiddenSize: 6144 },
  '8b': { dModel: 4096, nHeads: 32, nKvHeads: 32, nLayers: 32, mlpHiddenSize: 12288 },
};

/** Default shard cap per preset; tiny is split in two like the golden checkpoint. */
const DEFAULT_SHARD_BYTES: Record<PresetName, number> = {
  tiny: 10_000_000,
  small: 2 * GiB,
  '1b': 2 * GiB,
  '8b': 2 * GiB,
};

export function isPresetName(s: unknown): s is PresetName {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(PRESETS, s);
}

export function resolveSizes(
  spec: PresetName | RandomModelSizes,
  overrides: Partial<RandomModelSizes> = {},
): RandomModelSizes {
  let base: RandomModelSizes;
  if (typeof spec === 'string') {
    if (!isPresetName(spec)) {
      throw new DimooError(
        `unknown random checkpoint preset "${spec}" (known: ${Object.keys(PRESETS).join(', ')})`,
        'E_PARAM',
      );
    }
    base = PRESETS[spec];
  } else {
    base = spec;
  }
  const merged: RandomModelSizes = { ...base };
  for (const [k, v] of Object.entries(overrides)) {
    if (v !== undefined) (merged as unknown as Record<string, unknown>)[k] = v;
  }
  return merged;
}

/** A config.json with the full LLaDA schema (same fields as the real one), sizes from `s`. */
export function buildLladaConfigJson(s: RandomModelSizes): Record<string, unknown> {
  const vocab = s.vocabSize ?? DIMOO_VOCAB_SIZE;
  return {
    activation_type: 'silu',
    alibi: false,
    alibi_bias_max: 8.0,
    architectures: ['LLaDAForMultiModalGeneration'],
    attention_dropout: 0.0,
    attention_layer_norm: false,
    attention_layer_norm_with_affine: true,
    bias_for_layer_norm: false,
    block_group_size: 1,
    block_type: 'llama',
    d_model: s.dModel,
    embedding_dropout: 0.0,
    embedding_size: vocab,
    eos_token_id: 126081,
    flash_attention: false,
    include_bias: s.includeBias ?? false,
    include_qkv_bias: s.includeQkvBias ?? false,
    init_cutoff_factor: null,
    init_device: 'meta',
    init_fn: 'mitchell',
    init_std: 0.02,
    input_emb_norm: false,
    layer_norm_type: 'rms',
    layer_norm_with_affine: true,
    mask_token_id: 126336,
    max_sequence_length: s.maxSequenceLength ?? 4096,
    mlp_hidden_size: s.mlpHiddenSize,
    mlp_ratio: 4,
    model_type: 'llada',
    multi_query_attention: null,
    n_heads: s.nHeads,
    n_kv_heads: s.nKvHeads ?? s.nHeads,
    n_layers: s.nLayers,
    pad_token_id: 126081,
    precision: 'amp_bf16',
    residual_dropout: 0.0,
    rms_norm_eps: s.rmsNormEps ?? 1e-5,
    rope: true,
    rope_full_precision: true,
    rope_theta: s.ropeTheta ?? 500000.0,
    scale_logits: false,
    torch_dtype: 'bfloat16',
    transformers_version: '4.46.2',
    use_cache: false,
    vocab_size: vocab,
    weight_tying: s.weightTying ?? false,
  };
}

/** Python's json prints whole floats as "500000.0"; keep that look for float-typed fields. */
function configText(obj: Record<string, unknown>): string {
  const floats = new Set([
    'alibi_bias_max',
    'attention_dropout',
    'embedding_dropout',
    'init_std',
    'residual_dropout',
    'rope_theta',
    'rms_norm_eps',
  ]);
  return (
    JSON.stringify(obj, null, 2).replace(
      /^(\s*"([a-z_]+)": )(-?\d+)(,?)$/gm,
      (m, pre, key, num, comma) => (floats.has(key) ? `${pre}${num}.0${comma}` : m),
    ) + '\n'
  );
}

// ------------------------------------------------------------------ PRNG

/** xoshiro128** on 32-bit ints: tiny, fast, and good enough for weights. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    // splitmix32 expands one seed into four non-zero state words.
    let x = seed >>> 0;
    const next = (): number => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next();
    this.b = next();
    this.c = next();
    this.d = next() || 1;
  }

  /** Uniform uint32. */
  nextU32(): number {
    const r = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return r;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.nextU32() / 4294967296;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** FNV-1a of the name mixed with the seed: one independent stream per tensor. */
export function tensorSeed(seed: number, name: string): number {
  let h = 0x811c9dc5 ^ (seed >>> 0);
  for (let i = 0; i < name.length; i++) {
    h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  }
  h ^= Math.imul((seed / 4294967296) >>> 0, 0x9e3779b1);
  return h >>> 0;
}

// A fixed pool of 65536 standard-normal samples (exactly mean 0, std 1).
// Each 16-bit random draw picks one, so generating costs a table lookup.
let normalPool: Float64Array | undefined;

function getNormalPool(): Float64Array {
  if (normalPool) return normalPool;
  const n = 65536;
  const pool = new Float64Array(n);
  const rng = new Rng(0x5eed1234);
  for (let i = 0; i < n; i += 2) {
    const u1 = 1 - rng.next(); // (0, 1]: log() stays finite
    const u2 = rng.next();
    const r = Math.sqrt(-2 * Math.log(u1));
    pool[i] = r * Math.cos(2 * Math.PI * u2);
    pool[i + 1] = r * Math.sin(2 * Math.PI * u2);
  }
  let mean = 0;
  for (const v of pool) mean += v;
  mean /= n;
  let sq = 0;
  for (const v of pool) sq += (v - mean) ** 2;
  const std = Math.sqrt(sq / n);
  for (let i = 0; i < n; i++) pool[i] = (pool[i]! - mean) / std;
  normalPool = pool;
  return pool;
}

export type InitKind =
  { kind: 'normal'; std: number } | { kind: 'uniform'; lo: number; hi: number };

/**
 * Init per tensor, mirroring the golden checkpoint's scales: unit-variance
 * embedding, fan-in scaled linears (1/sqrt(4096) ~ 0.016 at the real size),
 * sharper q/k so attention is not uniform, a head scaled so logits are peaked,
 * norm weights uniform in [0.6, 1.4].
 */
export function initFor(name: string, c: LladaConfig): InitKind {
  const d = c.dModel;
  const leaf = name.split('.').slice(-2).join('.');
  if (name.endsWith('.bias')) return { kind: 'normal', std: 0.02 };
  if (/_norm\.weight$|^model\.transformer\.ln_f\.weight$/.test(name))
    return { kind: 'uniform', lo: 0.6, hi: 1.4 };
  if (name === 'model.transformer.wte.weight') return { kind: 'normal', std: 1 };
  if (name === 'model.transformer.ff_out.weight')
    return { kind: 'normal', std: 2.5 / Math.sqrt(d) };
  switch (leaf) {
    case 'q_proj.weight':
    case 'k_proj.weight':
      return { kind: 'normal', std: 1.5 / Math.sqrt(d) };
    case 'ff_out.weight':
      return { kind: 'normal', std: 1 / Math.sqrt(c.mlpHiddenSize) };
    default:
      return { kind: 'normal', std: 1 / Math.sqrt(d) };
  }
}

const CHUNK_ELEMS = 1 << 20;

/** Streams `count` bf16 values for one tensor, CHUNK_ELEMS at a time. */
export function bf16Producer(count: number, init: InitKind, seed: number): TensorProducer {
  return (write) => {
    const rng = new Rng(seed);
    const buf = new Uint16Array(Math.min(CHUNK_ELEMS, count + (count & 1)));
    const bytes = new Uint8Array(buf.buffer);
    let table: Uint16Array | undefined;
    if (init.kind === 'normal') {
      const pool = getNormalPool();
      table = new Uint16Array(pool.length);
      for (let i = 0; i < pool.length; i++) table[i] = f32ToBf16Scalar(pool[i]! * init.std);
    }
    let done = 0;
    while (done < count) {
      const n = Math.min(buf.length, count - done);
      if (table) {
        // Two values per 32-bit draw.
        for (let i = 0; i < n; i += 2) {
          const r = rng.nextU32();
          buf[i] = table[r & 0xffff]!;
          buf[i + 1] = table[r >>> 16]!;
        }
      } else if (init.kind === 'uniform') {
        const span = init.hi - init.lo;
        for (let i = 0; i < n; i++) buf[i] = f32ToBf16Scalar(init.lo + span * rng.next());
      }
      write(bytes.subarray(0, n * 2));
      done += n;
    }
  };
}

/** The [vocab, d_model] tensors whose rows are vocabulary ids. */
const VOCAB_ROW_TENSORS = new Set([
  'model.transformer.wte.weight',
  'model.transformer.ff_out.weight',
]);

/** Zeroes (bf16 0 = two zero bytes) every row of a [rows, rowLen] bf16 stream outside `keep`. */
function maskRows(
  produce: TensorProducer,
  keep: ReadonlyArray<readonly [number, number]> | undefined,
  rowLen: number,
): TensorProducer {
  if (!keep) return produce;
  const kept = (row: number): boolean => keep.some(([a, b]) => row >= a && row < b);
  return (write) => {
    let elem = 0;
    produce((chunk) => {
      const out = new Uint8Array(chunk);
      const n = out.length / 2;
      for (let i = 0; i < n; i++) {
        if (!kept(Math.floor((elem + i) / rowLen))) {
          out[2 * i] = 0;
          out[2 * i + 1] = 0;
        }
      }
      elem += n;
      write(out);
    });
  };
}

// ------------------------------------------------------------------ sharding

export interface PlannedTensor {
  name: string;
  shape: number[];
  bytes: number;
}

/** Greedy, in model order: start a new shard when the next tensor would overflow. */
export function planShards(
  tensors: readonly PlannedTensor[],
  maxShardBytes: number,
): PlannedTensor[][] {
  const shards: PlannedTensor[][] = [];
  let cur: PlannedTensor[] = [];
  let size = 0;
  for (const t of tensors) {
    if (cur.length > 0 && size + t.bytes > maxShardBytes) {
      shards.push(cur);
      cur = [];
      size = 0;
    }
    cur.push(t);
    size += t.bytes;
  }
  if (cur.length > 0) shards.push(cur);
  return shards;
}

export function shardFileName(i: number, n: number): string {
  const pad = (k: number): string => String(k).padStart(5, '0');
  return `model-${pad(i + 1)}-of-${pad(n)}.safetensors`;
}

export interface RandomCheckpointOptions {
  seed?: number;
  /** Applied on top of the preset (e.g. { nKvHeads: 2 } for grouped-KV tests). */
  overrides?: Partial<RandomModelSizes>;
  /** Cap per shard in bytes (default: 2 GiB; tiny: 10 MB, giving 2 shards). */
  maxShardBytes?: number;
  /**
   * Vocabulary rows [start, end) of the embedding and output head to initialise;
   * all others are written as zeros (default: all rows). Rows no input or
   * label ever uses then stay identical through training (no gradient into
   * unused embedding rows, the same gradient for identical head rows), so the
   * trained weights compress to almost nothing there.
   */
  vocabRows?: ReadonlyArray<readonly [number, number]>;
  /** Writes the VQ-VAE into `vqDir` (created beforehand); the vqvae/ folder is skipped without it. */
  writeVq?: (vqDir: string) => Promise<void> | void;
  onProgress?: (bytesDone: number, bytesTotal: number) => void;
}

export interface RandomCheckpointResult {
  dir: string;
  config: LladaConfig;
  sizes: RandomModelSizes;
  shardFiles: string[];
  /** Sum of tensor bytes (the index's metadata.total_size). */
  totalSize: number;
  parameters: number;
}

const STALE_SHARD = /^model-\d{5}-of-\d{5}\.safetensors$/;

export async function writeRandomCheckpoint(
  dir: string,
  spec: PresetName | RandomModelSizes,
  options: RandomCheckpointOptions = {},
): Promise<RandomCheckpointResult> {
  const sizes = resolveSizes(spec, options.overrides);
  const root = path.resolve(dir);
  const configJson = buildLladaConfigJson(sizes);
  const configPath = path.join(root, 'config.json');
  const config = parseLladaConfig(configJson, configPath);
  if (config.embeddingSize < END_ADDED_ID) {
    throw new DimooError(
      `${configPath}: vocab_size ${config.embeddingSize} is below ${END_ADDED_ID}, the tokenizer's text + special ids`,
      'E_CONFIG',
    );
  }
  const seed = options.seed ?? 0;
  const maxShard =
    options.maxShardBytes ?? (typeof spec === 'string' ? DEFAULT_SHARD_BYTES[spec] : 2 * GiB);
  if (!(maxShard > 0))
    throw new DimooError(`maxShardBytes must be positive, got ${maxShard}`, 'E_PARAM');

  makeDirs(root);
  const planned = expectedTensors(config).map((t) => ({
    name: t.name,
    shape: t.shape,
    bytes: numel(t.shape) * 2,
  }));
  const shards = planShards(planned, maxShard);
  const names = shards.map((_, i) => shardFileName(i, shards.length));

  // Leftovers from an earlier run would shadow (model.safetensors) or clutter the new files.
  for (const f of fs.readdirSync(root)) {
    if (f === SINGLE_FILE || (STALE_SHARD.test(f) && !names.includes(f)))
      fs.rmSync(path.join(root, f));
  }

  atomicWriteFileSync(configPath, configText(configJson), { fsync: false });
  const gen = {
    _from_model_config: true,
    bos_token_id: 126080,
    eos_token_id: 126081,
    pad_token_id: 126081,
    transformers_version: '4.46.2',
  };
  atomicWriteFileSync(
    path.join(root, 'generation_config.json'),
    JSON.stringify(gen, null, 2) + '\n',
    { fsync: false },
  );
  writeTokenizerFiles(root);

  const totalSize = planned.reduce((s, t) => s + t.bytes, 0);
  let done = 0;
  const weightMap: Record<string, string> = {};
  const shardFiles: string[] = [];
  for (let i = 0; i < shards.length; i++) {
    const file = path.join(root, names[i]!);
    writeSafetensors(
      file,
      shards[i]!.map((t) => {
        const produce = maskRows(
          bf16Producer(numel(t.shape), initFor(t.name, config), tensorSeed(seed, t.name)),
          VOCAB_ROW_TENSORS.has(t.name) ? options.vocabRows : undefined,
          t.shape[1] ?? 1,
        );
        return {
          name: t.name,
          dtype: 'BF16' as const,
          shape: t.shape,
          data: (write: (chunk: Uint8Array) => void) =>
            produce((chunk) => {
              write(chunk);
              done += chunk.byteLength;
              options.onProgress?.(done, totalSize);
            }),
        };
      }),
      { format: 'pt' },
    );
    for (const t of shards[i]!) weightMap[t.name] = names[i]!;
    shardFiles.push(file);
    // Let timers and I/O callbacks run between shards of a long write.
    await new Promise<void>((r) => setImmediate(r));
  }
  const sortedMap: Record<string, string> = {};
  for (const k of Object.keys(weightMap).sort()) sortedMap[k] = weightMap[k]!;
  atomicWriteFileSync(
    path.join(root, INDEX_FILE),
    JSON.stringify({ metadata: { total_size: totalSize }, weight_map: sortedMap }, null, 2) + '\n',
  );

  if (options.writeVq) {
    const vqDir = path.join(root, 'vqvae');
    makeDirs(vqDir);
    await options.writeVq(vqDir);
  }
  return {
    dir: root,
    config,
    sizes,
    shardFiles,
    totalSize,
    parameters: countParameters(config).total,
  };
}
