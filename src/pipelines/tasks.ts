/**
 * The task table (as transformers.js keeps SUPPORTED_TASKS): every DiMOO task,
 * what it produces and what it takes (defaults: validate.ts). The server's
 * task lists, the worker protocol and the paint-task dispatch read it, so a
 * task is added in one place.
 */
import type {
  DimooApi,
  EditType,
  ImageResult,
  PaintParams,
  RetouchParams,
  RunOptions,
  TaskName,
} from './types.js';
import { DimooError } from '../errors.js';
import { imageToImagePrompt, KNOWN_EDIT_TYPES } from './prompts.js';

export interface TaskSpec {
  /** What a run returns: an image (token grid + pixels) or text. */
  output: 'image' | 'text';
  /** What the task starts from: a prompt, an input image, or a prompt with any number of images (none, one or several). */
  input: 'prompt' | 'image' | 'images';
  /** A mask of cells to regenerate: none, optional (a default region) or required. */
  mask: 'none' | 'optional' | 'required';
  /** Whether the text prompt may be empty. */
  promptOptional: boolean;
}

export const TASKS: Readonly<Record<TaskName, Readonly<TaskSpec>>> = Object.freeze({
  generate: { output: 'image', input: 'prompt', mask: 'none', promptOptional: false },
  edit: { output: 'image', input: 'image', mask: 'none', promptOptional: false },
  inpaint: { output: 'image', input: 'image', mask: 'optional', promptOptional: false },
  outpaint: { output: 'image', input: 'image', mask: 'optional', promptOptional: false },
  retouch: { output: 'image', input: 'image', mask: 'required', promptOptional: true },
  understand: { output: 'text', input: 'images', mask: 'none', promptOptional: false },
});

/** Every task name, in the table's order. */
export const TASK_NAMES = Object.keys(TASKS) as TaskName[];

/** Tasks that regenerate masked cells of an input image. */
export type PaintTask = 'inpaint' | 'outpaint' | 'retouch';
export const PAINT_TASKS = TASK_NAMES.filter((t) => TASKS[t].mask !== 'none') as PaintTask[];

/** Runs a paint task by name (retouch needs its mask, which the caller has checked). */
export function runPaintTask(
  api: DimooApi,
  task: PaintTask,
  p: PaintParams,
  o?: RunOptions,
): Promise<ImageResult> {
  if (task === 'retouch') {
    if (!p.mask) throw new DimooError('retouch needs a mask (regions to regenerate)', 'E_PARAM');
    const r: RetouchParams = { ...p, mask: p.mask };
    return api.retouch(r, o);
  }
  return task === 'inpaint' ? api.inpaint(p, o) : api.outpaint(p, o);
}

// ---------------------------------------------------------------------------
// Edit types (the `edit` task's sub-tasks): which names the CLI, the library
// and the server accept, and what each takes besides the image.

/** The original's named edit types (prompt families: pipelines/prompts.ts). */
export const EDIT_TYPES = KNOWN_EDIT_TYPES as readonly EditType[];

/**
 * `multi_view_<view>`: the original turns the last `_` field into "Generate
 * the <view> view based on the provided front view." (multi_view_left,
 * multi_view_back, ...). One lowercase word, so the view cannot carry another
 * family's keyword into the prompt selection by accident of punctuation.
 */
const MULTI_VIEW = /^multi_view_[a-z]+$/;

/** How the accepted edit types are described in help text and error messages. */
export const EDIT_TYPES_HELP = `${EDIT_TYPES.join(', ')}, or multi_view_<view> (e.g. multi_view_left)`;

/** Whether `v` is an edit type the library runs: a named one or multi_view_<view>. */
export function isEditType(v: unknown): v is EditType {
  return typeof v === 'string' && (EDIT_TYPES.includes(v as EditType) || MULTI_VIEW.test(v));
}

/** Style transfer takes a second image (the style reference); matched as the prompt selection matches it. */
export function editTypeTakesRef(t: string): boolean {
  return t.includes('image_ref_transfer');
}

/**
 * Edit types whose prompt the original fixes (dense prediction, style
 * transfer, multi-view): the user's text never reaches the model, so none is
 * required. Asked of the prompt builder itself, so the two cannot disagree.
 */
export function editTypeHasFixedPrompt(t: string): boolean {
  return imageToImagePrompt('a', t).prompt === imageToImagePrompt('b', t).prompt;
}
