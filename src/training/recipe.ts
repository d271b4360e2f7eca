/**
 * The original SFT recipe's item layout (train/train.py, ItemProcessor.process_item),
 * as pure functions over token ids. Randomness (which positions are masked,
 * whether the condition is dropped) comes from a `RecipeChoices` object, so
 * the same layout code serves seeded training (`prngChoices`) and replaying
 * the golden masks in tests.
 *
 * Layouts (every image: rows of codes each followed by <end-of-line>):
 *   t2i:  instr + <answer> <IMAGE> masked-answer-image </IMAGE> </answer>
 *   i2i:  instr[:-1] + <IMAGE> user-image </IMAGE> + instr[-1:] + the t2i tail
 *         (a dropped condition uses the <uncondition> instruction and no user image)
 *   mmu:  instr[:-1] + <IMAGE> user-image </IMAGE> + instr[-1:] + <answer>
 *         + masked(answer_text + </answer>) + masked(pad block up to 1024 tokens)
 * Labels are -100 except at masked positions, which carry the original id.
 *
 *   itemKind(hasUserImage, hasAnswerImage)      which of the three layouts
 *   layoutItem(item, choices, tokens)           { inputIds, labels }
 *   maskCount(n, u, always)                     how many of n tokens the cosine ratio masks
 *   prngChoices(prng)                           the recipe's random choices from our PRNG
 *   instructionText(system, user) / answerText(answer)   the strings the original tokenizes
 */
import { DimooError } from '../errors.js';
import type { SpecialTokens } from '../checkpoint/special-tokens.js';
import { SPECIAL_TOKEN_STRINGS } from '../checkpoint/special-tokens.js';
import { addBreakLines, imageBlock, spliceBeforeLast } from '../pipelines/prompts.js';
import type { Prng } from '../samplers/prng.js';

export type ItemKind = 't2i' | 'i2i' | 'mmu';

/** An image as a grid of codebook indices (row-major), grid sizes in cells. */
export interface GridCodes {
  gridH: number;
  gridW: number;
  codes: readonly number[];
}

/** A training item with its text already tokenized (ids include the BOS template). */
export interface TokenizedItem {
  kind: ItemKind;
  /** "<system>S</system><user>U</user>" */
  instruction: readonly number[];
  /** "<system>S</system><user><uncondition></user>" (t2i and i2i). */
  uncondInstruction?: readonly number[];
  userImage?: GridCodes;
  answerImage?: GridCodes;
  /** answer_text + "</answer>" (mmu). */
  answer?: readonly number[];
}

export interface RecipeChoices {
  /**
   * Indices (distinct, in [0, n)) to mask in a span of n tokens. `always`
   * is the original's `mask=True`: short spans (<= 5) are not masked entirely
   * but drawn by the ratio like longer ones.
   */
  maskPositions(n: number, always: boolean): readonly number[];
  /** The 10% condition drop of t2i/i2i records. */
  dropCondition(): boolean;
  /**
   * Which context a dropped image-to-image record trains with `i2iDrop:
   * 'guidance'`: 0, 1 or 2 (see I2iDrop), uniformly. Drawn only then, so
   * the original recipe's stream of choices is unchanged.
   */
  dropVariant?(): number;
  /**
   * Whether this record's answer picture is masked whole (`imageFullMask`
   * share p). Drawn only when p > 0, so the original's stream is unchanged.
   */
  fullMask?(p: number): boolean;
}

/**
 * What the condition drop of an image-to-image record removes. 'original'
 * (train.py): the text and the input picture together. 'guidance': one of
 * the three contexts the image-to-image sampler's guidance asks the model
 * about, uniformly: both removed (0), the text only (1: `<uncondition>` with
 * the picture) or the picture only (2: the instruction without it). The
 * original never trains 1 and 2, so a model that cannot generalise to them
 * answers noise there, and image guidance amplifies it (docs/shapes.md).
 */
export type I2iDrop = 'original' | 'guidance';
export const I2I_DROPS: readonly I2iDrop[] = ['original', 'guidance'];

export interface LayoutOptions {
  /** Answer + padding length of understanding records (the original's 1024). */
  answerBlock?: number;
  /** The condition drop of image-to-image records (default 'original'). */
  i2iDrop?: I2iDrop;
  /**
   * Share of answer pictures masked whole instead of by the cosine ratio
   * (default 0, the original). With the cosine ratio most training contexts
   * show part of the picture, and the model learns to copy from visible
   * cells long before it reads the caption (docs/shapes.md, the eighth run).
   */
  imageFullMask?: number;
}

export interface Layout {
  inputIds: number[];
  labels: number[];
  /** Whether this layout used the <uncondition> instruction. */
  dropped: boolean;
}

type Tokens = Pick<
  SpecialTokens,
  'mask' | 'newline' | 'boi' | 'eoi' | 'boa' | 'eoa' | 'pad' | 'imageOffset' | 'codebookSize'
>;

export const IGNORE = -100;
/** The original pads understanding answers to this many tokens. */
export const ANSWER_BLOCK = 1024;
/** The original truncates every tokenized text to this many ids. */
export const TEXT_MAX_IDS = 1024;
/** Share of t2i/i2i records trained with the <uncondition> instruction. */
export const DROP_CONDITION_P = 0.1;

/** The kind of record the original's process_item makes of these fields. */
export function itemKind(hasUserImage: boolean, hasAnswerImage: boolean): ItemKind {
  if (hasUserImage && !hasAnswerImage) return 'mmu';
  if (!hasUserImage && hasAnswerImage) return 't2i';
  if (hasUserImage && hasAnswerImage) return 'i2i';
  throw new DimooError(
    'record has neither "user_image" nor "answer_image": the recipe knows text-to-image, image-to-image and understanding records only',
    'E_DATA',
  );
}

/** The instruction string the original tokenizes. */
export function instructionText(system: string, user: string): string {
  const s = SPECIAL_TOKEN_STRINGS;
  return `${s.system}${system}${s.systemEnd}${s.user}${user}${s.userEnd}`;
}

/** The conditionless twin of instructionText. */
export function uncondInstructionText(system: string): string {
  return instructionText(system, SPECIAL_TOKEN_STRINGS.uncondition);
}

/** The understanding answer string the original tokenizes. */
export function answerText(answer: string): string {
  return `${answer}${SPECIAL_TOKEN_STRINGS.eoa}`;
}

/** The original's tokenizer call truncates at 1024 ids (BOS included). */
export function truncateIds(ids: readonly number[]): number[] {
  return ids.slice(0, TEXT_MAX_IDS);
}

/**
 * Number of tokens mask_codes masks in a span of n, for a uniform draw u in
 * [0, 1): all of a short span (n <= 5) unless `always`, else
 * floor(n * cos(u * pi / 2)), at least one.
 */
export function maskCount(n: number, u: number, always: boolean): number {
  if (n <= 0) return 0;
  const ratio = n <= 5 && !always ? 1 : Math.cos((u * Math.PI) / 2);
  return Math.min(n, Math.max(1, Math.floor(n * ratio)));
}

/** The recipe's random choices drawn from one of our seeded streams. */
export function prngChoices(prng: Prng): RecipeChoices {
  return {
    maskPositions(n: number, always: boolean): number[] {
      const k = maskCount(n, prng.uniform(), always);
      // Partial Fisher-Yates: the first k entries are a uniform k-subset.
      const idx = Array.from({ length: n }, (_, i) => i);
      for (let i = 0; i < k; i++) {
        const j = prng.randint(i, n);
        const t = idx[i]!;
        idx[i] = idx[j]!;
        idx[j] = t;
      }
      return idx.slice(0, k);
    },
    dropCondition(): boolean {
      return prng.uniform() < DROP_CONDITION_P;
    },
    dropVariant(): number {
      return prng.randint(0, 3);
    },
    fullMask(p: number): boolean {
      return prng.uniform() < p;
    },
  };
}

function checkPositions(pos: readonly number[], n: number, what: string): void {
  const seen = new Set<number>();
  for (const p of pos) {
    if (!Number.isInteger(p) || p < 0 || p >= n || seen.has(p)) {
      throw new DimooError(
        `${what}: mask position ${p} is not a distinct index in [0, ${n})`,
        'E_PARAM',
      );
    }
    seen.add(p);
  }
}

/** Masks `ids` at the chosen positions (every one when `whole`): [masked ids, labels]. */
function maskSpan(
  ids: readonly number[],
  choices: RecipeChoices,
  always: boolean,
  mask: number,
  what: string,
  whole = false,
): [number[], number[]] {
  const pos = whole
    ? Array.from({ length: ids.length }, (_, i) => i)
    : choices.maskPositions(ids.length, always);
  checkPositions(pos, ids.length, what);
  const out = ids.slice();
  const labels = new Array<number>(ids.length).fill(IGNORE);
  for (const p of pos) {
    labels[p] = ids[p]!;
    out[p] = mask;
  }
  return [out, labels];
}

function checkGrid(g: GridCodes, what: string, t: Tokens): void {
  if (
    !Number.isSafeInteger(g.gridH) ||
    g.gridH < 1 ||
    !Number.isSafeInteger(g.gridW) ||
    g.gridW < 1
  ) {
    throw new DimooError(
      `${what}: grid size must be positive integers, got ${g.gridH}x${g.gridW}`,
      'E_DATA',
    );
  }
  if (g.codes.length !== g.gridH * g.gridW) {
    throw new DimooError(
      `${what}: ${g.codes.length} codes for a ${g.gridH}x${g.gridW} grid (${g.gridH * g.gridW} expected)`,
      'E_DATA',
    );
  }
  g.codes.forEach((c, i) => {
    if (!Number.isInteger(c) || c < 0 || c >= t.codebookSize) {
      throw new DimooError(
        `${what}: codes[${i}] = ${c} is outside the codebook [0, ${t.codebookSize})`,
        'E_DATA',
      );
    }
  });
}

/** The picture spliced before the instruction's last id (</user>), as the samplers lay it out. */
function withImage(instruction: readonly number[], g: GridCodes, t: Tokens): number[] {
  if (instruction.length === 0) throw new DimooError('empty instruction', 'E_DATA');
  return spliceBeforeLast(instruction, imageBlock(g.codes, g.gridH, g.gridW, t));
}

/** The layout of one item; `choices` decides masks and the condition drop. */
export function layoutItem(
  item: TokenizedItem,
  choices: RecipeChoices,
  t: Tokens,
  opts: LayoutOptions = {},
): Layout {
  const block = opts.answerBlock ?? ANSWER_BLOCK;
  if (item.kind === 'mmu') {
    if (!item.userImage || !item.answer) {
      throw new DimooError('understanding record needs a user image and an answer', 'E_DATA');
    }
    checkGrid(item.userImage, 'user_image', t);
    const instr = withImage(item.instruction, item.userImage, t);
    const [answer, answerLabels] = maskSpan(item.answer, choices, false, t.mask, 'answer');
    // The original pads answer + padding to `block` tokens and masks the padding too.
    const padLen = Math.max(0, block - item.answer.length);
    const [pad, padLabels] =
      padLen > 0
        ? maskSpan(new Array<number>(padLen).fill(t.pad), choices, true, t.mask, 'padding')
        : [[], []];
    return {
      inputIds: [...instr, t.boa, ...answer, ...pad],
      labels: [...new Array<number>(instr.length + 1).fill(IGNORE), ...answerLabels, ...padLabels],
      dropped: false,
    };
  }
  if (!item.answerImage)
    throw new DimooError(`${item.kind} record needs an answer image`, 'E_DATA');
  checkGrid(item.answerImage, 'answer_image', t);
  if (item.kind === 'i2i') {
    if (!item.userImage) throw new DimooError('i2i record needs a user image', 'E_DATA');
    checkGrid(item.userImage, 'user_image', t);
  }
  const dropped = choices.dropCondition();
  let instr: number[];
  if (dropped) {
    if (!item.uncondInstruction) {
      throw new DimooError('the condition drop needs the <uncondition> instruction', 'E_PARAM');
    }
    // The original: a dropped i2i record keeps neither its text nor its input image.
    let variant = 0;
    if (item.kind === 'i2i' && opts.i2iDrop === 'guidance') {
      if (!choices.dropVariant)
        throw new DimooError("i2iDrop 'guidance' needs choices with dropVariant()", 'E_PARAM');
      variant = choices.dropVariant();
    }
    if (variant === 1) instr = withImage(item.uncondInstruction, item.userImage!, t);
    else if (variant === 2) instr = item.instruction.slice();
    else instr = item.uncondInstruction.slice();
  } else if (item.kind === 'i2i') {
    instr = withImage(item.instruction, item.userImage!, t);
  } else {
    instr = item.instruction.slice();
  }
  const g = item.answerImage;
  const cells = g.codes.map((c) => t.imageOffset + c);
  // Masks are drawn over the cells, then the row breaks go in (labels -100 there).
  const share = opts.imageFullMask ?? 0;
  let whole = false;
  if (share > 0) {
    if (!choices.fullMask)
      throw new DimooError('imageFullMask needs choices with fullMask()', 'E_PARAM');
    whole = choices.fullMask(share);
  }
  const [masked, cellLabels] = maskSpan(cells, choices, false, t.mask, 'answer_image', whole);
  const rows = addBreakLines(masked, g.gridH, g.gridW, t.newline);
  const rowLabels = addBreakLines(cellLabels, g.gridH, g.gridW, IGNORE);
  return {
    inputIds: [...instr, t.boa, t.boi, ...rows, t.eoi, t.eoa],
    labels: [...new Array<number>(instr.length + 2).fill(IGNORE), ...rowLabels, IGNORE, IGNORE],
    dropped,
  };
}

/** Length of an item's layout when its condition is kept (the longest it can be). */
export function layoutLength(item: TokenizedItem, opts: LayoutOptions = {}): number {
  const block = opts.answerBlock ?? ANSWER_BLOCK;
  const img = (g: GridCodes | undefined): number => (g ? g.gridH * (g.gridW + 1) + 2 : 0);
  if (item.kind === 'mmu') {
    const a = item.answer?.length ?? 0;
    return item.instruction.length + img(item.userImage) + 1 + Math.max(a, block);
  }
  const user = item.kind === 'i2i' ? img(item.userImage) : 0;
  // instruction (+ user image) + <answer> + image block + </answer>; a dropped
  // i2i record may keep its picture with the <uncondition> text (i2iDrop 'guidance').
  const instr = Math.max(item.instruction.length, item.uncondInstruction?.length ?? 0) + user;
  return instr + 1 + img(item.answerImage) + 1;
}
