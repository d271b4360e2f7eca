/**
 * Writes a randomly initialised VQ-VAE folder (config.json +
 * diffusion_pytorch_model.safetensors) in the diffusers layout, for tests and
 * benchmarks: 'tiny' is the golden checkpoint's configuration, 'amused' the
 * real aMUSEd-512 / Lumina-DiMOO sizes.
 *
 * Initialisation follows PyTorch's defaults where they keep activations sane
 * (conv/linear weights and biases uniform in +-1/sqrt(fan_in)); norm affines are
 * perturbed around (1, 0) so tests exercise them; the codebook is normal with a
 * spread similar to the latents', so encoding does not collapse onto one code.
 */
import * as path from 'node:path';
import { DimooError } from '../errors.js';
import { atomicWriteFileSync } from '../util/atomic-write.js';
import { makeDirs } from '../util/fs-errors.js';
import { f32ToBf16, f32ToF16 } from '../checkpoint/dtypes.js';
import { Rng, tensorSeed } from './random-checkpoint.js';
import { numel, writeSafetensors, type WriteEntry } from '../checkpoint/safetensors.js';
import {
  expectedVqTensors,
  parseVqConfig,
  VQ_CONFIG_FILE,
  VQ_WEIGHTS_FILE,
  type VqConfig,
} from '../checkpoint/vq-config.js';

export type VqPreset = 'tiny' | 'amused';

const COMMON = {
  _class_name: 'VQModel',
  _diffusers_version: '0.34.0',
  act_fn: 'silu',
  force_upcast: false,
  in_channels: 3,
  layers_per_block: 2,
  lookup_from_codebook: true,
  mid_block_add_attention: false,
  norm_type: 'group',
  num_vq_embeddings: 8192,
  out_channels: 3,
  scaling_factor: 0.18215,
  vq_embed_dim: null,
  down_block_types: Array(5).fill('DownEncoderBlock2D'),
  up_block_types: Array(5).fill('UpDecoderBlock2D'),
};

export const VQ_PRESETS: Readonly<Record<VqPreset, Record<string, unknown>>> = {
  tiny: {
    ...COMMON,
    block_out_channels: [8, 16, 16, 32, 32],
    latent_channels: 8,
    norm_num_groups: 4,
    sample_size: 32,
  },
  amused: {
    ...COMMON,
    block_out_channels: [128, 256, 256, 512, 768],
    latent_channels: 64,
    norm_num_groups: 32,
    sample_size: 32,
  },
};

export function isVqPreset(s: unknown): s is VqPreset {
  return s === 'tiny' || s === 'amused';
}

export interface RandomVqOptions {
  seed?: number;
  /** Stored dtype (default F32, as the released checkpoint). */
  dtype?: 'F32' | 'F16' | 'BF16';
  /** Config fields on top of the preset (e.g. { mid_block_add_attention: true }). */
  overrides?: Record<string, unknown>;
}

type Init = { kind: 'uniform'; lo: number; hi: number } | { kind: 'normal'; std: number };

function initFor(name: string, shape: number[]): Init {
  if (name === 'quantize.embedding.weight') return { kind: 'normal', std: 0.5 };
  if (/(norm\d?|norm_out|group_norm)\.weight$/.test(name))
    return { kind: 'uniform', lo: 0.9, hi: 1.1 };
  if (/(norm\d?|norm_out|group_norm)\.bias$/.test(name))
    return { kind: 'uniform', lo: -0.1, hi: 0.1 };
  // Weights: fan_in = in * kh * kw; biases use their layer's fan_in, which the name alone
  // does not give, so they share the weight's bound via the caller.
  const fanIn = shape.length > 1 ? numel(shape.slice(1)) : shape[0]!;
  const b = 1 / Math.sqrt(fanIn);
  return { kind: 'uniform', lo: -b, hi: b };
}

const CHUNK = 1 << 16;

function producer(count: number, init: Init, seed: number, dtype: 'F32' | 'F16' | 'BF16') {
  return (write: (chunk: Uint8Array) => void): void => {
    const rng = new Rng(seed);
    const buf = new Float32Array(Math.min(CHUNK, count));
    for (let done = 0; done < count;) {
      const n = Math.min(CHUNK, count - done);
      for (let i = 0; i < n; i++) {
        if (init.kind === 'uniform') {
          buf[i] = init.lo + (init.hi - init.lo) * rng.next();
        } else {
          // Box-Muller; one of the pair is enough here.
          const u1 = 1 - rng.next();
          const u2 = rng.next();
          buf[i] = init.std * Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
        }
      }
      const vals = buf.subarray(0, n);
      const bytes = dtype === 'F32' ? vals : dtype === 'BF16' ? f32ToBf16(vals) : f32ToF16(vals);
      write(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
      done += n;
    }
  };
}

/** Writes `vqDir/config.json` and `vqDir/diffusion_pytorch_model.safetensors`; returns the config. */
export function writeRandomVq(
  vqDir: string,
  preset: VqPreset,
  opts: RandomVqOptions = {},
): VqConfig {
  if (!isVqPreset(preset)) {
    throw new DimooError(
      `unknown random VQ preset "${String(preset)}" (known: tiny, amused)`,
      'E_PARAM',
    );
  }
  const dir = path.resolve(vqDir);
  makeDirs(dir);
  const json = { ...VQ_PRESETS[preset], ...opts.overrides };
  const configPath = path.join(dir, VQ_CONFIG_FILE);
  const config = parseVqConfig(json, configPath);
  const dtype = opts.dtype ?? 'F32';
  const seed = opts.seed ?? 0;
  const specs = expectedVqTensors(config);
  const weightShape = new Map(specs.map((s) => [s.name, s.shape]));
  const entries: WriteEntry[] = specs.map((s) => {
    // A bias takes its bound from the weight of the same layer (PyTorch: 1/sqrt(fan_in)).
    const w = s.name.endsWith('.bias')
      ? weightShape.get(s.name.replace(/\.bias$/, '.weight'))
      : undefined;
    const isNorm = /(norm\d?|norm_out|group_norm)\.bias$/.test(s.name);
    const init =
      w && !isNorm ? initFor(s.name.replace(/\.bias$/, '.weight'), w) : initFor(s.name, s.shape);
    return {
      name: s.name,
      dtype,
      shape: s.shape,
      data: producer(numel(s.shape), init, tensorSeed(seed, s.name), dtype),
    };
  });
  writeSafetensors(path.join(dir, VQ_WEIGHTS_FILE), entries, { format: 'pt' });
  atomicWriteFileSync(configPath, JSON.stringify(json, null, 2) + '\n', { fsync: false });
  return config;
}
