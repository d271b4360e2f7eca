/**
 * `vqvae/config.json` (diffusers `VQModel` schema) -> typed, validated config,
 * plus the exact weight names and shapes that config implies.
 *
 * Only what the real checkpoint family (aMUSEd's VQ-VAE) can use is accepted:
 * DownEncoderBlock2D / UpDecoderBlock2D, GroupNorm, SiLU, optional mid-block
 * attention. Anything else is rejected with the field named, instead of
 * computing something silently different.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DimooError } from '../errors.js';

export interface VqConfig {
  inChannels: number;
  outChannels: number;
  blockOutChannels: number[];
  layersPerBlock: number;
  latentChannels: number;
  numVqEmbeddings: number;
  normNumGroups: number;
  /** Codebook vector size (`vq_embed_dim`, null -> latent_channels). */
  vqEmbedDim: number;
  midBlockAddAttention: boolean;
  lookupFromCodebook: boolean;
  actFn: 'silu';
  /** Pixels per token side: 2^(number of blocks - 1), as decode_vq_to_image computes it. */
  scaleFactor: number;
  /** The parsed JSON as found. */
  raw: Record<string, unknown>;
}

const E = 'E_CONFIG';
export const VQ_CONFIG_FILE = 'config.json';
export const VQ_WEIGHTS_FILE = 'diffusion_pytorch_model.safetensors';

/** diffusers' ResnetBlock2D / GroupNorm eps inside Encoder and Decoder (hard-coded there, not in the config). */
export const VQ_NORM_EPS = 1e-6;

export function parseVqConfig(raw: unknown, source = 'vqvae/config.json'): VqConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new DimooError(`${source}: must be a JSON object`, E);
  }
  const r = raw as Record<string, unknown>;
  const bad = (field: string, msg: string): DimooError =>
    new DimooError(`${source}: field "${field}" ${msg}`, E);
  const has = (f: string): boolean => r[f] !== undefined && r[f] !== null;
  const posInt = (f: string, dflt?: number): number => {
    if (!has(f)) {
      if (dflt !== undefined) return dflt;
      throw bad(f, 'is required (a positive integer)');
    }
    const v = r[f];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) {
      throw bad(f, `must be a positive integer, got ${JSON.stringify(v)}`);
    }
    return v;
  };
  const bool = (f: string, dflt: boolean): boolean => {
    if (!has(f)) return dflt;
    if (typeof r[f] !== 'boolean')
      throw bad(f, `must be true or false, got ${JSON.stringify(r[f])}`);
    return r[f] as boolean;
  };
  const strList = (f: string, dflt: string[]): string[] => {
    if (!has(f)) return dflt;
    const v = r[f];
    if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) {
      throw bad(f, `must be a list of strings, got ${JSON.stringify(v)}`);
    }
    return v as string[];
  };

  if (has('_class_name') && r._class_name !== 'VQModel') {
    throw bad(
      '_class_name',
      `is ${JSON.stringify(r._class_name)}; only diffusers "VQModel" is supported`,
    );
  }

  // Defaults are diffusers' VQModel.__init__ defaults, so a sparse config means what it means there.
  const inChannels = posInt('in_channels', 3);
  const outChannels = posInt('out_channels', 3);
  let blockOutChannels = [64];
  if (has('block_out_channels')) {
    const v = r.block_out_channels;
    if (
      !Array.isArray(v) ||
      v.length === 0 ||
      !v.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x > 0)
    ) {
      throw bad(
        'block_out_channels',
        `must be a non-empty list of positive integers, got ${JSON.stringify(v)}`,
      );
    }
    blockOutChannels = v as number[];
  }
  const n = blockOutChannels.length;
  const down = strList('down_block_types', ['DownEncoderBlock2D']);
  const up = strList('up_block_types', ['UpDecoderBlock2D']);
  for (const [field, list, ok] of [
    ['down_block_types', down, 'DownEncoderBlock2D'],
    ['up_block_types', up, 'UpDecoderBlock2D'],
  ] as const) {
    if (list.length !== n) {
      throw bad(
        field,
        `has ${list.length} entries but block_out_channels has ${n}; they must match`,
      );
    }
    const other = list.find((t) => t !== ok);
    if (other !== undefined) {
      throw bad(field, `contains unsupported block type "${other}" (supported: "${ok}")`);
    }
  }
  const layersPerBlock = posInt('layers_per_block', 1);
  const act = has('act_fn') ? r.act_fn : 'silu';
  if (act !== 'silu' && act !== 'swish') {
    throw bad('act_fn', `is ${JSON.stringify(act)}; only "silu" (alias "swish") is supported`);
  }
  const latentChannels = posInt('latent_channels', 3);
  const numVqEmbeddings = posInt('num_vq_embeddings', 256);
  const normNumGroups = posInt('norm_num_groups', 32);
  for (const c of new Set(blockOutChannels)) {
    if (c % normNumGroups !== 0) {
      throw bad(
        'norm_num_groups',
        `(${normNumGroups}) must divide every block_out_channels entry; ${c} is not divisible`,
      );
    }
  }
  const vqEmbedDim = has('vq_embed_dim') ? posInt('vq_embed_dim') : latentChannels;
  const normType = has('norm_type') ? r.norm_type : 'group';
  if (normType !== 'group') {
    throw bad(
      'norm_type',
      `is ${JSON.stringify(normType)}; only "group" is supported ("spatial" (MoVQ) is not implemented)`,
    );
  }
  const midBlockAddAttention = bool('mid_block_add_attention', true);
  const lookupFromCodebook = bool('lookup_from_codebook', false);

  return {
    inChannels,
    outChannels,
    blockOutChannels: blockOutChannels.slice(),
    layersPerBlock,
    latentChannels,
    numVqEmbeddings,
    normNumGroups,
    vqEmbedDim,
    midBlockAddAttention,
    lookupFromCodebook,
    actFn: 'silu',
    scaleFactor: 2 ** (n - 1),
    raw: r,
  };
}

export function loadVqConfig(vqDir: string): VqConfig {
  const file = path.join(vqDir, VQ_CONFIG_FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new DimooError(`${file}: cannot read the VQ-VAE config (${(e as Error).message})`, E);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new DimooError(`${file}: not valid JSON (${(e as Error).message})`, E);
  }
  return parseVqConfig(json, file);
}

// ------------------------------------------------------------ weight layout

export interface VqTensorSpec {
  name: string;
  shape: number[];
}

/** The mid-block attention's projections, under diffusers' current names. */
export const ATTN_PROJ = ['to_q', 'to_k', 'to_v', 'to_out.0'] as const;
/** Names used by checkpoints saved before diffusers renamed the attention block (converted on load there too). */
export const ATTN_PROJ_LEGACY: Record<(typeof ATTN_PROJ)[number], string> = {
  to_q: 'query',
  to_k: 'key',
  to_v: 'value',
  'to_out.0': 'proj_attn',
};

/** Every weight VQModel has for this config, in a stable order. */
export function expectedVqTensors(c: VqConfig): VqTensorSpec[] {
  const out: VqTensorSpec[] = [];
  const add = (name: string, shape: number[]): void => {
    out.push({ name, shape });
  };
  const conv = (p: string, cout: number, cin: number, k: number): void => {
    add(`${p}.weight`, [cout, cin, k, k]);
    add(`${p}.bias`, [cout]);
  };
  const norm = (p: string, ch: number): void => {
    add(`${p}.weight`, [ch]);
    add(`${p}.bias`, [ch]);
  };
  const resnet = (p: string, cin: number, cout: number): void => {
    norm(`${p}.norm1`, cin);
    conv(`${p}.conv1`, cout, cin, 3);
    norm(`${p}.norm2`, cout);
    conv(`${p}.conv2`, cout, cout, 3);
    if (cin !== cout) conv(`${p}.conv_shortcut`, cout, cin, 1);
  };
  const mid = (p: string, ch: number): void => {
    resnet(`${p}.mid_block.resnets.0`, ch, ch);
    if (c.midBlockAddAttention) {
      norm(`${p}.mid_block.attentions.0.group_norm`, ch);
      for (const proj of ATTN_PROJ) {
        add(`${p}.mid_block.attentions.0.${proj}.weight`, [ch, ch]);
        add(`${p}.mid_block.attentions.0.${proj}.bias`, [ch]);
      }
    }
    resnet(`${p}.mid_block.resnets.1`, ch, ch);
  };
  const boc = c.blockOutChannels;
  const n = boc.length;
  const last = boc[n - 1]!;

  conv('encoder.conv_in', boc[0]!, c.inChannels, 3);
  for (let i = 0; i < n; i++) {
    const cin = i === 0 ? boc[0]! : boc[i - 1]!;
    const cout = boc[i]!;
    for (let j = 0; j < c.layersPerBlock; j++) {
      resnet(`encoder.down_blocks.${i}.resnets.${j}`, j === 0 ? cin : cout, cout);
    }
    if (i < n - 1) conv(`encoder.down_blocks.${i}.downsamplers.0.conv`, cout, cout, 3);
  }
  mid('encoder', last);
  norm('encoder.conv_norm_out', last);
  conv('encoder.conv_out', c.latentChannels, last, 3);

  conv('quant_conv', c.vqEmbedDim, c.latentChannels, 1);
  add('quantize.embedding.weight', [c.numVqEmbeddings, c.vqEmbedDim]);
  conv('post_quant_conv', c.latentChannels, c.vqEmbedDim, 1);

  conv('decoder.conv_in', last, c.latentChannels, 3);
  mid('decoder', last);
  const rev = boc.slice().reverse();
  for (let i = 0; i < n; i++) {
    const cin = i === 0 ? rev[0]! : rev[i - 1]!;
    const cout = rev[i]!;
    // Decoder blocks have one resnet more than the encoder's (num_layers = layers_per_block + 1).
    for (let j = 0; j <= c.layersPerBlock; j++) {
      resnet(`decoder.up_blocks.${i}.resnets.${j}`, j === 0 ? cin : cout, cout);
    }
    if (i < n - 1) conv(`decoder.up_blocks.${i}.upsamplers.0.conv`, cout, cout, 3);
  }
  norm('decoder.conv_norm_out', boc[0]!);
  conv('decoder.conv_out', c.outChannels, boc[0]!, 3);
  return out;
}

/** Maps a current attention weight name to its legacy spelling, or undefined for other weights. */
export function legacyAttentionName(name: string): string | undefined {
  const m =
    /^(encoder|decoder)\.mid_block\.attentions\.0\.(to_q|to_k|to_v|to_out\.0)\.(weight|bias)$/.exec(
      name,
    );
  if (!m) return undefined;
  return `${m[1]}.mid_block.attentions.0.${ATTN_PROJ_LEGACY[m[2] as (typeof ATTN_PROJ)[number]]}.${m[3]}`;
}

export interface VqWeightInfo {
  name: string;
  dtype: string;
  shape: number[];
  file: string;
  byteOffset: number;
  byteLength: number;
}

const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16']);

/**
 * Checks the weights against the config: every expected tensor present with the
 * exact shape and a float dtype, and nothing left over (leftovers mean the config
 * describes a different network, e.g. another layers_per_block). Returns the
 * weights by their current diffusers names (legacy attention names resolved).
 */
export function checkVqWeights(
  c: VqConfig,
  tensors: ReadonlyMap<string, VqWeightInfo>,
  where: string,
): Map<string, VqWeightInfo> {
  const out = new Map<string, VqWeightInfo>();
  const used = new Set<string>();
  const problems: string[] = [];
  for (const spec of expectedVqTensors(c)) {
    let t = tensors.get(spec.name);
    if (!t) {
      const legacy = legacyAttentionName(spec.name);
      if (legacy) t = tensors.get(legacy);
    }
    if (!t) {
      problems.push(`missing "${spec.name}" [${spec.shape.join(', ')}]`);
      continue;
    }
    used.add(t.name);
    let shape = t.shape;
    // Legacy attention projections may be stored as 1x1 convolutions.
    if (spec.shape.length === 2 && shape.length === 4 && shape[2] === 1 && shape[3] === 1)
      shape = shape.slice(0, 2);
    if (shape.length !== spec.shape.length || shape.some((d, i) => d !== spec.shape[i])) {
      problems.push(
        `"${t.name}" has shape [${t.shape.join(', ')}], config implies [${spec.shape.join(', ')}]`,
      );
      continue;
    }
    if (!FLOAT_DTYPES.has(t.dtype)) {
      problems.push(`"${t.name}" has dtype ${t.dtype} (expected F32, F16 or BF16)`);
      continue;
    }
    out.set(spec.name, { ...t, shape: spec.shape.slice() });
  }
  const extra = [...tensors.keys()].filter((k) => !used.has(k));
  if (extra.length > 0) {
    const list = extra
      .slice(0, 5)
      .map((k) => `"${k}"`)
      .join(', ');
    problems.push(
      `${extra.length} tensor(s) the config does not use: ${list}${extra.length > 5 ? ', ...' : ''}`,
    );
  }
  if (problems.length > 0) {
    const shown = problems.slice(0, 8).join('; ');
    throw new DimooError(
      `${where}: weights do not match vqvae/config.json (${problems.length} problem(s)): ${shown}${problems.length > 8 ? '; ...' : ''}`,
      'E_CHECKPOINT',
    );
  }
  return out;
}
