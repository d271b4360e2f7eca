/**
 * Training data: JSONL files whose lines are either records of the original's
 * item format (`system_prompt`, `user_prompt`, `user_image`, `answer_image`,
 * `answer_text`) or already processed sequences (`input_ids` + `labels`,
 * -100 = not learned). Everything is read, tokenized and checked before the
 * first training step, so a bad line stops the run at once (naming file and
 * line), or is skipped and counted with `skipBad`.
 *
 * Images are resolved by the caller (`DataContext.resolveImage`): a token-grid
 * file, an inline grid, or an image file encoded with the checkpoint's VQ-VAE.
 *
 *   loadTrainingData(files, ctx, opts)      { records, skipped }
 *   recordLayout(record, choices, tokens, opts)  the record's ids and labels for one use
 *   collate(layouts, opts)                  a right-padded batch (id 0, label -100)
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DimooError, isDimooError } from '../errors.js';
import type { SpecialTokens } from '../checkpoint/special-tokens.js';
import {
  IGNORE,
  answerText,
  instructionText,
  itemKind,
  layoutItem,
  layoutLength,
  truncateIds,
  uncondInstructionText,
  type GridCodes,
  type Layout,
  type LayoutOptions,
  type RecipeChoices,
  type TokenizedItem,
} from './recipe.js';

/** An image grid with pixel sizes, as token-grid files hold it. */
export interface PixelGrid {
  height: number;
  width: number;
  codes: number[];
}

export interface DataContext {
  tokens: SpecialTokens;
  /** Logits width: every id must be below it. */
  vocabSize: number;
  /** Pixels per grid cell side (the VQ-VAE's downsampling). */
  vqScale: number;
  tokenizer: { encode(text: string): Promise<number[]> };
  /**
   * A record's image field (a non-empty string or an object) as a grid;
   * `baseDir` is the data file's folder, for relative paths.
   */
  resolveImage(value: unknown, where: string, baseDir: string): Promise<PixelGrid>;
  /** Longest sequence accepted (the recipe's longest layout of an item). */
  maxLen: number;
  /** Understanding answer + padding block length (default: the original's 1024). */
  answerBlock?: number;
}

export interface LoadOptions {
  skipBad?: boolean;
  /** Called after each line (for a progress bar while images are encoded). */
  onLine?: (done: number, total: number) => void;
}

export interface ProcessedRecord {
  kind: 'processed';
  where: string;
  inputIds: number[];
  labels: number[];
}

export interface ItemRecord {
  kind: 'item';
  where: string;
  item: TokenizedItem;
}

export type TrainRecord = ProcessedRecord | ItemRecord;

export interface Skipped {
  where: string;
  error: string;
}

export interface LoadedData {
  records: TrainRecord[];
  skipped: Skipped[];
}

const E = 'E_DATA';

const ITEM_FIELDS = ['system_prompt', 'user_prompt', 'user_image', 'answer_image', 'answer_text'];

function fail(where: string, msg: string): never {
  throw new DimooError(`${where}: ${msg}`, E);
}

function checkIds(
  v: unknown,
  field: string,
  where: string,
  vocab: number,
  allowIgnore: boolean,
): number[] {
  if (!Array.isArray(v)) fail(where, `"${field}" must be an array of integers`);
  const list = v as unknown[];
  for (let i = 0; i < list.length; i++) {
    const x = list[i];
    const ok =
      typeof x === 'number' &&
      Number.isInteger(x) &&
      ((x >= 0 && x < vocab) || (allowIgnore && x === IGNORE));
    if (!ok) {
      fail(
        where,
        `${field}[${i}] = ${JSON.stringify(x)} is outside the vocabulary [0, ${vocab})` +
          (allowIgnore ? ' and not -100' : ''),
      );
    }
  }
  return list as number[];
}

/** Checks a processed sequence (also the recipe's own output, as a guard). */
export function checkProcessed(
  inputIds: readonly number[],
  labels: readonly number[],
  where: string,
  ctx: Pick<DataContext, 'tokens' | 'maxLen'>,
): void {
  if (inputIds.length === 0) fail(where, '"input_ids" is empty');
  if (labels.length !== inputIds.length) {
    fail(where, `"labels" has ${labels.length} entries but "input_ids" has ${inputIds.length}`);
  }
  if (inputIds.length > ctx.maxLen) {
    fail(where, `sequence of ${inputIds.length} tokens is longer than --max-len ${ctx.maxLen}`);
  }
  let n = 0;
  for (let i = 0; i < labels.length; i++) {
    if (labels[i] === IGNORE) continue;
    n++;
    // A label whose input is visible would teach copying, not denoising.
    if (inputIds[i] !== ctx.tokens.mask) {
      fail(
        where,
        `labels[${i}] = ${labels[i]} but input_ids[${i}] = ${inputIds[i]} is not the mask token ${ctx.tokens.mask}`,
      );
    }
  }
  if (n === 0) fail(where, 'no position is learned (every label is -100)');
}

function optString(rec: Record<string, unknown>, key: string, where: string): string {
  const v = rec[key];
  if (v === undefined || v === null) return '';
  if (typeof v !== 'string') fail(where, `"${key}" must be a string, got ${typeof v}`);
  return v;
}

function hasImage(v: unknown): boolean {
  return !(v === undefined || v === null || v === '');
}

async function toGrid(
  value: unknown,
  field: string,
  where: string,
  baseDir: string,
  ctx: DataContext,
): Promise<GridCodes> {
  let g: PixelGrid;
  try {
    g = await ctx.resolveImage(value, `${where}: "${field}"`, baseDir);
  } catch (e) {
    if (isDimooError(e) && e.message.startsWith(where)) throw e;
    if (isDimooError(e)) fail(where, `"${field}": ${e.message}`);
    throw e;
  }
  const s = ctx.vqScale;
  if (g.height % s !== 0 || g.width % s !== 0 || g.height < s || g.width < s) {
    fail(where, `"${field}" is ${g.width}x${g.height} pixels, not a multiple of the VQ scale ${s}`);
  }
  return { gridH: g.height / s, gridW: g.width / s, codes: g.codes };
}

async function parseItem(
  rec: Record<string, unknown>,
  where: string,
  baseDir: string,
  ctx: DataContext,
): Promise<ItemRecord> {
  const system = optString(rec, 'system_prompt', where);
  const user = optString(rec, 'user_prompt', where);
  const answer = optString(rec, 'answer_text', where);
  for (const key of ['user_image', 'answer_image']) {
    const v = rec[key];
    if (hasImage(v) && typeof v !== 'string' && (typeof v !== 'object' || Array.isArray(v))) {
      fail(where, `"${key}" must be a file path or a {"height","width","codes"} grid`);
    }
  }
  let kind;
  try {
    kind = itemKind(hasImage(rec.user_image), hasImage(rec.answer_image));
  } catch (e) {
    fail(where, (e as Error).message);
  }
  const enc = async (text: string) => truncateIds(await ctx.tokenizer.encode(text));
  const item: TokenizedItem = {
    kind,
    instruction: await enc(instructionText(system, user)),
  };
  if (kind !== 'mmu') item.uncondInstruction = await enc(uncondInstructionText(system));
  if (kind !== 't2i')
    item.userImage = await toGrid(rec.user_image, 'user_image', where, baseDir, ctx);
  if (kind !== 'mmu')
    item.answerImage = await toGrid(rec.answer_image, 'answer_image', where, baseDir, ctx);
  if (kind === 'mmu') item.answer = await enc(answerText(answer));
  for (const g of [item.userImage, item.answerImage]) {
    if (!g) continue;
    const bad = g.codes.findIndex(
      (c) => !Number.isInteger(c) || c < 0 || c >= ctx.tokens.codebookSize,
    );
    if (bad >= 0)
      fail(
        where,
        `image code ${g.codes[bad]} is outside the codebook [0, ${ctx.tokens.codebookSize})`,
      );
  }
  const len = layoutLength(item, { answerBlock: ctx.answerBlock });
  if (len > ctx.maxLen)
    fail(where, `its layout has ${len} tokens, longer than --max-len ${ctx.maxLen}`);
  return { kind: 'item', where, item };
}

async function parseLine(
  line: string,
  where: string,
  baseDir: string,
  ctx: DataContext,
): Promise<TrainRecord> {
  let rec: unknown;
  try {
    rec = JSON.parse(line);
  } catch (e) {
    fail(where, `not valid JSON (${(e as Error).message})`);
  }
  if (typeof rec !== 'object' || rec === null || Array.isArray(rec)) {
    fail(where, 'expected a JSON object');
  }
  const r = rec as Record<string, unknown>;
  if ('input_ids' in r || 'labels' in r) {
    const inputIds = checkIds(r.input_ids, 'input_ids', where, ctx.vocabSize, false);
    const labels = checkIds(r.labels, 'labels', where, ctx.vocabSize, true);
    checkProcessed(inputIds, labels, where, ctx);
    return { kind: 'processed', where, inputIds, labels };
  }
  if (!ITEM_FIELDS.some((k) => k in r)) {
    fail(where, `expected "input_ids" + "labels" or the item fields (${ITEM_FIELDS.join(', ')})`);
  }
  return parseItem(r, where, baseDir, ctx);
}

/** Reads and checks every line of every file, in order. */
export async function loadTrainingData(
  files: string | readonly string[],
  ctx: DataContext,
  opts: LoadOptions = {},
): Promise<LoadedData> {
  const list = typeof files === 'string' ? [files] : files;
  const t = ctx.tokens;
  if (t.imageOffset + t.codebookSize > ctx.vocabSize) {
    throw new DimooError(
      `image ids reach ${t.imageOffset + t.codebookSize}, beyond the model's vocabulary ${ctx.vocabSize}`,
      'E_CONFIG',
    );
  }
  const records: TrainRecord[] = [];
  const skipped: Skipped[] = [];
  const texts = list.map((file) => {
    try {
      return fs.readFileSync(file, 'utf8');
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      const why =
        err.code === 'ENOENT'
          ? 'no such file'
          : err.code === 'EISDIR'
            ? 'is a folder'
            : err.message;
      throw new DimooError(`${file}: cannot read training data (${why})`, E);
    }
  });
  const lines = texts.map((t) => t.split(/\r?\n/));
  const total = lines.reduce((n, l) => n + l.length, 0);
  let done = 0;
  for (let f = 0; f < list.length; f++) {
    const file = list[f]!;
    const baseDir = path.dirname(path.resolve(file));
    for (let i = 0; i < lines[f]!.length; i++) {
      const line = lines[f]![i]!;
      done++;
      if (line.trim() === '') {
        opts.onLine?.(done, total);
        continue;
      }
      const where = `${file}:${i + 1}`;
      try {
        records.push(await parseLine(line, where, baseDir, ctx));
      } catch (e) {
        if (!opts.skipBad || !isDimooError(e)) throw e;
        skipped.push({ where, error: e.message });
      }
      opts.onLine?.(done, total);
    }
  }
  if (records.length === 0) {
    throw new DimooError(
      `no usable training record in ${list.join(', ')}` +
        (skipped.length ? ` (${skipped.length} bad lines skipped)` : ''),
      E,
    );
  }
  return { records, skipped };
}

/** The ids and labels of one use of a record (items are masked afresh by `choices`). */
export function recordLayout(
  rec: TrainRecord,
  choices: RecipeChoices,
  tokens: SpecialTokens,
  opts: LayoutOptions = {},
): Layout {
  if (rec.kind === 'processed') {
    return { inputIds: rec.inputIds, labels: rec.labels, dropped: false };
  }
  return layoutItem(rec.item, choices, tokens, opts);
}

/** A record's sequence length when its condition is kept (its longest layout). */
export function recordLength(rec: TrainRecord, opts: LayoutOptions = {}): number {
  return rec.kind === 'processed' ? rec.inputIds.length : layoutLength(rec.item, opts);
}

export interface Batch {
  inputIds: Int32Array;
  labels: Int32Array;
  batchSize: number;
  seqLen: number;
  /** 1 on real tokens, 0 on padding (only with maskPadding). */
  attentionMask?: Uint8Array;
}

/** Right-pads layouts to the longest (id 0, label -100), as the original's forward. */
export function collate(
  layouts: readonly Pick<Layout, 'inputIds' | 'labels'>[],
  opts: { maskPadding?: boolean } = {},
): Batch {
  const b = layouts.length;
  const l = Math.max(...layouts.map((x) => x.inputIds.length));
  const inputIds = new Int32Array(b * l);
  const labels = new Int32Array(b * l).fill(IGNORE);
  const mask = opts.maskPadding ? new Uint8Array(b * l) : undefined;
  layouts.forEach((x, r) => {
    inputIds.set(x.inputIds, r * l);
    labels.set(x.labels, r * l);
    mask?.fill(1, r * l, r * l + x.inputIds.length);
  });
  return { inputIds, labels, batchSize: b, seqLen: l, ...(mask ? { attentionMask: mask } : {}) };
}

/** Number of learned positions in a batch. */
export function labelCount(b: Pick<Batch, 'labels'>): number {
  let n = 0;
  for (const v of b.labels) if (v !== IGNORE) n++;
  return n;
}
