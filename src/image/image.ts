/**
 * The in-memory image type shared by the image modules: 8-bit, interleaved
 * (HWC), row-major, no padding between rows.
 */
import { DimooError } from '../errors.js';

export interface Image8 {
  data: Uint8Array;
  width: number;
  height: number;
  /** Interleaved channels per pixel (3 = RGB). */
  channels: number;
}

/** An RGB image; `channels` may be omitted, and must be 3 when given (checked at run time). */
export interface RgbImage {
  data: Uint8Array;
  width: number;
  height: number;
  channels?: number;
}

/** Throws unless `img` is a consistent image with the wanted channel count. */
export function checkImage(
  img: { data: Uint8Array; width: number; height: number; channels?: number },
  what: string,
  channels?: number,
): void {
  const ch = img.channels ?? 3;
  if (
    !Number.isSafeInteger(img.width) ||
    !Number.isSafeInteger(img.height) ||
    img.width < 1 ||
    img.height < 1
  ) {
    throw new DimooError(`${what}: invalid image size ${img.width}x${img.height}`, 'E_IMAGE');
  }
  if (channels !== undefined && ch !== channels) {
    throw new DimooError(`${what}: expected ${channels} channels, got ${ch}`, 'E_IMAGE');
  }
  if (img.data.length !== img.width * img.height * ch) {
    throw new DimooError(
      `${what}: ${img.data.length} bytes do not match ${img.width}x${img.height}x${ch} = ${img.width * img.height * ch}`,
      'E_IMAGE',
    );
  }
}

/** Python's round() on a double: ties go to the even integer. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  // Math.round sends .5 up; step back when that landed on an odd number from an exact tie.
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}
