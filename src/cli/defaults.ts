/**
 * Every CLI default in one place. Values follow the original's inference
 * scripts (inference_t2i.py, inference_i2i.py, inference_mmu.py) so their
 * users get the same behaviour from the same flags.
 */
import type { EditType } from '../pipelines/types.js';

/** Text-to-image (also inpainting/outpainting, which the original runs through inference_t2i.py). */
export const T2I = {
  height: 1024,
  width: 1024,
  timesteps: 64,
  cfgScale: 4.0,
  temperature: 1.0,
} as const;

/** Image-to-image (edit). */
export const I2I = {
  timesteps: 64,
  cfgScale: 2.5,
  cfgImg: 4.0,
  temperature: 1.0,
} as const;

/** Painting: the original's centred rectangle. */
export const PAINT = {
  maskHRatio: 1.0,
  maskWRatio: 0.2,
  dilate: 0,
} as const;

/** Retouching keeps the image's look: text guidance as for t2i. */
export const RETOUCH = {
  timesteps: 64,
  cfgScale: 4.0,
  temperature: 1.0,
  dilate: 0,
} as const;

/** ML-Cache (original defaults). */
export const CACHE = {
  cacheRatio: 0.9,
  warmupRatio: 0.3,
  refreshInterval: 5,
} as const;

/** Image understanding (inference_mmu.py). */
export const MMU = {
  steps: 128,
  genLength: 1024,
  blockLength: 256,
  temperature: 0,
  cfgScale: 0,
  remasking: 'low_confidence' as const,
} as const;

/** `dimoo demo`: small enough to finish in seconds on two cores. */
export const DEMO = {
  size: 256,
  timesteps: 16,
  prompt: 'a red fox sitting in a snowy forest at sunrise',
  seed: 0,
  out: 'demo.png',
} as const;

/** Pixel sizes must be multiples of the VQ-VAE's downsampling factor. */
export const VQ_SCALE = 16;
/** Codebook size of DiMOO's VQ-VAE: codes are 0..8191. */
export const CODEBOOK_SIZE = 8192;

export const EDIT_TYPES: readonly EditType[] = [
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
  'image_ref_transfer',
  'multi_view',
];

/** Edit types that take a second image (--ref-image). */
export const EDIT_TYPES_WITH_REF: readonly EditType[] = ['image_ref_transfer'];
