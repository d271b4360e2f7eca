/**
 * Image files in and out, through sharp (libvips).
 *
 * Reading: the header is inspected first and absurd sizes are refused before
 * any pixel is decoded; EXIF orientation is applied; transparency is
 * composited on white; the result is 8-bit sRGB, interleaved RGB.
 * Writing: format from the extension (PNG, JPEG, WebP), atomically (temp file
 * + rename) so a crash never leaves a half-written image under the real name.
 *
 * Differences from the original (PIL `Image.open(...).convert("RGB")`): PIL
 * ignores EXIF orientation and drops alpha without compositing (transparent
 * pixels keep whatever colour they store); JPEG decoders may differ by a level
 * or so between libjpeg builds.
 */
import * as path from 'node:path';
import sharp from 'sharp';
import type { Metadata, Sharp } from 'sharp';
import { DimooError } from '../errors.js';
import { atomicWriteFile } from '../util/atomic-write.js';
import { checkImage, type Image8 } from './image.js';
import { maskFromRgba, checkMaskSize, type MaskSource, type PixelMask } from './masks.js';
import { addPngText } from './png-text.js';

const E = 'E_IMAGE';

export interface ImageLimits {
  /** Largest accepted width or height in pixels (default 8192). */
  maxSide?: number;
  /** Largest accepted width x height (default 40 megapixels). */
  maxPixels?: number;
}

export const DEFAULT_IMAGE_LIMITS: Required<ImageLimits> = { maxSide: 8192, maxPixels: 40_000_000 };

/** Decoders we accept; vector and document formats (SVG, PDF) are refused. */
const READ_FORMATS = new Set(['png', 'jpeg', 'webp', 'gif', 'tiff', 'avif', 'heif']);

export type ImageInput = string | Uint8Array;

function label(input: ImageInput, name?: string): string {
  return name ?? (typeof input === 'string' ? input : 'image data');
}

export interface ImageInfo {
  /** Size after EXIF orientation. */
  width: number;
  height: number;
  format: string;
  hasAlpha: boolean;
  /** EXIF orientation tag (1..8) when present. */
  orientation?: number;
}

function sharpFor(input: ImageInput, maxPixels: number): Sharp {
  // limitInputPixels is a second guard inside libvips; our own check runs first with a clearer message.
  return sharp(
    typeof input === 'string'
      ? input
      : Buffer.from(input.buffer, input.byteOffset, input.byteLength),
    {
      failOn: 'error',
      limitInputPixels: maxPixels,
      pages: 1,
    },
  );
}

function wrap(e: unknown, what: string): DimooError {
  if (e instanceof DimooError) return e;
  const msg = (e as Error)?.message ?? String(e);
  if (/ENOENT|no such file|Input file is missing/i.test(msg)) {
    return new DimooError(`${what}: file not found`, E);
  }
  return new DimooError(`${what}: cannot decode image (${msg})`, E);
}

/** Reads only the header: size, format, alpha, orientation; enforces the limits. */
export async function probeImage(
  input: ImageInput,
  opts: { limits?: ImageLimits; name?: string } = {},
): Promise<ImageInfo> {
  const what = label(input, opts.name);
  const lim = { ...DEFAULT_IMAGE_LIMITS, ...opts.limits };
  let meta: Metadata;
  try {
    meta = await sharpFor(input, Number.MAX_SAFE_INTEGER).metadata();
  } catch (e) {
    throw wrap(e, what);
  }
  const format = String(meta.format ?? 'unknown');
  if (!READ_FORMATS.has(format)) {
    throw new DimooError(
      `${what}: unsupported image format "${format}" (use PNG, JPEG or WebP)`,
      E,
    );
  }
  const w = meta.width ?? 0;
  const h = meta.height ?? 0;
  if (!(w >= 1 && h >= 1)) throw new DimooError(`${what}: image has no pixels (${w}x${h})`, E);
  if (w > lim.maxSide || h > lim.maxSide || w * h > lim.maxPixels) {
    throw new DimooError(
      `${what}: image is ${w}x${h}, larger than allowed (at most ${lim.maxSide} px a side and ${(lim.maxPixels / 1e6).toFixed(1)} megapixels); ` +
        'downscale it first',
      E,
    );
  }
  const swap = meta.orientation !== undefined && meta.orientation >= 5;
  return {
    width: swap ? h : w,
    height: swap ? w : h,
    format,
    hasAlpha: meta.hasAlpha === true,
    orientation: meta.orientation,
  };
}

export interface ReadImageOptions {
  limits?: ImageLimits;
  /** Name used in error messages when the input is a buffer. */
  name?: string;
}

async function decode(input: ImageInput, channels: 3 | 4, opts: ReadImageOptions): Promise<Image8> {
  const what = label(input, opts.name);
  const info = await probeImage(input, opts);
  const lim = { ...DEFAULT_IMAGE_LIMITS, ...opts.limits };
  try {
    let p = sharpFor(input, lim.maxPixels).autoOrient().toColourspace('srgb');
    p =
      channels === 3
        ? p.flatten({ background: { r: 255, g: 255, b: 255 } }).removeAlpha()
        : p.ensureAlpha();
    const { data, info: out } = await p
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (out.channels !== channels || out.width !== info.width || out.height !== info.height) {
      throw new DimooError(
        `${what}: decoder returned ${out.width}x${out.height}x${out.channels}, expected ${info.width}x${info.height}x${channels}`,
        E,
      );
    }
    return {
      data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
      width: out.width,
      height: out.height,
      channels,
    };
  } catch (e) {
    throw wrap(e, what);
  }
}

/** Decodes to 8-bit RGB (EXIF orientation applied, alpha composited on white). */
export async function readImage(input: ImageInput, opts: ReadImageOptions = {}): Promise<Image8> {
  return decode(input, 3, opts);
}

/** Decodes to 8-bit RGBA, keeping alpha (opaque images get alpha 255). */
export async function readImageRgba(
  input: ImageInput,
  opts: ReadImageOptions = {},
): Promise<Image8> {
  return decode(input, 4, opts);
}

export interface ReadMaskOptions extends ReadImageOptions {
  /** Where the mask lives: alpha (transparent = regenerate), luminance (white = regenerate), or auto. */
  source?: MaskSource;
  /** The image the mask belongs to: sizes must match. */
  width?: number;
  height?: number;
}

/** A user mask image -> per-pixel weights in [0, 1] (1 = regenerate). */
export async function readMask(input: ImageInput, opts: ReadMaskOptions = {}): Promise<PixelMask> {
  const what = label(input, opts.name);
  const img = await readImageRgba(input, opts);
  if (opts.width !== undefined && opts.height !== undefined)
    checkMaskSize(img, opts.width, opts.height, `mask ${what}`);
  return maskFromRgba(img.data, img.width, img.height, opts.source ?? 'auto', `mask ${what}`);
}

export interface WriteImageOptions {
  /** JPEG / WebP quality 1..100 (default 95). */
  quality?: number;
  /** WebP: lossless (default false). */
  lossless?: boolean;
  /** PNG only: text chunks to add (e.g. `parameters`: how the image was made). */
  text?: Readonly<Record<string, string>>;
}

export type OutputFormat = 'png' | 'jpeg' | 'webp';

export function formatForPath(file: string): OutputFormat {
  const ext = path.extname(file).toLowerCase();
  if (ext === '.png') return 'png';
  if (ext === '.jpg' || ext === '.jpeg') return 'jpeg';
  if (ext === '.webp') return 'webp';
  throw new DimooError(
    `${file}: cannot tell the output format from extension "${ext}" (use .png, .jpg, .jpeg or .webp)`,
    'E_PARAM',
  );
}

/** Encodes an 8-bit image (1, 3 or 4 channels) in the given format. */
export async function encodeImage(
  img: Image8,
  format: OutputFormat,
  opts: WriteImageOptions = {},
): Promise<Buffer> {
  checkImage(img, 'image to write');
  if (![1, 3, 4].includes(img.channels)) {
    throw new DimooError(`image to write has ${img.channels} channels (1, 3 or 4 supported)`, E);
  }
  const q = opts.quality ?? 95;
  if (!Number.isInteger(q) || q < 1 || q > 100)
    throw new DimooError(`quality must be an integer 1..100, got ${q}`, 'E_PARAM');
  const raw = { width: img.width, height: img.height, channels: img.channels as 1 | 3 | 4 };
  let p = sharp(Buffer.from(img.data.buffer, img.data.byteOffset, img.data.byteLength), { raw });
  if (format === 'png') p = p.png();
  else if (format === 'jpeg')
    p = p.jpeg({ quality: q, chromaSubsampling: q >= 90 ? '4:4:4' : '4:2:0' });
  else p = p.webp({ quality: q, lossless: opts.lossless ?? false });
  const bytes = await p.toBuffer();
  return format === 'png' && opts.text ? addPngText(bytes, opts.text) : bytes;
}

/** Writes an image by extension (.png, .jpg/.jpeg, .webp), atomically. */
export async function writeImage(
  file: string,
  img: Image8,
  opts: WriteImageOptions = {},
): Promise<void> {
  const format = formatForPath(file);
  const bytes = await encodeImage(img, format, opts);
  try {
    await atomicWriteFile(file, bytes, { fsync: false });
  } catch (e) {
    if (e instanceof DimooError) throw e; // already names the file or its folder
    throw new DimooError(`${file}: cannot write image (${(e as Error).message})`, E);
  }
}
