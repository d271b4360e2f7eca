/**
 * Public parameter and result types of every DiMOO task. The CLI, the server
 * and the worker-thread proxy all speak these.
 */

/** 8-bit RGB pixels, row-major, 3 bytes per pixel (the image modules' type). */
export type { RgbImage } from '../image/image.js';
import type { RgbImage } from '../image/image.js';

/**
 * An image's VQ token grid: `height`/`width` are PIXEL sizes (multiples of the
 * VQ downsampling factor, 16), `codes` the codebook indices (0..8191),
 * row-major, (height/16)*(width/16) of them. The JSON file format of
 * `--tokens-out` / `--image-tokens`.
 */
export interface TokenGrid {
  height: number;
  width: number;
  codes: number[];
}

/** Where an input image comes from. */
export type ImageInput = { path: string } | { rgb: RgbImage } | { tokens: TokenGrid };

export interface ProgressEvent {
  task: TaskName;
  /** 1-based step just finished, out of `total`. */
  step: number;
  total: number;
  /** Image tasks: cells still masked after this step. */
  masked?: number;
  /** Understanding: block index (0-based). */
  block?: number;
  /** Image tasks: current codes, -1 where still masked (row-major grid). */
  previewCodes?: Int32Array;
  gridH?: number;
  gridW?: number;
  /** Understanding: text committed so far. */
  text?: string;
  /** Milliseconds this step took. */
  ms: number;
}

export interface RunOptions {
  onProgress?: (e: ProgressEvent) => void;
  signal?: AbortSignal;
  /** Ask for `previewCodes` in progress events (costs a copy per step). */
  preview?: boolean;
}

export type TaskName = 'generate' | 'edit' | 'inpaint' | 'outpaint' | 'retouch' | 'understand';

/** MaskGIT sampling knobs shared by all image tasks (names follow the original's flags). */
export interface ImageSamplingParams {
  /** Number of MaskGIT steps (original: 64). */
  timesteps?: number;
  /** Text classifier-free guidance scale (t2i default 4.0, i2i 2.5). */
  cfgScale?: number;
  /** 0 = greedy (argmax); the original's scripts default to 1.0. */
  temperature?: number;
  /** Seed of our PRNG (Gumbel noise); same seed, same image on any machine. */
  seed?: number;
  /** ML-Cache (max-logit cache). */
  useCache?: boolean;
  cacheRatio?: number;
  warmupRatio?: number;
  refreshInterval?: number;
}

export interface GenerateParams extends ImageSamplingParams {
  prompt: string;
  /** Pixels, multiples of 16 (default 1024). */
  width?: number;
  height?: number;
}

export type EditType =
  | 'edit'
  | 'edit_add'
  | 'edit_remove'
  | 'edit_replace'
  | 'edit_background'
  | 'edit_text_transfer'
  | 'subject_driven'
  | 'canny_control'
  | 'hed_control'
  | 'depth_control'
  | 'openpose_control'
  | 'canny_pred'
  | 'hed_pred'
  | 'depth_pred'
  | 'openpose_pred'
  | 'canny_dense'
  | 'hed_dense'
  | 'depth_dense'
  | 'openpose_dense'
  | 'normal_dense'
  | 'sam2mask_dense'
  | 'ref_transfer'
  | 'image_ref_transfer'
  | 'multi_view'
  | `multi_view_${string}`;

export interface EditParams extends ImageSamplingParams {
  prompt: string;
  editType: EditType;
  image: ImageInput;
  /** Second image for image_ref_transfer (the style reference). */
  refImage?: ImageInput;
  /** Image guidance scale (default 4.0). */
  cfgImg?: number;
}

/** Which cells to regenerate. */
export type MaskSpec =
  /** The original's centred rectangle, as fractions of the image. */
  | { kind: 'ratio'; hRatio: number; wRatio: number }
  /** A PNG mask file: transparent (or white, for opaque masks) = regenerate. */
  | { kind: 'png'; path: string }
  /** Rectangles in pixels of the image. */
  | { kind: 'rects'; rects: { x: number; y: number; width: number; height: number }[] }
  /** One flag per grid cell, row-major (1 = regenerate). */
  | { kind: 'cells'; cells: ArrayLike<number> };

export interface PaintParams extends ImageSamplingParams {
  prompt: string;
  image: ImageInput;
  /** Default for inpaint: ratio 1.0 x 0.2 (the original's defaults); outpaint inverts the mask. */
  mask?: MaskSpec;
  /** Grow the masked region by this many cells. */
  dilate?: number;
}

export interface RetouchParams extends ImageSamplingParams {
  /** What the marked regions should show (default: empty prompt). */
  prompt?: string;
  image: ImageInput;
  mask: MaskSpec;
  dilate?: number;
}

export interface ImageResult {
  /** Pixel size of the generated image. */
  width: number;
  height: number;
  gridH: number;
  gridW: number;
  /** Output token grid (codebook indices), row-major. */
  codes: number[];
  /** Decoded pixels, when the checkpoint has a VQ-VAE. */
  image?: RgbImage;
  /** Conditional prompt ids as fed to the model (image cells masked). */
  promptIds: number[];
  codeStart: number;
  /** Milliseconds per sampling step. */
  stepMs: number[];
}

export interface UnderstandParams {
  question: string;
  /** One image, spliced into the prompt before </user> (inference_mmu.py; cropped to a 1024² area budget). */
  image?: ImageInput;
  /**
   * Several images instead, spliced in this order, each its own <IMAGE> block
   * (each cropped to a 512² budget, as the original's multi-image evaluation
   * does). Give `image` or `images`; neither asks a text-only question.
   */
  images?: ImageInput[];
  /** Total answer tokens (original: 1024). */
  genLength?: number;
  blockLength?: number;
  steps?: number;
  temperature?: number;
  cfgScale?: number;
  remasking?: 'low_confidence' | 'random';
  seed?: number;
  /** Stop once an end-of-answer token is committed in a finished block (default true). */
  earlyStop?: boolean;
  /** Reproduce inference_mmu.py's double newline insertion (a bug; off by default). */
  scriptLayout?: boolean;
  /**
   * Reuse K/V between steps (faster; answers can differ from uncached
   * decoding): true or 'dual' = prompt, image and other blocks' K/V reused
   * within a block; 'ml-cache' = that, plus inside a block only the least
   * confident masked positions are recomputed between refreshes (greedy,
   * cfgScale 0 only). Default false.
   */
  useCache?: boolean | 'dual' | 'ml-cache';
  /** 'ml-cache': share of masked positions whose prediction is reused (default 0.9). */
  cacheRatio?: number;
  /** 'ml-cache': share of each block's steps that refresh the whole block (default 0.3). */
  warmupRatio?: number;
  /** 'ml-cache': after the warm-up, refresh the whole block every N steps (default 5). */
  refreshInterval?: number;
}

export interface UnderstandResult {
  text: string;
  /** Answer token ids (the generated region). */
  ids: number[];
  promptIds: number[];
  codeStart: number;
  stepMs: number[];
}

export interface EncodeOptions {
  /** Area budget of the original's aspect-ratio crop (default 1024 for understanding, 512 for editing); 'none' keeps the size (must be a multiple of 16). */
  crop?: 256 | 512 | 1024 | 'none';
  /** Resize to exactly this size (multiples of 16; Lanczos) instead; only with crop 'none'. */
  size?: { width: number; height: number };
}

/** Everything a loaded DiMOO offers; implemented in-process (`Dimoo`) and over a worker thread (`WorkerDimoo`). */
export interface DimooApi {
  generate(p: GenerateParams, o?: RunOptions): Promise<ImageResult>;
  edit(p: EditParams, o?: RunOptions): Promise<ImageResult>;
  inpaint(p: PaintParams, o?: RunOptions): Promise<ImageResult>;
  outpaint(p: PaintParams, o?: RunOptions): Promise<ImageResult>;
  retouch(p: RetouchParams, o?: RunOptions): Promise<ImageResult>;
  understand(p: UnderstandParams, o?: RunOptions): Promise<UnderstandResult>;
  encodeImage(input: ImageInput, opts?: EncodeOptions): Promise<TokenGrid>;
  decodeTokens(grid: TokenGrid): Promise<RgbImage>;
  /** Model facts for /v1/models, inspect, etc. */
  info(): ModelInfo;
  dispose(): Promise<void>;
}

export interface ModelInfo {
  dir: string;
  name: string;
  hasVq: boolean;
  /** VQ downsampling factor (16). */
  vqScale: number;
  /** Image codes are 0 .. codebookSize - 1 (8192). */
  codebookSize: number;
  device: 'cpu' | 'webgpu';
  /** The defaults this checkpoint's requests get where they give no value (its generation_config.json, else the original scripts'). */
  defaults: TaskDefaults;
}

/** Per-checkpoint request defaults (see checkpoint/generation-config.ts). */
export interface TaskDefaults {
  t2i: { width: number; height: number };
  i2i: { cropBudget: number };
  mmu: { genLength: number; blockLength: number; steps: number; cropBudget: number };
}

export interface LoadOptions {
  threads?: number;
  device?: 'cpu' | 'webgpu';
  /** Weight precision: 'fp16' keeps float16 weights on WebGPU (math stays float32); needs shader-f16. */
  precision?: 'fp32' | 'fp16';
  /** Hugging Face ids (`owner/name`): branch, tag or commit (default 'main'). */
  revision?: string;
  /** Hugging Face ids: access token (default: env HF_TOKEN). */
  token?: string;
  /** Loading progress: download bytes (Hub ids), checkpoint files mapped, ONNX Runtime sessions created. */
  onProgress?: (p: LoadProgress) => void;
  /** LoRA adapters (PEFT folders, e.g. from `dimoo train --lora`), added on the fly; scale multiplies alpha/r (default 1). */
  lora?: Array<{ dir: string; scale?: number }>;
}

/**
 * One loading step. `download`: bytes fetched from the Hub so far (of `total`);
 * `files`: checkpoint files opened and memory-mapped; `session`: ONNX Runtime
 * sessions created (the slow part: weights are read and prepared here).
 */
export interface LoadProgress {
  stage: 'download' | 'files' | 'session';
  done: number;
  total: number;
  /** What this step did, for a log line (e.g. a file name). */
  detail: string;
}
