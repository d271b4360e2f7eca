/**
 * Prompt text and token-sequence layouts of Lumina-DiMOO, reproducing the
 * original's utils/prompt_utils.py and the inference/*.py scripts (golden
 * prompts.json and the case JSONs pin them string for string, id for id).
 *
 * Text:
 *   PROMPT_TEMPLATES                             system prompts per task
 *   textToImagePrompt(text)                      { prompt, uncondPrompt }
 *   imageToImagePrompt(text, editType)           { prompt, uncondPrompt, systemPrompt }
 *   understandingPrompt(question)                prompt string
 *   KNOWN_EDIT_TYPES                             edit types the original names (accepted: tasks.ts)
 *
 * Ids (pure; prompt ids come from TextTokenizer.encode with the BOS template):
 *   addBreakLines(tokens, H, W, newline)         the original's add_break_line
 *   gridRows(cellTokens, H, W, t)                rows each followed by <end-of-line>
 *   imageBlock(codes, H, W, t)                   <IMAGE> rows-with-newlines </IMAGE>
 *   spliceBeforeLast(ids, ...parts)              ids[:-1] + parts + ids[-1:]
 *   buildTextToImage({...}, t)                   t2i (and inpaint/outpaint) layout
 *   buildImageToImage({...}, t)                  i2i three-branch layout
 *   branchSequence(prefix, x, codeStart)         prefix + x[codeStart-2:] (CFG branches)
 *   gridCellPositions(codeStart, H, W)           sequence position of each grid cell
 *   readGridCodes(x, codeStart, H, W, t)         codes (or -1 for mask) from a sequence
 *   paintGridMask({...})                         inpaint/outpaint mask on the token grid
 *   paintGridTokens(codes, mask, H, W, t)        masked_image_tokens of encode_img_with_paint
 *   buildUnderstanding({...}, t)                 MMU layout: no, one or several images; 'single' (training) or 'script'
 */
import { DimooError } from '../errors.js';
import { DEFAULT_SPECIAL_TOKENS, type SpecialTokens } from '../checkpoint/special-tokens.js';

/** System prompts of utils/prompt_utils.create_prompt_templates (identical to config.py's). */
export const PROMPT_TEMPLATES = Object.freeze({
  text_understanding:
    'You are a multimodal model that can process both text and images. Answer the following question based on the provided images. Analyze each image and combine relevant details to answer.',
  image_generation: 'Generate an image according to the text prompt.',
  image_editing:
    'Generate an image applying the following editing instruction based on the original image.',
  dense_prediction: 'Perform dense prediction on the given images.',
  control_generation: 'Generate an image according to the text prompt and the given control image.',
  subject_generation: 'Generate an image according to the text prompt and the given object image.',
  multi_view: 'Generate a view-image based on the given image.',
  style_transfer: 'Transform the current image into the style of the provided image.',
});

/** System prompt for edit types matching none of the known families. */
export const FALLBACK_I2I_SYSTEM_PROMPT = 'Generate an image according to the prompt and image.';

/**
 * Edit types the original's config/README name. The library accepts these
 * and `multi_view_<view>` (pipelines/tasks.ts isEditType) and refuses other
 * names; the prompt selection below matches by substring, in the original's
 * order. Note: `*_pred` types do NOT contain "dense" and so get the fallback
 * system prompt and the user's text, exactly as the original does;
 * `*_dense` types get dense prompts.
 */
export const KNOWN_EDIT_TYPES: readonly string[] = Object.freeze([
  'edit',
  'edit_add',
  'edit_remove',
  'edit_replace',
  'edit_background',
  'edit_text_transfer',
  'subject_driven',
  'canny_control',
  'hed_control',
  'depth_control',
  'openpose_control',
  'canny_pred',
  'hed_pred',
  'depth_pred',
  'openpose_pred',
  'canny_dense',
  'hed_dense',
  'depth_dense',
  'openpose_dense',
  'normal_dense',
  'sam2mask_dense',
  'ref_transfer',
  'image_ref_transfer',
  'multi_view',
]);

const DENSE_TARGETS: Readonly<Record<string, string>> = {
  canny: 'canny edge map',
  hed: 'hed edge map',
  normal: 'normal map',
  sam2mask: 'sam2 mask',
  depth: 'depth map',
  openpose: 'pose estimation map',
};

function wrap(system: string, user: string): string {
  return `<system>${system}</system><user>${user}</user>`;
}

function checkText(v: unknown, name: string): asserts v is string {
  if (typeof v !== 'string')
    throw new DimooError(`${name} must be a string, got ${typeof v}`, 'E_PARAM');
}

export interface PromptPair {
  /** Conditional prompt. */
  prompt: string;
  /** The same system prompt with the user text replaced by <uncondition>. */
  uncondPrompt: string;
}

/** Text-to-image prompt pair (generate_text_to_image_prompt). */
export function textToImagePrompt(promptText: string): PromptPair {
  checkText(promptText, 'prompt');
  const sys = PROMPT_TEMPLATES.image_generation;
  return { prompt: wrap(sys, promptText), uncondPrompt: wrap(sys, '<uncondition>') };
}

/** Image-to-image prompts (generate_image_to_image_prompt), first matching family wins. */
export function imageToImagePrompt(
  promptText: string,
  editType: string,
): PromptPair & { systemPrompt: string } {
  checkText(promptText, 'prompt');
  checkText(editType, 'editType');
  let system: string;
  let user: string;
  if (editType.includes('dense')) {
    system = PROMPT_TEMPLATES.dense_prediction;
    const target = DENSE_TARGETS[editType.split('_')[0]!] ?? 'dense map';
    user = `Generate a ${target} according to the image.`;
  } else if (editType.includes('control')) {
    system = PROMPT_TEMPLATES.control_generation;
    user = promptText;
  } else if (editType.includes('subject')) {
    system = PROMPT_TEMPLATES.subject_generation;
    user = promptText;
  } else if (editType.includes('edit')) {
    system = PROMPT_TEMPLATES.image_editing;
    user = promptText;
  } else if (editType.includes('ref_transfer')) {
    system = PROMPT_TEMPLATES.style_transfer;
    user = PROMPT_TEMPLATES.style_transfer;
  } else if (editType.includes('multi_view')) {
    system = PROMPT_TEMPLATES.multi_view;
    // The view name is the last '_' field ("multi_view" itself yields "view").
    user = `Generate the ${editType.split('_').at(-1)} view based on the provided front view.`;
  } else {
    system = FALLBACK_I2I_SYSTEM_PROMPT;
    user = promptText;
  }
  return {
    prompt: wrap(system, user),
    uncondPrompt: wrap(system, '<uncondition>'),
    systemPrompt: system,
  };
}

/** Multimodal-understanding prompt (generate_multimodal_understanding_prompt). */
export function understandingPrompt(question: string): string {
  checkText(question, 'question');
  return wrap(PROMPT_TEMPLATES.text_understanding, question);
}

// ---------------------------------------------------------------------------
// Token-id layouts

type Tokens = Pick<
  SpecialTokens,
  'mask' | 'newline' | 'boi' | 'eoi' | 'boa' | 'eoa' | 'imageOffset' | 'codebookSize'
>;

function checkGrid(h: number, w: number): void {
  if (!Number.isSafeInteger(h) || h < 1 || !Number.isSafeInteger(w) || w < 1) {
    throw new DimooError(`grid size must be positive integers, got ${h}x${w}`, 'E_PARAM');
  }
}

/**
 * The original's add_break_line: for each of H rows, the slice
 * tokens[r*W, (r+1)*W) followed by `newline`. Tokens beyond H*W are dropped
 * (which is what the understanding script's double application relies on).
 */
export function addBreakLines(
  tokens: readonly number[],
  h: number,
  w: number,
  newline: number,
): number[] {
  checkGrid(h, w);
  const out: number[] = [];
  for (let r = 0; r < h; r++) {
    out.push(...tokens.slice(r * w, (r + 1) * w), newline);
  }
  return out;
}

/** Cell tokens (H*W, row-major) as rows each followed by the newline id. */
export function gridRows(
  cellTokens: readonly number[],
  h: number,
  w: number,
  t: Tokens = DEFAULT_SPECIAL_TOKENS,
): number[] {
  checkGrid(h, w);
  if (cellTokens.length !== h * w) {
    throw new DimooError(
      `grid of ${h}x${w} needs ${h * w} cells, got ${cellTokens.length}`,
      'E_PARAM',
    );
  }
  return addBreakLines(cellTokens, h, w, t.newline);
}

function codesToTokens(codes: readonly number[], t: Tokens, what: string): number[] {
  return codes.map((c, i) => {
    if (!Number.isInteger(c) || c < 0 || c >= t.codebookSize) {
      throw new DimooError(
        `${what}[${i}] must be a code in [0, ${t.codebookSize}), got ${c}`,
        'E_PARAM',
      );
    }
    return t.imageOffset + c;
  });
}

/** An encoded image as the original feeds it (encode_img_with_breaks): <IMAGE> rows+newlines </IMAGE>. */
export function imageBlock(
  codes: readonly number[],
  h: number,
  w: number,
  t: Tokens = DEFAULT_SPECIAL_TOKENS,
  what = 'codes',
): number[] {
  return [t.boi, ...gridRows(codesToTokens(codes, t, what), h, w, t), t.eoi];
}

/** ids[:-1] + parts... + ids[-1:] (images go before the prompt's last token, </user>). */
export function spliceBeforeLast(
  ids: readonly number[],
  ...parts: ReadonlyArray<readonly number[]>
): number[] {
  if (ids.length === 0) throw new DimooError('cannot splice into an empty id list', 'E_PARAM');
  return [...ids.slice(0, -1), ...parts.flat(), ids[ids.length - 1]!];
}

/** A CFG branch input: `prefix` + x[codeStart-2:] (from <answer> on). */
export function branchSequence(
  prefix: readonly number[],
  x: ArrayLike<number>,
  codeStart: number,
): number[] {
  if (!Number.isSafeInteger(codeStart) || codeStart < 2 || codeStart > x.length) {
    throw new DimooError(`codeStart must be in [2, ${x.length}], got ${codeStart}`, 'E_PARAM');
  }
  return [...prefix, ...Array.from(x).slice(codeStart - 2)];
}

export interface GeneratedImageLayout {
  /** Full initial conditional sequence. */
  sequence: number[];
  /** Index of the first grid cell (the original's code_start). */
  codeStart: number;
  gridH: number;
  gridW: number;
}

/**
 * The generated-image tail x[code_start-2:]: [<answer>, <IMAGE>] + grid rows +
 * [</IMAGE>, </answer>], the grid all masks or the given cell tokens.
 */
export function answerImage(
  h: number,
  w: number,
  t: Tokens,
  cellTokens?: readonly number[],
): number[] {
  const cells = cellTokens ?? new Array<number>(h * w).fill(t.mask);
  return [t.boa, t.boi, ...gridRows(cells, h, w, t), t.eoi, t.eoa];
}

export interface TextToImageInput {
  /** Encoded conditional prompt (with BOS). */
  promptIds: readonly number[];
  /** Encoded <uncondition> prompt (with BOS). */
  uncondPromptIds: readonly number[];
  gridH: number;
  gridW: number;
  /**
   * Inpainting/outpainting: the H*W cell tokens (mask id where to generate,
   * imageOffset + code elsewhere); default all masks.
   */
  cellTokens?: readonly number[];
}

export interface TextToImageLayout extends GeneratedImageLayout {
  /** Unconditional branch prefix (uncon_ids); the branch is branchSequence(prefix, x, codeStart). */
  uncondPrefix: number[];
}

/** inference_t2i.py layout: prompt + <answer><IMAGE> grid </IMAGE></answer>; code_start = len(prompt) + 2. */
export function buildTextToImage(
  input: TextToImageInput,
  t: Tokens = DEFAULT_SPECIAL_TOKENS,
): TextToImageLayout {
  const { promptIds, uncondPromptIds, gridH, gridW, cellTokens } = input;
  return {
    sequence: [...promptIds, ...answerImage(gridH, gridW, t, cellTokens)],
    codeStart: promptIds.length + 2,
    gridH,
    gridW,
    uncondPrefix: [...uncondPromptIds],
  };
}

export interface ImageToImageInput {
  /** Encoded conditional prompt (with BOS), ending in </user>. */
  promptIds: readonly number[];
  /** Encoded <uncondition> prompt. */
  uncondTextIds: readonly number[];
  /**
   * Input image blocks (imageBlock output) in sequence order; for
   * image_ref_transfer: [input image, reference image].
   */
  images: ReadonlyArray<readonly number[]>;
  /** Output grid (the last image's size in the original). */
  gridH: number;
  gridW: number;
}

export interface ImageToImageLayout extends GeneratedImageLayout {
  /** Text-unconditional prefix: uncond prompt with the same images spliced in. */
  uncondTextPrefix: number[];
  /** Image-unconditional prefix: the conditional prompt ids without images. */
  uncondImagePrefix: number[];
}

/** inference_i2i.py layout (three CFG branches). */
export function buildImageToImage(
  input: ImageToImageInput,
  t: Tokens = DEFAULT_SPECIAL_TOKENS,
): ImageToImageLayout {
  const { promptIds, uncondTextIds, images, gridH, gridW } = input;
  const cond = spliceBeforeLast(promptIds, ...images);
  return {
    sequence: [...cond, ...answerImage(gridH, gridW, t)],
    codeStart: cond.length + 2,
    gridH,
    gridW,
    uncondTextPrefix: spliceBeforeLast(uncondTextIds, ...images),
    uncondImagePrefix: [...promptIds],
  };
}

/** Sequence position of each grid cell (row-major), skipping the newline after each row. */
export function gridCellPositions(codeStart: number, h: number, w: number): Int32Array {
  checkGrid(h, w);
  const out = new Int32Array(h * w);
  for (let i = 0; i < h * w; i++) out[i] = codeStart + Math.floor(i / w) * (w + 1) + (i % w);
  return out;
}

/** Grid codes read from a sequence: code per cell, -1 where the mask id is. */
export function readGridCodes(
  x: ArrayLike<number>,
  codeStart: number,
  h: number,
  w: number,
  t: Tokens = DEFAULT_SPECIAL_TOKENS,
): Int32Array {
  const pos = gridCellPositions(codeStart, h, w);
  return pos.map((p) => {
    const id = x[p];
    if (id === t.mask) return -1;
    if (id === undefined || id < t.imageOffset || id >= t.imageOffset + t.codebookSize) {
      throw new DimooError(
        `position ${p} holds ${id}, which is neither the mask nor an image token`,
        'E_PARAM',
      );
    }
    return id - t.imageOffset;
  });
}

export type UnderstandingLayout = 'single' | 'script';

/** One input image of an understanding prompt: its codes (row-major) and grid. */
export interface UnderstandingImage {
  codes: readonly number[];
  gridH: number;
  gridW: number;
}

export interface UnderstandingInput {
  /** Encoded understanding prompt (with BOS), ending in </user>. */
  promptIds: readonly number[];
  /**
   * The images, in order; each becomes its own <IMAGE> block and all of them go
   * before </user>. Empty: a text-only question (the prompt as it is).
   */
  images: readonly UnderstandingImage[];
  /** Answer length (number of masks). */
  genLength: number;
  /**
   * 'single' (default): the training layout, <IMAGE> rows-with-newlines </IMAGE>.
   * 'script': inference_mmu.py literally, which applies the newline insertion
   * a second time to the wrapped list (keeps its first H*W entries, newline
   * after every W). That script takes exactly one image, so this layout does too.
   */
  layout?: UnderstandingLayout;
}

export interface UnderstandingLayoutResult {
  sequence: number[];
  /** Index of the first answer mask. */
  codeStart: number;
  /** The image tokens as placed in the prompt (all blocks, in order; empty for text only). */
  imageTokens: number[];
}

/**
 * Understanding layout: prompt[:-1] + image blocks + prompt[-1:] + <answer> +
 * masks + </answer>. One image is inference_mmu.py's layout; several are
 * concatenated block after block as the original's multi-image evaluation
 * (VLMEvalKit's Lumina_DiMOO) does; none leaves the prompt untouched.
 */
export function buildUnderstanding(
  input: UnderstandingInput,
  t: Tokens = DEFAULT_SPECIAL_TOKENS,
): UnderstandingLayoutResult {
  const { promptIds, images, genLength, layout = 'single' } = input;
  if (!Number.isSafeInteger(genLength) || genLength < 1) {
    throw new DimooError(`genLength must be a positive integer, got ${genLength}`, 'E_PARAM');
  }
  if (layout !== 'single' && layout !== 'script') {
    throw new DimooError(`layout must be 'single' or 'script', got ${String(layout)}`, 'E_PARAM');
  }
  if (!Array.isArray(images)) throw new DimooError('images must be an array (empty for a text-only question)', 'E_PARAM');
  if (layout === 'script' && images.length !== 1) {
    throw new DimooError(`the 'script' layout reproduces inference_mmu.py, which takes exactly one image; got ${images.length}`, 'E_PARAM');
  }
  const imageTokens = images.flatMap((img, i) => {
    const block = imageBlock(img.codes, img.gridH, img.gridW, t, `images[${i}].codes`);
    return layout === 'script' ? addBreakLines(block, img.gridH, img.gridW, t.newline) : block;
  });
  const input_ = images.length ? spliceBeforeLast(promptIds, imageTokens) : [...promptIds];
  if (input_.length === 0) throw new DimooError('the understanding prompt is empty', 'E_PARAM');
  return {
    sequence: [...input_, t.boa, ...new Array<number>(genLength).fill(t.mask), t.eoa],
    codeStart: input_.length + 1,
    imageTokens,
  };
}
