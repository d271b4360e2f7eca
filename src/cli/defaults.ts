/**
 * Every CLI default in one place. Values follow the original's inference
 * scripts (inference_t2i.py, inference_i2i.py, inference_mmu.py) so their
 * users get the same behaviour from the same flags.
 */
import { DIMOO_GRID } from '../pipelines/token-grid.js';
import { DEFAULTS, LIMITS } from '../pipelines/validate.js';
import { DEFAULT_ML_CACHE } from '../samplers/mlcache.js';

// The task defaults live in the library (pipelines/validate.ts); the CLI shows
// and passes the same values, so help text and library cannot drift apart.

/** Text-to-image. */
export const T2I = DEFAULTS.t2i;

/** Image-to-image (edit). */
export const I2I = DEFAULTS.i2i;

/** Inpainting / outpainting (the original runs them through inference_t2i.py), centred rectangle included. */
export const PAINT = { ...DEFAULTS.paint, dilate: 0 } as const;

/** Retouching samples like painting. */
export const RETOUCH = { ...DEFAULTS.paint, dilate: 0 } as const;

/** ML-Cache (original defaults). */
export const CACHE = DEFAULT_ML_CACHE;

/** Image understanding (inference_mmu.py). */
export const MMU = { ...DEFAULTS.mmu, remasking: 'low_confidence' as const };

/** Upper bounds the library enforces; the CLI checks them with the flag's name. */
export { LIMITS };

/** `dimoo demo`: small enough to finish in seconds on two cores. */
export const DEMO = {
  size: 256,
  /** Fewer than the original's 64: the output is noise anyway, and 16 steps take ~3 s on 2 cores (64: ~11 s). */
  timesteps: 16,
  prompt: 'a red fox sitting in a snowy forest at sunrise',
  seed: 0,
  out: 'demo.png',
} as const;

/** Pixel sizes must be multiples of the VQ-VAE's downsampling factor. */
export const VQ_SCALE = DIMOO_GRID.scale;

/** Edit types and what each takes: the library's one table. */
export { EDIT_TYPES, EDIT_TYPES_HELP, editTypeHasFixedPrompt, editTypeTakesRef, isEditType } from '../pipelines/tasks.js';
