/**
 * Prompt files for batch generation, read as the original's
 * inference_t2i_ddp.py reads them (by extension):
 *   .txt    one prompt per line; blank lines skipped
 *   .jsonl  one object per line with a string "prompt" (blank ones skipped,
 *           as the original does) and, ours, an optional integer "seed"
 *   .json   an array of prompt strings (the original's form), or of such objects
 * Every problem names the file and the line (or array item).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DimooError } from '../errors.js';
import { wrapSystemError } from '../util/fs-errors.js';

export interface PromptItem {
  /** 0-based position among the prompts kept (the original's file-name index). */
  index: number;
  /** Where it came from: "line 3" or "item 3" (1-based). */
  where: string;
  prompt: string;
  seed?: number;
}

const E = 'E_PARAM';

function entry(
  file: string,
  where: string,
  v: unknown,
): { prompt: string; seed?: number } | undefined {
  const fail = (what: string): never => {
    throw new DimooError(`${file}: ${where}: ${what}`, E);
  };
  if (typeof v === 'string') return v.trim() === '' ? undefined : { prompt: v.trim() };
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    return fail('expected a prompt string or an object with a "prompt" field');
  const o = v as Record<string, unknown>;
  if (!('prompt' in o)) return fail('no "prompt" field');
  if (typeof o.prompt !== 'string')
    return fail(`"prompt" must be a string, got ${typeof o.prompt}`);
  const prompt = o.prompt.trim();
  if (prompt === '') return undefined;
  if (o.seed === undefined) return { prompt };
  if (typeof o.seed !== 'number' || !Number.isSafeInteger(o.seed) || o.seed < 0)
    return fail(`"seed" must be a non-negative integer, got ${JSON.stringify(o.seed)}`);
  return { prompt, seed: o.seed };
}

/** Parses a prompt file's text; `file` is only used in messages and for the format. */
export function parsePromptFile(file: string, text: string): PromptItem[] {
  const ext = path.extname(file).toLowerCase();
  const out: PromptItem[] = [];
  const push = (where: string, e: { prompt: string; seed?: number } | undefined): void => {
    if (e) out.push({ index: out.length, where, ...e });
  };
  if (ext === '.txt') {
    text.split(/\r?\n/).forEach((l, i) => push(`line ${i + 1}`, entry(file, `line ${i + 1}`, l)));
  } else if (ext === '.jsonl') {
    text.split(/\r?\n/).forEach((l, i) => {
      const where = `line ${i + 1}`;
      if (l.trim() === '') return;
      let v: unknown;
      try {
        v = JSON.parse(l);
      } catch (e) {
        throw new DimooError(`${file}: ${where}: not valid JSON (${(e as Error).message})`, E);
      }
      if (typeof v !== 'object' || v === null || Array.isArray(v))
        throw new DimooError(`${file}: ${where}: expected an object with a "prompt" field`, E);
      push(where, entry(file, where, v));
    });
  } else if (ext === '.json') {
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch (e) {
      throw new DimooError(`${file}: not valid JSON (${(e as Error).message})`, E);
    }
    if (!Array.isArray(v)) throw new DimooError(`${file}: expected an array of prompts`, E);
    v.forEach((item, i) => push(`item ${i + 1}`, entry(file, `item ${i + 1}`, item)));
  } else {
    throw new DimooError(
      `${file}: unknown prompt file type "${ext}" (use .txt, .jsonl or .json)`,
      E,
    );
  }
  if (out.length === 0) throw new DimooError(`${file}: no prompts in it`, E);
  return out;
}

export function readPromptFile(file: string): PromptItem[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw wrapSystemError(e, file, 'cannot read');
  }
  return parsePromptFile(file, text);
}

/**
 * The output name of one prompt, after the original's: index, the first ten
 * words (letters, digits, '_' and '-' kept), size, steps and guidance. The
 * seed is not in it (it may be drawn), so a rerun finds the files it made.
 */
export function batchFileName(
  item: PromptItem,
  s: { height: number; width: number; timesteps: number; cfgScale: number },
): string {
  const words = item.prompt.split(/\s+/).slice(0, 10).join('_');
  const slug = [...words]
    .filter((c) => /[\p{L}\p{N}_-]/u.test(c))
    .join('')
    .slice(0, 80);
  return `${item.index}_${slug}_${s.height}x${s.width}_t${s.timesteps}_cfg${s.cfgScale}.png`;
}
