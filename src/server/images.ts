/**
 * Pixels in and out of the server: uploads and data URLs decoded with the
 * image module's size checks, the token-grid size an upload gets, results and
 * previews encoded as PNG (sharp runs on libuv's pool, not on the event loop).
 * Uploads reach the library as decoded pixels: fitting them to the grid (crop,
 * floor, resize) is the library's image processor's job, so an upload gives
 * the same tokens here as through the CLI.
 */
import sharp from 'sharp';
import { DimooError } from '../errors.js';
import { readImage, readMask } from '../image/io.js';
import { pixelMaskToCells, type PixelMask } from '../image/masks.js';
import { checkTokenGrid as checkGrid } from '../pipelines/token-grid.js';
import type { DimooApi, ModelInfo, RgbImage, TokenGrid } from '../pipelines/types.js';
import { RequestError } from './errors.js';
import type { ServerLimits } from './limits.js';

const S = 16;
/** Colour of still-masked cells in previews. */
const NEUTRAL = 128;

export async function pngOf(img: RgbImage): Promise<Buffer> {
  return sharp(Buffer.from(img.data.buffer, img.data.byteOffset, img.data.byteLength), {
    raw: { width: img.width, height: img.height, channels: 3 },
  })
    .png({ compressionLevel: 6 })
    .toBuffer();
}

export function dataUrl(png: Buffer): string {
  return `data:image/png;base64,${png.toString('base64')}`;
}

/** An uploaded image file -> RGB, refusing non-images and oversized ones with a 400. */
export async function decodeUpload(
  buf: Uint8Array,
  what: string,
  limits: ServerLimits,
): Promise<RgbImage> {
  try {
    const img = await readImage(buf, {
      name: what,
      limits: { maxPixels: limits.uploadPixels, maxSide: 16384 },
    });
    return { data: img.data, width: img.width, height: img.height };
  } catch (e) {
    if (e instanceof DimooError) throw new RequestError(e.message, e.code, 400, what);
    throw e;
  }
}

const DATA_URL_RE = /^data:image\/(png|jpeg|jpg|webp|gif);base64,/i;

/** `data:image/...;base64,...` -> bytes. Remote URLs are refused: the server fetches nothing. */
export function bytesOfDataUrl(url: unknown, param: string): Buffer {
  if (typeof url !== 'string')
    throw new RequestError(`${param}: must be a data URL string`, 'E_PARAM', 400, param);
  const m = DATA_URL_RE.exec(url);
  if (!m) {
    const hint = /^https?:/i.test(url)
      ? ' (remote URLs are not fetched; send the image inline)'
      : '';
    throw new RequestError(
      `${param}: expected a data:image/png|jpeg|webp|gif;base64,... URL${hint}`,
      'E_PARAM',
      400,
      param,
    );
  }
  const b64 = url.slice(m[0].length);
  if (!/^[A-Za-z0-9+/=\s]*$/.test(b64))
    throw new RequestError(`${param}: the base64 payload is malformed`, 'E_PARAM', 400, param);
  return Buffer.from(b64, 'base64');
}

/**
 * Largest size with sides multiples of 16 that keeps the aspect ratio and
 * fits the output limits; the image itself when it already does.
 */
export function gridSizeFor(
  width: number,
  height: number,
  limits: ServerLimits,
): { width: number; height: number } {
  let scale = Math.min(
    1,
    Math.sqrt(limits.maxPixels / (width * height)),
    limits.maxSide / Math.max(width, height),
  );
  for (;;) {
    const w = Math.max(S, Math.floor((width * scale) / S) * S);
    const h = Math.max(S, Math.floor((height * scale) / S) * S);
    if (w * h <= limits.maxPixels && w <= limits.maxSide && h <= limits.maxSide)
      return { width: w, height: h };
    scale *= 0.98;
  }
}

/**
 * A mask PNG (transparent = regenerate, or white = regenerate for opaque
 * masks) of exactly the image's size -> one flag per token cell.
 */
export async function maskCellsFromPng(
  buf: Uint8Array,
  imageWidth: number,
  imageHeight: number,
  grid: { width: number; height: number },
  limits: ServerLimits,
  param = 'mask',
): Promise<Uint8Array> {
  let px: PixelMask;
  try {
    px = await readMask(buf, {
      name: param,
      width: imageWidth,
      height: imageHeight,
      limits: { maxPixels: limits.uploadPixels, maxSide: 16384 },
    });
  } catch (e) {
    if (e instanceof DimooError) throw new RequestError(e.message, e.code, 400, param);
    throw e;
  }
  return pixelMaskToCells(px, grid.height / S, grid.width / S).cells;
}

/** A client-sent token grid, checked by the library's rules for the served model and the server's size limits. */
export function checkTokenGrid(
  v: unknown,
  param: string,
  limits: ServerLimits,
  model: Pick<ModelInfo, 'vqScale' | 'codebookSize'>,
): TokenGrid {
  let g: TokenGrid;
  try {
    g = checkGrid(v, param, { scale: model.vqScale, codebookSize: model.codebookSize });
  } catch (e) {
    if (e instanceof DimooError) throw new RequestError(e.message, e.code, 400, param);
    throw e;
  }
  if (
    g.width * g.height > limits.maxPixels ||
    g.width > limits.maxSide ||
    g.height > limits.maxSide
  ) {
    throw new RequestError(
      `${param}: ${g.width}x${g.height} is over the server's size limits`,
      'E_LIMIT',
      400,
      param,
    );
  }
  return g;
}

/**
 * A preview of a partly sampled grid: still-masked cells (-1) decode as some
 * valid code and are then painted neutral grey, so the user sees what is
 * settled and what is not.
 */
export async function renderPreview(
  api: DimooApi,
  codes: Int32Array,
  gridH: number,
  gridW: number,
): Promise<Buffer> {
  const filled = Array.from(codes, (c) => (c < 0 ? 0 : c));
  const img = await api.decodeTokens({ width: gridW * S, height: gridH * S, codes: filled });
  const w = img.width;
  const data = img.data;
  for (let i = 0; i < codes.length; i++) {
    if (codes[i]! >= 0) continue;
    const y0 = Math.floor(i / gridW) * S;
    const x0 = (i % gridW) * S;
    for (let y = y0; y < y0 + S; y++) data.fill(NEUTRAL, (y * w + x0) * 3, (y * w + x0 + S) * 3);
  }
  return pngOf(img);
}
