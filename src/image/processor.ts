/**
 * The image processor of the VQ image tokenizer (as diffusers'
 * VaeImageProcessor, kept apart from the VQ model): every way pixels are
 * fitted to the token grid lives here, so the library, the CLI and the server
 * turn one upload into the same pixels (and so the same tokens).
 *
 * - `fitToScale`: sides floored to a multiple of the scale factor (16), by
 *   PIL-exact Lanczos (VaeImageProcessor.preprocess's resize);
 * - `centerCrop`: the original's var_center_crop to an area budget (the
 *   editing and understanding scripts);
 * - `resize`: an explicit size (PIL-exact Lanczos), when a caller asks for one;
 * - `toPixels` / `toRgb8`: u8 HWC <-> float CHW in [0, 1], as the encoder
 *   takes and the decoder gives.
 */
import { DimooError } from '../errors.js';
import { varCenterCrop } from './crop.js';
import { checkImage, type Image8, type RgbImage } from './image.js';
import { resizePil } from './resample.js';

/**
 * How an input image is fitted: the original's crop to an area budget (512 or
 * 1024 in DiMOO; a checkpoint trained on small pictures names its own), or its
 * own size floored to the scale.
 */
export type FitMode = number | 'none';

export class ImageProcessor {
  /** `scale`: pixels per token side (the VQ-VAE's downsampling factor). */
  constructor(readonly scale: number) {
    if (!Number.isSafeInteger(scale) || scale < 1)
      throw new Error(`ImageProcessor: bad scale ${scale}`);
  }

  /** Sides floored to a multiple of the scale (Lanczos when that changes the size). */
  fitToScale(img: RgbImage, what = 'image'): Image8 {
    const rgb = asImage8(img, what);
    const s = this.scale;
    const w = rgb.width - (rgb.width % s);
    const h = rgb.height - (rgb.height % s);
    if (w < s || h < s) {
      throw new DimooError(
        `${what}: ${rgb.width}x${rgb.height} is smaller than one token: it must be at least ${s}x${s} pixels`,
        'E_IMAGE',
      );
    }
    return w === rgb.width && h === rgb.height ? rgb : resizePil(rgb, w, h, 'lanczos');
  }

  /** The original's var_center_crop to an area budget (sizes are multiples of 32). */
  centerCrop(img: RgbImage, budget: number, what = 'image'): Image8 {
    return varCenterCrop(asImage8(img, what), { budget }).image;
  }

  /** Exactly `width` x `height` (multiples of the scale), Lanczos. */
  resize(img: RgbImage, width: number, height: number, what = 'image'): Image8 {
    const rgb = asImage8(img, what);
    const s = this.scale;
    if (
      !Number.isSafeInteger(width) ||
      !Number.isSafeInteger(height) ||
      width < s ||
      height < s ||
      width % s ||
      height % s
    ) {
      throw new DimooError(
        `${what}: target size ${width}x${height} must be positive multiples of ${s}`,
        'E_PARAM',
      );
    }
    return width === rgb.width && height === rgb.height
      ? rgb
      : resizePil(rgb, width, height, 'lanczos');
  }

  /** An input image made ready for the encoder by `mode` (see FitMode). */
  fit(img: RgbImage, mode: FitMode, what = 'image'): Image8 {
    return mode === 'none' ? this.fitToScale(img, what) : this.centerCrop(img, mode, what);
  }

  /** u8 RGB (sides multiples of the scale) -> float32 [3, height, width] in [0, 1]. */
  toPixels(img: RgbImage, what = 'image'): Float32Array {
    const rgb = asImage8(img, what);
    if (rgb.width % this.scale || rgb.height % this.scale) {
      throw new DimooError(
        `${what}: ${rgb.width}x${rgb.height} is not on the ${this.scale}-px token grid`,
        'E_IMAGE',
      );
    }
    const n = rgb.width * rgb.height;
    const data = rgb.data;
    const pixels = new Float32Array(3 * n);
    for (let p = 0; p < n; p++) {
      pixels[p] = data[p * 3]! / 255;
      pixels[n + p] = data[p * 3 + 1]! / 255;
      pixels[2 * n + p] = data[p * 3 + 2]! / 255;
    }
    return pixels;
  }

  /** `(x * 255).round().astype(uint8)` on float32 values in [0, 1], CHW -> HWC (VaeImageProcessor.postprocess). */
  toRgb8(chw: Float32Array, width: number, height: number): Uint8Array {
    const n = width * height;
    if (chw.length !== 3 * n)
      throw new Error(`toRgb8: ${chw.length} values for 3x${height}x${width}`);
    const out = new Uint8Array(3 * n);
    for (let c = 0; c < 3; c++) {
      for (let p = 0; p < n; p++) {
        const v = Math.fround(chw[c * n + p]! * 255);
        let r = Math.round(v);
        if (r - v === 0.5 && r % 2 !== 0) r -= 1; // numpy rounds ties to even
        out[p * 3 + c] = r < 0 ? 0 : r > 255 ? 255 : r;
      }
    }
    return out;
  }
}

/** Checks an RGB image (3 channels, consistent size) and gives it the image modules' type. */
function asImage8(img: RgbImage, what: string): Image8 {
  checkImage(img, what, 3);
  return { data: img.data, width: img.width, height: img.height, channels: 3 };
}
