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

export interface ShapesCheckpointOptions {
  seed?: number;
  /** Override sizes (tests use tiny ones). */
  overrides?: Partial<RandomModelSizes>;
  /** Write a random tiny VQ-VAE into vqvae/ (default true; the trained one replaces it). */
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
          writeRandomVq(vqDir, 'tiny', { seed });
        },
      }),
    },
  );
  // Same file names and layout as the generic tokenizer, with the world's words.
  writeTokenizerFiles(result.dir, shapesVocabulary());
  return result;
}
