/**
 * The shapes model's starting point: a small LLaDA config in the official
 * schema and vocabulary layout (text ids, specials at their real ids, 8192
 * image codes from 126356) with a tokenizer whose words are exactly those the
 * world and the system prompts use. Training (`dimoo train`) starts from the
 * random checkpoint written here.
 */
import { PROMPT_TEMPLATES } from '../pipelines/prompts.js';
import {
  writeRandomCheckpoint,
  type RandomCheckpointResult,
  type RandomModelSizes,
} from '../tools/random-checkpoint.js';
import { writeTokenizerFiles } from '../tools/tokenizer-files.js';
import { writeRandomVq } from '../tools/random-vq.js';
import { WORLD_WORDS } from './language.js';

/** d_model 256, 8 layers: ~6.3M parameters besides the 134548-row embedding and head. */
export const SHAPES_MODEL_SIZES: Readonly<RandomModelSizes> = Object.freeze({
  dModel: 256,
  nHeads: 4,
  nLayers: 8,
  mlpHiddenSize: 768,
});

/** The system prompts the world's data uses (text-to-image, editing, understanding). */
export const SHAPES_SYSTEM_PROMPTS: readonly string[] = [
  PROMPT_TEMPLATES.image_generation,
  PROMPT_TEMPLATES.image_editing,
  PROMPT_TEMPLATES.text_understanding,
];

/** Split as the tokenizer's Whitespace pre-tokenizer does (\w+|[^\w\s]+). */
export function splitWords(text: string): string[] {
  return text.match(/\w+|[^\w\s]+/g) ?? [];
}

/**
 * The tokenizer's words, ids 1..N in this order ([UNK] = 0): system-prompt
 * words first, then the world's. Case-sensitive, as the official tokenizer.
 */
export function shapesVocabulary(): string[] {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const w of [...SHAPES_SYSTEM_PROMPTS.flatMap(splitWords), ...WORLD_WORDS]) {
    if (!seen.has(w)) {
      seen.add(w);
      out.push(w);
    }
  }
  return out;
}

/**
 * The shapes VQ-VAE (diffusers VQModel config): 16x downsampling (5 blocks) so a
 * 128x128 picture is an 8x8 token grid; slim at full resolution, where a
 * training step on this 2-core machine spends most of its time; 16-dim codes
 * (low-dimensional codebooks stay better used); 2048 codes.
 */
export const SHAPES_VQ_CONFIG: Readonly<Record<string, unknown>> = Object.freeze({
  _class_name: 'VQModel',
  _diffusers_version: '0.34.0',
  act_fn: 'silu',
  block_out_channels: [16, 32, 32, 64, 128],
  down_block_types: Array(5).fill('DownEncoderBlock2D'),
  up_block_types: Array(5).fill('UpDecoderBlock2D'),
  force_upcast: false,
  in_channels: 3,
  out_channels: 3,
  latent_channels: 16,
  vq_embed_dim: null,
  layers_per_block: 1,
  lookup_from_codebook: true,
  mid_block_add_attention: false,
  norm_num_groups: 8,
  norm_type: 'group',
  num_vq_embeddings: 2048,
  sample_size: 128,
  scaling_factor: 0.18215,
});

export interface ShapesCheckpointOptions {
  seed?: number;
  /** Override sizes (tests use tiny ones). */
  overrides?: Partial<RandomModelSizes>;
  /** Write a random VQ-VAE of SHAPES_VQ_CONFIG into vqvae/ (default true; the trained one replaces it). */
  vq?: boolean;
}

/** Writes a fresh random shapes checkpoint (official layout) into dir. */
export async function writeShapesCheckpoint(
  dir: string,
  opts: ShapesCheckpointOptions = {},
): Promise<RandomCheckpointResult> {
  const seed = opts.seed ?? 0;
  const result = await writeRandomCheckpoint(
    dir,
    { ...SHAPES_MODEL_SIZES, ...opts.overrides },
    {
      seed,
      ...(opts.vq !== false && {
        writeVq: (vqDir: string) => {
          writeRandomVq(vqDir, 'tiny', { seed, overrides: { ...SHAPES_VQ_CONFIG } });
        },
      }),
    },
  );
  // Same file names and layout as the generic tokenizer, with the world's words.
  writeTokenizerFiles(result.dir, shapesVocabulary());
  return result;
}
