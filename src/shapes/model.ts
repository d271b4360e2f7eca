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
import { CANVAS } from './world.js';
import * as fs from 'node:fs';
import { DimooError } from '../errors.js';
import * as path from 'node:path';
import {
  GENERATION_CONFIG_FILE,
  writeGenerationDefaults,
  type GenerationDefaults,
} from '../checkpoint/generation-config.js';
import { loadVqConfig, VQ_CONFIG_FILE, VQ_WEIGHTS_FILE } from '../checkpoint/vq-config.js';
import { END_ADDED_ID, FIRST_ADDED_ID, IMAGE_TOKEN_OFFSET } from '../tools/tokenizer-files.js';
import { seedImageRowsFromCodebook } from './codebook-rows.js';

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
 * training step on this 2-core machine spends most of its time. Its codes are
 * 48 values, a cell's 4x4 RGB thumbnail (SHAPES_VQ_THUMBNAIL), in 8192 rows:
 * the world has 873 distinct cells (~7 800 before its places moved onto the
 * token grid). One norm group; the norms start as
 * fixed gains (SHAPES_VQ_SOFT_NORM). Why, with measurements: docs/shapes.md.
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
  latent_channels: 48,
  vq_embed_dim: null,
  layers_per_block: 1,
  lookup_from_codebook: true,
  mid_block_add_attention: false,
  norm_num_groups: 1,
  norm_type: 'group',
  num_vq_embeddings: 8192,
  sample_size: 128,
  scaling_factor: 0.18215,
});

/**
 * The shapes VQ-VAE's codebook moves by EMA (this decay), not by its gradient
 * (with Adam a code travels ~lr per step). Not shown to speed learning up: the
 * colours stayed wrong either way (docs/shapes.md, "Measured the next day").
 */
export const SHAPES_VQ_EMA = 0.99;

/**
 * Peak learning rate of the shapes VQ-VAE. With the soft-norm start the
 * network learns like an unnormalised one and 2e-3 blew up at the end of the
 * warm-up (6 dB for 200 steps); 1e-3 reached 19.4 dB (autoencoder) at step 600.
 */
export const SHAPES_VQ_LR = 1e-3;

/**
 * Soft-norm scale of the shapes VQ-VAE (VqTrainOptions.softNorm): its GroupNorms
 * start as fixed gains. With real per-picture normalisation the autoencoder was
 * at ~15.7 dB after 600 steps (an object's normalised features depend on how
 * much flat background surrounds it); with this start, 19.4 dB, as fast as a
 * network without norms. The weights stay a plain VQModel's.
 */
export const SHAPES_VQ_SOFT_NORM = 3e-4;

/**
 * Steps of autoencoder warm-up before quantisation (see VqTrainOptions), so the
 * codes start from an encoder that already works. Not shown to help: with or
 * without it the decoded colours were still wrong after 10 minutes.
 */
export const SHAPES_VQ_AE_WARMUP = 800;

/**
 * The shapes VQ-VAE's codes are the world's 4x4 cell thumbnails (48 values,
 * shapes/vq-dictionary.ts): a fixed codebook the encoder regresses.
 */
export const SHAPES_VQ_THUMBNAIL = 4;

/** Training scenes whose cells make the thumbnail codebook (the count of distinct cells stops growing near 20 000). */
export const SHAPES_VQ_DICTIONARY_SCENES = 20_000;

/**
 * Understanding records train with an answer + padding block of this many
 * tokens instead of the original's 1024 (`dimoo train --answer-block`): the
 * world's longest answer (a three-object description) is ~30 tokens, and a
 * 1024-token block would make every question ~1100 tokens long. Inference
 * uses the same length (the checkpoint's generation_config.json).
 */
export const SHAPES_ANSWER_BLOCK = 48;

/** The request defaults a shapes checkpoint carries: its canvas, its answer block. */
export function shapesGenerationDefaults(answerBlock = SHAPES_ANSWER_BLOCK): GenerationDefaults {
  return {
    textToImage: { width: CANVAS, height: CANVAS },
    imageToImage: { cropBudget: CANVAS },
    understanding: {
      genLength: answerBlock,
      blockLength: answerBlock,
      steps: answerBlock,
      cropBudget: CANVAS,
    },
  };
}

export interface ShapesCheckpointOptions {
  seed?: number;
  /** Override sizes (tests use tiny ones). */
  overrides?: Partial<RandomModelSizes>;
  /** Write a random VQ-VAE of SHAPES_VQ_CONFIG into vqvae/ (default true; the trained one replaces it). */
  vq?: boolean;
  /** Copy this VQ-VAE folder (config.json + weights) into vqvae/ instead of a random one. */
  vqDir?: string;
  /** Understanding answer block the model will train with (default SHAPES_ANSWER_BLOCK). */
  answerBlock?: number;
  /**
   * Start the image codes' embedding and head rows from the VQ-VAE's thumbnail
   * codebook (codebook-rows.ts). Default: on with `vqDir` (a trained VQ-VAE).
   */
  codebookRows?: boolean;
}

/**
 * The vocabulary rows a shapes model can ever read or predict: [UNK] and the
 * world's words, the special tokens, the VQ-VAE's image codes. The others
 * start (and, trained, stay) at zero.
 */
export function shapesVocabRows(words: number, codebookSize: number): Array<[number, number]> {
  return [
    [0, words + 1],
    [FIRST_ADDED_ID, END_ADDED_ID],
    [IMAGE_TOKEN_OFFSET, IMAGE_TOKEN_OFFSET + codebookSize],
  ];
}

/** Writes a fresh random shapes checkpoint (official layout) into dir. */
export async function writeShapesCheckpoint(
  dir: string,
  opts: ShapesCheckpointOptions = {},
): Promise<RandomCheckpointResult> {
  const seed = opts.seed ?? 0;
  const words = shapesVocabulary();
  let codebookSize = 8192;
  let writeVq: ((vqDir: string) => void) | undefined;
  if (opts.vqDir !== undefined) {
    const src = opts.vqDir;
    for (const f of [VQ_CONFIG_FILE, VQ_WEIGHTS_FILE]) {
      if (!fs.existsSync(path.join(src, f)))
        throw new DimooError(
          `${path.join(src, f)}: missing (a VQ-VAE folder holds ${VQ_CONFIG_FILE} and ${VQ_WEIGHTS_FILE})`,
          'E_PARAM',
        );
    }
    codebookSize = loadVqConfig(src).numVqEmbeddings;
    writeVq = (vqDir) => {
      for (const f of [VQ_CONFIG_FILE, VQ_WEIGHTS_FILE])
        fs.copyFileSync(path.join(src, f), path.join(vqDir, f));
    };
  } else if (opts.vq !== false) {
    writeVq = (vqDir) => {
      codebookSize = writeRandomVq(vqDir, 'tiny', {
        seed,
        overrides: { ...SHAPES_VQ_CONFIG },
      }).numVqEmbeddings;
    };
  }
  const result = await writeRandomCheckpoint(
    dir,
    { ...SHAPES_MODEL_SIZES, ...opts.overrides },
    {
      seed,
      vocabRows: shapesVocabRows(words.length, codebookSize),
      ...(writeVq && { writeVq }),
    },
  );
  if (opts.codebookRows ?? opts.vqDir !== undefined)
    seedImageRowsFromCodebook(result.dir, IMAGE_TOKEN_OFFSET, seed);
  // Same file names and layout as the generic tokenizer, with the world's words.
  writeTokenizerFiles(result.dir, words);
  writeGenerationDefaults(
    path.join(result.dir, GENERATION_CONFIG_FILE),
    shapesGenerationDefaults(opts.answerBlock),
  );
  return result;
}
