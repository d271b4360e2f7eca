/**
 * Which token cells to regenerate: the original's centred-rectangle masks for
 * inpainting/outpainting (utils/image_utils.encode_img_with_paint), user masks
 * from a PNG, and rectangle lists. Every pixel mask reaches the token grid the
 * same way: area average over each cell (F.interpolate mode="area"), a cell is
 * masked when the average is above one half, then optional dilation in cells.
 */
import { DimooError } from '../errors.js';
import { roundHalfEven } from './image.js';

/** One flag per token cell, row-major; 1 = masked (to be generated). */
export interface CellMask {
  gridH: number;
  gridW: number;
  cells: Uint8Array;
}

/** Per-pixel mask weights in [0, 1] (1 = regenerate), row-major, one value per pixel. */
export interface PixelMask {
  width: number;
  height: number;
  data: Float32Array;
}

export type PaintMode = 'inpainting' | 'outpainting';

export interface CenteredRectOptions {
  /** Fractions of the image height / width covered by the centred rectangle. */
  maskHRatio?: number;
  maskWRatio?: number;
  mode?: PaintMode;
  /** Size of the image as the VQ encoder sees it (default: the image size). */
  encodedWidth?: number;
  encodedHeight?: number;
}

function checkRatio(name: string, v: number): void {
  if (!Number.isFinite(v) || v < 0 || v > 1) {
    throw new DimooError(`${name} must be a number in [0, 1], got ${v}`, 'E_PARAM');
  }
}

/**
 * The original's pixel mask: a rectangle of round(H*hr) x round(W*wr) centred with
 * floor division, rescaled to the encoder's input size; inverted for outpainting.
 */
export function centeredRectPixelMask(
  width: number,
  height: number,
  opts: CenteredRectOptions = {},
): PixelMask {
  const hr = opts.maskHRatio ?? 1;
  const wr = opts.maskWRatio ?? 0.2;
  checkRatio('mask_h_ratio', hr);
  checkRatio('mask_w_ratio', wr);
  const mode = opts.mode ?? 'inpainting';
  const Hp = opts.encodedHeight ?? height;
  const Wp = opts.encodedWidth ?? width;
  const mh = roundHalfEven(height * hr);
  const mw = roundHalfEven(width * wr);
  const top = Math.floor((height - mh) / 2);
  const left = Math.floor((width - mw) / 2);
  // Python evaluates top * Hp / H left to right in doubles.
  const topP = roundHalfEven((top * Hp) / height);
  const leftP = roundHalfEven((left * Wp) / width);
  const bhP = roundHalfEven((mh * Hp) / height);
  const bwP = roundHalfEven((mw * Wp) / width);
  const data = new Float32Array(Wp * Hp);
  // Slice assignment clips at the far edges, as tensor slicing does.
  for (let y = topP; y < Math.min(topP + bhP, Hp); y++) {
    data.fill(1, y * Wp + leftP, y * Wp + Math.min(leftP + bwP, Wp));
  }
  if (mode === 'outpainting') for (let i = 0; i < data.length; i++) data[i] = 1 - data[i]!;
  return { width: Wp, height: Hp, data };
}

/**
 * Area-average a pixel mask onto a gridH x gridW grid (adaptive average pooling,
 * which is what F.interpolate(mode="area") does) and keep cells averaging > 0.5.
 */
export function pixelMaskToCells(
  mask: PixelMask,
  gridH: number,
  gridW: number,
  dilate = 0,
): CellMask {
  const { width: W, height: H, data } = mask;
  if (data.length !== W * H)
    throw new DimooError(`pixel mask: ${data.length} values for ${W}x${H}`, 'E_PARAM');
  if (gridH < 1 || gridW < 1 || gridH > H || gridW > W) {
    throw new DimooError(
      `pixel mask ${W}x${H} cannot be mapped to a ${gridW}x${gridH} token grid`,
      'E_PARAM',
    );
  }
  const cells = new Uint8Array(gridH * gridW);
  for (let i = 0; i < gridH; i++) {
    const y0 = Math.floor((i * H) / gridH);
    const y1 = Math.ceil(((i + 1) * H) / gridH);
    for (let j = 0; j < gridW; j++) {
      const x0 = Math.floor((j * W) / gridW);
      const x1 = Math.ceil(((j + 1) * W) / gridW);
      let s = 0;
      for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) s += data[y * W + x]!;
      // Summed in double: the mean of 0/1 values crosses 0.5 exactly when 2s crosses the count.
      cells[i * gridW + j] = 2 * s > (y1 - y0) * (x1 - x0) ? 1 : 0;
    }
  }
  const m = { gridH, gridW, cells };
  return dilate > 0 ? dilateCells(m, dilate) : m;
}

/** max_pool2d with a (2k+1)^2 window, stride 1, padding k: grows the mask by k cells (also diagonally). */
export function dilateCells(mask: CellMask, k: number): CellMask {
  if (!Number.isSafeInteger(k) || k < 0)
    throw new DimooError(`mask dilation must be a non-negative integer, got ${k}`, 'E_PARAM');
  const { gridH: H, gridW: W, cells } = mask;
  const out = new Uint8Array(H * W);
  for (let i = 0; i < H; i++) {
    for (let j = 0; j < W; j++) {
      let v = 0;
      for (let y = Math.max(0, i - k); y <= Math.min(H - 1, i + k) && !v; y++) {
        for (let x = Math.max(0, j - k); x <= Math.min(W - 1, j + k); x++) {
          if (cells[y * W + x]) {
            v = 1;
            break;
          }
        }
      }
      out[i * W + j] = v;
    }
  }
  return { gridH: H, gridW: W, cells: out };
}

export interface PaintMaskOptions extends CenteredRectOptions {
  /** Pixels per token side (16 for the aMUSEd VQ). */
  scale?: number;
  /** Dilation in cells after mapping (the original's dilate_latent_k). */
  dilate?: number;
}

/** encode_img_with_paint's token mask for an image of width x height (already encoder-sized or not). */
export function paintCellMask(
  width: number,
  height: number,
  opts: PaintMaskOptions = {},
): CellMask {
  const scale = opts.scale ?? 16;
  const Wp = opts.encodedWidth ?? width - (width % scale);
  const Hp = opts.encodedHeight ?? height - (height % scale);
  const px = centeredRectPixelMask(width, height, { ...opts, encodedWidth: Wp, encodedHeight: Hp });
  return pixelMaskToCells(px, Math.floor(Hp / scale), Math.floor(Wp / scale), opts.dilate ?? 0);
}

export type MaskSource = 'auto' | 'alpha' | 'luminance';

/**
 * Pixel weights from a decoded RGBA mask image. 'alpha': transparent = regenerate
 * (OpenAI's edit convention), weight = 1 - alpha/255. 'luminance': white =
 * regenerate, weight = luma/255 (ITU-R 601 weights, as PIL's convert("L")).
 * 'auto' uses alpha when any pixel is not fully opaque, luminance otherwise.
 */
export function maskFromRgba(
  rgba: Uint8Array,
  width: number,
  height: number,
  source: MaskSource = 'auto',
  what = 'mask',
): PixelMask {
  if (rgba.length !== width * height * 4) {
    throw new DimooError(
      `${what}: expected ${width}x${height} RGBA pixels, got ${rgba.length} bytes`,
      'E_IMAGE',
    );
  }
  let useAlpha = source === 'alpha';
  if (source === 'auto') {
    for (let i = 3; i < rgba.length; i += 4) {
      if (rgba[i] !== 255) {
        useAlpha = true;
        break;
      }
    }
  }
  const data = new Float32Array(width * height);
  for (let p = 0, i = 0; p < data.length; p++, i += 4) {
    if (useAlpha) {
      data[p] = 1 - rgba[i + 3]! / 255;
    } else {
      const l = (rgba[i]! * 19595 + rgba[i + 1]! * 38470 + rgba[i + 2]! * 7471 + 0x8000) >> 16;
      data[p] = l / 255;
    }
  }
  return { width, height, data };
}

/** Throws unless a user mask has exactly the image's size. */
export function checkMaskSize(
  mask: { width: number; height: number },
  width: number,
  height: number,
  what = 'mask',
): void {
  if (mask.width !== width || mask.height !== height) {
    throw new DimooError(
      `${what} is ${mask.width}x${mask.height} but the image is ${width}x${height}; they must be the same size`,
      'E_PARAM',
    );
  }
}

export interface Rect {
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface RectMaskOptions {
  /** Image size in pixels and its token grid. */
  width: number;
  height: number;
  gridW: number;
  gridH: number;
  /** 'px' (default): rectangles in pixels, mapped like any pixel mask; 'cells': exact token cells. */
  units?: 'px' | 'cells';
  dilate?: number;
}

/** Union of rectangles (for retouching) as a token mask. */
export function rectsToCellMask(rects: readonly Rect[], o: RectMaskOptions): CellMask {
  const units = o.units ?? 'px';
  const [W, H] = units === 'px' ? [o.width, o.height] : [o.gridW, o.gridH];
  rects.forEach((r, i) => {
    const ok = [r.x, r.y, r.width, r.height].every((v) => Number.isSafeInteger(v));
    if (
      !ok ||
      r.x < 0 ||
      r.y < 0 ||
      r.width < 1 ||
      r.height < 1 ||
      r.x + r.width > W ||
      r.y + r.height > H
    ) {
      throw new DimooError(
        `rectangle ${i} (x=${r.x}, y=${r.y}, w=${r.width}, h=${r.height}) lies outside the ${W}x${H} ${units === 'px' ? 'image' : 'token grid'}` +
          ' (integers, inside the bounds, non-empty)',
        'E_PARAM',
      );
    }
  });
  if (units === 'cells') {
    const cells = new Uint8Array(o.gridH * o.gridW);
    for (const r of rects)
      for (let y = r.y; y < r.y + r.height; y++)
        cells.fill(1, y * o.gridW + r.x, y * o.gridW + r.x + r.width);
    const m = { gridH: o.gridH, gridW: o.gridW, cells };
    return o.dilate ? dilateCells(m, o.dilate) : m;
  }
  const data = new Float32Array(W * H);
  for (const r of rects)
    for (let y = r.y; y < r.y + r.height; y++) data.fill(1, y * W + r.x, y * W + r.x + r.width);
  return pixelMaskToCells({ width: W, height: H, data }, o.gridH, o.gridW, o.dilate ?? 0);
}

/** A pixel mask as a one-channel 8-bit image (weight x 255, rounded), e.g. to run it through a crop plan. */
export function pixelMaskToImage8(mask: PixelMask): {
  data: Uint8Array;
  width: number;
  height: number;
  channels: 1;
} {
  const data = new Uint8Array(mask.data.length);
  for (let i = 0; i < data.length; i++)
    data[i] = Math.round(Math.min(1, Math.max(0, mask.data[i]!)) * 255);
  return { data, width: mask.width, height: mask.height, channels: 1 };
}

/** The inverse of pixelMaskToImage8 (one channel, 0..255 -> 0..1). */
export function image8ToPixelMask(img: {
  data: Uint8Array;
  width: number;
  height: number;
  channels: number;
}): PixelMask {
  if (img.channels !== 1 || img.data.length !== img.width * img.height) {
    throw new DimooError(
      `mask image must have one channel (${img.width}x${img.height}x${img.channels} given)`,
      'E_IMAGE',
    );
  }
  const data = new Float32Array(img.data.length);
  for (let i = 0; i < data.length; i++) data[i] = img.data[i]! / 255;
  return { width: img.width, height: img.height, data };
}
