/**
 * What one request may ask of the server. Defaults suit one machine serving a
 * few users; every limit answers with a 4xx that names it.
 */
import { DEFAULTS } from '../pipelines/validate.js';

export interface ServerLimits {
  /** Largest request body in bytes (JSON with data URLs). */
  bodyBytes: number;
  /** Largest uploaded file in bytes (multipart). */
  uploadBytes: number;
  /** Largest decoded upload in pixels (before it is scaled to fit `maxPixels`). */
  uploadPixels: number;
  /** Largest output image in pixels (width x height). */
  maxPixels: number;
  /** Largest output side in pixels. */
  maxSide: number;
  /** Most MaskGIT steps per image. */
  maxSteps: number;
  /** Most images per request. */
  maxN: number;
  /** Most jobs waiting behind the running one; more gets 429. */
  maxQueue: number;
  /** Most answer tokens for understanding. */
  maxTokens: number;
  /** Most input images of one understanding request (each adds up to ~1 000 tokens to the prompt). */
  maxImages: number;
  /** Longest prompt or question in characters. */
  maxPromptChars: number;
  /** A job running longer than this is cancelled. */
  jobTimeoutMs: number;
  /** Bytes of result images and previews kept for `url` responses. */
  storeBytes: number;
  /** How long stored images and finished jobs are kept. */
  retentionMs: number;
}

export const DEFAULT_LIMITS: ServerLimits = {
  bodyBytes: 32 * 1024 * 1024,
  uploadBytes: 16 * 1024 * 1024,
  uploadPixels: 40_000_000,
  maxPixels: 1024 * 1024,
  maxSide: 2048,
  maxSteps: 256,
  maxN: 4,
  maxQueue: 8,
  maxTokens: 2048,
  maxImages: 4,
  maxPromptChars: 4000,
  jobTimeoutMs: 15 * 60 * 1000,
  storeBytes: 256 * 1024 * 1024,
  retentionMs: 60 * 60 * 1000,
};

/** The library's task defaults (the original's inference scripts) under the server's names, and the preview interval. */
export const TASK_DEFAULTS = {
  size: DEFAULTS.t2i.width,
  steps: DEFAULTS.t2i.timesteps,
  previewEvery: 4,
  mmuSteps: DEFAULTS.mmu.steps,
  mmuGenLength: DEFAULTS.mmu.genLength,
  mmuBlockLength: DEFAULTS.mmu.blockLength,
} as const;
