/**
 * A checkpoint's own sampling defaults, read from `generation_config.json`
 * (the file Hugging Face models carry for the same purpose). The official
 * checkpoints only hold token ids there; a model trained by this project may
 * add a `dimoo` section with the sizes and lengths it was trained on, e.g.
 *
 *   "dimoo": {
 *     "text_to_image": { "width": 128, "height": 128 },
 *     "image_to_image": { "crop_budget": 128 },
 *     "understanding": { "gen_length": 32, "block_length": 32, "steps": 32, "crop_budget": 128 }
 *   }
 *
 * Every field is optional; what is absent keeps the original scripts'
 * defaults. The library applies them only where a request gives no value.
 *
 *   readGenerationDefaults(file)            the parsed section ({} without file or section)
 *   writeGenerationDefaults(file, d)        merges a section into the file (atomic)
 */
import * as fs from 'node:fs';
import { DimooError } from '../errors.js';
import { atomicWriteFileSync } from '../util/atomic-write.js';

export interface GenerationDefaults {
  textToImage?: { width?: number; height?: number };
  imageToImage?: { cropBudget?: number };
  understanding?: { genLength?: number; blockLength?: number; steps?: number; cropBudget?: number };
}

export const GENERATION_CONFIG_FILE = 'generation_config.json';
const SECTION = 'dimoo';

// JSON key -> field, per task (snake_case in the file, as Hugging Face writes it).
const FIELDS = {
  text_to_image: ['textToImage', { width: 'width', height: 'height' }],
  image_to_image: ['imageToImage', { crop_budget: 'cropBudget' }],
  understanding: [
    'understanding',
    {
      gen_length: 'genLength',
      block_length: 'blockLength',
      steps: 'steps',
      crop_budget: 'cropBudget',
    },
  ],
} as const;

function bad(file: string, where: string, msg: string): never {
  throw new DimooError(`${file}: ${where} ${msg}`, 'E_CONFIG');
}

/** Parses the `dimoo` section of a generation_config.json object. */
export function parseGenerationDefaults(json: unknown, file: string): GenerationDefaults {
  if (typeof json !== 'object' || json === null || Array.isArray(json))
    bad(file, 'the file', 'is not a JSON object');
  const sec = (json as Record<string, unknown>)[SECTION];
  if (sec === undefined) return {};
  if (typeof sec !== 'object' || sec === null || Array.isArray(sec))
    bad(file, `"${SECTION}"`, 'must be an object');
  const out: Record<string, Record<string, number>> = {};
  for (const [task, value] of Object.entries(sec)) {
    const spec = (FIELDS as Record<string, readonly [string, Record<string, string>]>)[task];
    if (!spec)
      bad(
        file,
        `"${SECTION}.${task}"`,
        `is not a known task (known: ${Object.keys(FIELDS).join(', ')})`,
      );
    if (typeof value !== 'object' || value === null || Array.isArray(value))
      bad(file, `"${SECTION}.${task}"`, 'must be an object');
    const [name, keys] = spec;
    const fields: Record<string, number> = {};
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      const field = keys[k];
      if (!field)
        bad(
          file,
          `"${SECTION}.${task}.${k}"`,
          `is not a known field (known: ${Object.keys(keys).join(', ')})`,
        );
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1)
        bad(
          file,
          `"${SECTION}.${task}.${k}"`,
          `must be a positive integer, got ${JSON.stringify(v)}`,
        );
      fields[field] = v;
    }
    out[name] = fields;
  }
  return out as GenerationDefaults;
}

/** The checkpoint's defaults; {} when the file or its section is absent. */
export function readGenerationDefaults(file: string | undefined): GenerationDefaults {
  if (file === undefined || !fs.existsSync(file)) return {};
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new DimooError(`${file}: not valid JSON (${(e as Error).message})`, 'E_CONFIG');
  }
  return parseGenerationDefaults(json, file);
}

/** The section as the file spells it. */
export function generationDefaultsJson(
  d: GenerationDefaults,
): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const [task, [name, keys]] of Object.entries(FIELDS)) {
    const fields = (d as Record<string, Record<string, number> | undefined>)[name];
    if (!fields) continue;
    const o: Record<string, number> = {};
    for (const [k, field] of Object.entries(keys as Record<string, string>)) {
      if (fields[field] !== undefined) o[k] = fields[field];
    }
    out[task] = o;
  }
  return out;
}

/**
 * Merges `d` into the file's `dimoo` section (task by task, field by field),
 * keeping every other key; creates the file when absent.
 */
export function writeGenerationDefaults(file: string, d: GenerationDefaults): void {
  let json: Record<string, unknown> = {};
  if (fs.existsSync(file)) {
    json = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
    parseGenerationDefaults(json, file);
  }
  const sec = { ...((json[SECTION] as Record<string, Record<string, number>> | undefined) ?? {}) };
  for (const [task, fields] of Object.entries(generationDefaultsJson(d)))
    sec[task] = { ...sec[task], ...fields };
  json[SECTION] = sec;
  atomicWriteFileSync(file, JSON.stringify(json, null, 2) + '\n', { fsync: false });
}
