/**
 * The original's training/inference crop (Lumina-DiMOO utils/image_utils.py):
 * pick, from a list of patch-aligned sizes, the one whose aspect ratio best
 * matches the image; halve the image with a box filter while it is at least
 * twice that size; resize with bicubic so it covers the size; crop.
 *
 * The original picks the crop window with random.randint; here the window is
 * centred by default (deterministic), with a seeded random option.
 */
import { DimooError } from '../errors.js';
import { checkImage, roundHalfEven, type Image8 } from './image.js';
import { resizePil } from './resample.js';

export type Size = [width: number, height: number];

/**
 * All (w, h) = (wp, hp) * patchSize with wp * hp <= numPatches and aspect ratio
 * <= maxRatio, walking from the widest to the tallest (the original's order).
 */
export function generateCropSizeList(
  numPatches: number,
  patchSize: number,
  maxRatio = 4.0,
): Size[] {
  if (!(maxRatio >= 1))
    throw new DimooError(`generateCropSizeList: maxRatio must be >= 1, got ${maxRatio}`, 'E_PARAM');
  if (
    !Number.isSafeInteger(numPatches) ||
    numPatches < 1 ||
    !Number.isSafeInteger(patchSize) ||
    patchSize < 1
  ) {
    throw new DimooError(
      `generateCropSizeList: numPatches and patchSize must be positive integers`,
      'E_PARAM',
    );
  }
  const out: Size[] = [];
  let wp = numPatches;
  let hp = 1;
  while (wp > 0) {
    if (Math.max(wp, hp) / Math.min(wp, hp) <= maxRatio) out.push([wp * patchSize, hp * patchSize]);
    if ((hp + 1) * wp <= numPatches) hp += 1;
    else wp -= 1;
  }
  return out;
}

/** The list the original uses for an area budget: ((budget // 32) ** 2 patches of 32 px). */
export function cropSizeListForBudget(budget: number): Size[] {
  if (!Number.isSafeInteger(budget) || budget < 32) {
    throw new DimooError(
      `crop budget must be an integer >= 32 (e.g. 512 or 1024), got ${budget}`,
      'E_PARAM',
    );
  }
  const p = Math.floor(budget / 32);
  return generateCropSizeList(p * p, 32);
}

/**
 * var_center_crop's choice: the size maximising min(cw/w, ch/h) / max(cw/w, ch/h);
 * equal ratios go to the larger (w, h) pair (the original sorts (ratio, size) tuples descending).
 */
export function chooseCropSize(width: number, height: number, list: readonly Size[]): Size {
  if (list.length === 0) throw new DimooError('chooseCropSize: empty crop size list', 'E_PARAM');
  let best: Size | undefined;
  let bestRatio = -Infinity;
  for (const s of list) {
    const rw = s[0] / width;
    const rh = s[1] / height;
    const r = Math.min(rw, rh) / Math.max(rw, rh);
    const better =
      r > bestRatio ||
      (r === bestRatio &&
        best !== undefined &&
        (s[0] > best[0] || (s[0] === best[0] && s[1] > best[1])));
    if (better) {
      best = s;
      bestRatio = r;
    }
  }
  return [best![0], best![1]];
}

export type CropOffset = 'center' | { seed: number };

export interface CropPlan {
  input: Size;
  /** Number of box-filter halvings, and the size after them. */
  halvings: number;
  halved: Size;
  /** Size after the bicubic resize (equal to `halved` when no resize happens). */
  resized: Size;
  /** Crop window in the resized image. */
  left: number;
  top: number;
  crop: Size;
}

/** 32-bit mix for the seeded window choice (mulberry32). */
function seededInts(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** Geometry of center_crop for an input size and a chosen crop size (no pixels touched). */
export function planCrop(
  width: number,
  height: number,
  crop: Size,
  offset: CropOffset = 'center',
): CropPlan {
  let w = width;
  let h = height;
  let halvings = 0;
  while (w >= 2 * crop[0] && h >= 2 * crop[1]) {
    w = Math.floor(w / 2);
    h = Math.floor(h / 2);
    halvings++;
  }
  const scale = Math.max(crop[0] / w, crop[1] / h);
  const resized: Size = [roundHalfEven(w * scale), roundHalfEven(h * scale)];
  const spanX = resized[0] - crop[0];
  const spanY = resized[1] - crop[1];
  if (spanX < 0 || spanY < 0) {
    throw new DimooError(
      `crop: resized image ${resized[0]}x${resized[1]} is smaller than the crop ${crop[0]}x${crop[1]}`,
      'E_PARAM',
    );
  }
  let left: number;
  let top: number;
  if (offset === 'center') {
    left = Math.floor(spanX / 2);
    top = Math.floor(spanY / 2);
  } else {
    const next = seededInts(offset.seed);
    left = next() % (spanX + 1);
    top = next() % (spanY + 1);
  }
  return {
    input: [width, height],
    halvings,
    halved: [w, h],
    resized,
    left,
    top,
    crop: [crop[0], crop[1]],
  };
}

/** Crops a window out of an image (any channel count). */
export function cropImage(
  img: Image8,
  left: number,
  top: number,
  width: number,
  height: number,
): Image8 {
  checkImage(img, 'crop input');
  if (
    left < 0 ||
    top < 0 ||
    width < 1 ||
    height < 1 ||
    left + width > img.width ||
    top + height > img.height
  ) {
    throw new DimooError(
      `crop window ${width}x${height} at (${left}, ${top}) lies outside the ${img.width}x${img.height} image`,
      'E_PARAM',
    );
  }
  const ch = img.channels;
  const out = new Uint8Array(width * height * ch);
  const rowBytes = width * ch;
  for (let y = 0; y < height; y++) {
    const s = ((top + y) * img.width + left) * ch;
    out.set(img.data.subarray(s, s + rowBytes), y * rowBytes);
  }
  return { data: out, width, height, channels: ch };
}

/**
 * Runs a plan on an image of the plan's input size. Works for masks too (one
 * channel), so a user mask follows its image exactly.
 */
export function applyCropPlan(img: Image8, plan: CropPlan): Image8 {
  if (img.width !== plan.input[0] || img.height !== plan.input[1]) {
    throw new DimooError(
      `crop plan is for ${plan.input[0]}x${plan.input[1]} but the image is ${img.width}x${img.height}`,
      'E_PARAM',
    );
  }
  let cur = img;
  for (let i = 0; i < plan.halvings; i++) {
    cur = resizePil(cur, Math.floor(cur.width / 2), Math.floor(cur.height / 2), 'box');
  }
  cur = resizePil(cur, plan.resized[0], plan.resized[1], 'bicubic');
  return cropImage(cur, plan.left, plan.top, plan.crop[0], plan.crop[1]);
}

export interface VarCenterCropOptions {
  /** Area budget (512 or 1024 in DiMOO) or an explicit size list. Default 512. */
  budget?: number;
  sizes?: readonly Size[];
  offset?: CropOffset;
}

/** var_center_crop: choose the size, then halve / resize / crop as the original does. */
export function varCenterCrop(
  img: Image8,
  opts: VarCenterCropOptions = {},
): { image: Image8; plan: CropPlan } {
  checkImage(img, 'crop input');
  const list = opts.sizes ?? cropSizeListForBudget(opts.budget ?? 512);
  const size = chooseCropSize(img.width, img.height, list);
  const plan = planCrop(img.width, img.height, size, opts.offset ?? 'center');
  return { image: applyCropPlan(img, plan), plan };
}
