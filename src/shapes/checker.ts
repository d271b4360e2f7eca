/**
 * Reads a shapes picture back into facts, by rules only: the background is
 * the majority background color on the border; pixels close to one object
 * color are segmented into 4-connected components; each large-enough
 * component is one object, its shape told by geometry (how much of its box it
 * fills, and how its mass splits between the upper and lower half), its size
 * by its box, its cell by its box centre. Works on rendered pictures exactly
 * and tolerates the noise of decoded ones (fragments below MIN_AREA_PX are
 * ignored).
 */
import { DimooError } from '../errors.js';
import {
  BACKGROUNDS,
  COLOR_RGB,
  COLORS,
  SIZE_SPLIT_PX,
  cellAt,
  type Background,
  type Color,
  type ObjectFacts,
  type SceneFacts,
  type Shape,
} from './world.js';

/** A pixel belongs to an object color when closer than this (RGB distance) to its background-to-color segment. */
export const COLOR_TOLERANCE = 70;
/** ... and at least this share of the way from the background to the color (see detectScene). */
export const EDGE_SHARE = 0.5;
/** Components smaller than this are noise (a small triangle covers ~500 px). */
export const MIN_AREA_PX = 120;

export interface DetectedObject extends ObjectFacts {
  /** Pixels in the component. */
  area: number;
  /** Component box (inclusive pixel bounds). */
  box: { x0: number; y0: number; x1: number; y1: number };
  /** area / box area. */
  fill: number;
  /** Share of the area in the lower half of the box. */
  lowerShare: number;
}

export interface Detection extends SceneFacts {
  objects: DetectedObject[];
  /** Share of border pixels that voted for the background found. */
  backgroundShare: number;
}

function dist2(r: number, g: number, b: number, c: readonly number[]): number {
  return (r - c[0]!) ** 2 + (g - c[1]!) ** 2 + (b - c[2]!) ** 2;
}

function nearest<T extends keyof typeof COLOR_RGB>(
  r: number,
  g: number,
  b: number,
  names: readonly T[],
): { name: T; d2: number } {
  let best = names[0]!;
  let bd = Infinity;
  for (const n of names) {
    const d = dist2(r, g, b, COLOR_RGB[n]);
    if (d < bd) {
      bd = d;
      best = n;
    }
  }
  return { name: best, d2: bd };
}

/** Majority vote of the border pixels (outer 2 px) among the background colors. */
function findBackground(img: { data: Uint8Array; width: number; height: number }): {
  bg: Background;
  share: number;
} {
  const votes = new Map<Background, number>();
  let total = 0;
  const { width: w, height: h, data } = img;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      if (x >= 2 && x < w - 2 && y >= 2 && y < h - 2) continue;
      const p = (y * w + x) * 3;
      const { name } = nearest(data[p]!, data[p + 1]!, data[p + 2]!, BACKGROUNDS);
      votes.set(name, (votes.get(name) ?? 0) + 1);
      total++;
    }
  }
  let bg: Background = 'white';
  let n = -1;
  for (const b of BACKGROUNDS) {
    if ((votes.get(b) ?? 0) > n) {
      n = votes.get(b) ?? 0;
      bg = b;
    }
  }
  return { bg, share: n / total };
}

export function classifyShape(fill: number, lowerShare: number): Shape {
  // Ideal fills: square 1, circle pi/4 = 0.785, triangle and diamond 0.5;
  // a triangle keeps 3/4 of its area in the lower half, a diamond 1/2.
  if (fill > 0.9) return 'square';
  if (fill > 0.64) return 'circle';
  return lowerShare > 0.625 ? 'triangle' : 'diamond';
}

/** The facts of a picture (any size; cells are thirds of it). */
export function detectScene(img: {
  data: Uint8Array;
  width: number;
  height: number;
  channels?: number;
}): Detection {
  const { width: w, height: h, data } = img;
  if ((img.channels ?? 3) !== 3 || data.length !== w * h * 3) {
    throw new DimooError(
      `checker needs an RGB image, got ${data.length} bytes for ${w}x${h}`,
      'E_IMAGE',
    );
  }
  const { bg, share } = findBackground(img);
  const [b0, b1, b2] = COLOR_RGB[bg];
  // Per color: where a pixel lies on the segment from the background to the
  // color (t = 0 the background, 1 the color) and how far it is from it. A
  // soft edge is a blend of the two, on the segment, so cutting at t =
  // EDGE_SHARE cuts it in its middle on every background; the nearest palette
  // color alone gave the edge of an orange square on black to red (a 2/3
  // orange blend on black is nearer red than orange), which shrank the square
  // and read it as a circle.
  const seg = COLORS.map((c) => {
    const [r, g, b] = COLOR_RGB[c];
    const d = [r - b0, g - b1, b - b2] as const;
    return { d, len2: d[0] ** 2 + d[1] ** 2 + d[2] ** 2 };
  });
  const tol2 = COLOR_TOLERANCE ** 2;
  // label[i] = color index + 1, 0 = none (flat loops: this runs per pixel).
  const label = new Uint8Array(w * h);
  for (let i = 0; i < w * h; i++) {
    const r = data[i * 3]! - b0;
    const g = data[i * 3 + 1]! - b1;
    const b = data[i * 3 + 2]! - b2;
    let best = -1;
    let bd = tol2;
    for (let k = 0; k < seg.length; k++) {
      const { d, len2 } = seg[k]!;
      const t = (r * d[0] + g * d[1] + b * d[2]) / len2;
      if (t < EDGE_SHARE) continue;
      const u = Math.min(1, t);
      const e = (r - u * d[0]) ** 2 + (g - u * d[1]) ** 2 + (b - u * d[2]) ** 2;
      if (e <= bd) {
        bd = e;
        best = k;
      }
    }
    if (best >= 0) label[i] = best + 1;
  }
  const seen = new Uint8Array(w * h);
  const stack: number[] = [];
  const objects: DetectedObject[] = [];
  for (let start = 0; start < w * h; start++) {
    const lab = label[start]!;
    if (lab === 0 || seen[start]) continue;
    const pixels: number[] = [];
    seen[start] = 1;
    stack.push(start);
    while (stack.length > 0) {
      const i = stack.pop()!;
      pixels.push(i);
      const x = i % w;
      const y = (i - x) / w;
      const visit = (j: number): void => {
        if (!seen[j] && label[j] === lab) {
          seen[j] = 1;
          stack.push(j);
        }
      };
      if (x > 0) visit(i - 1);
      if (x < w - 1) visit(i + 1);
      if (y > 0) visit(i - w);
      if (y < h - 1) visit(i + w);
    }
    if (pixels.length < MIN_AREA_PX) continue;
    let x0 = w;
    let y0 = h;
    let x1 = -1;
    let y1 = -1;
    for (const i of pixels) {
      const x = i % w;
      const y = (i - x) / w;
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      if (y > y1) y1 = y;
    }
    const bw = x1 - x0 + 1;
    const bh = y1 - y0 + 1;
    const midY = (y0 + y1 + 1) / 2;
    let lower = 0;
    for (const i of pixels) if ((i - (i % w)) / w + 0.5 > midY) lower++;
    const fill = pixels.length / (bw * bh);
    const lowerShare = lower / pixels.length;
    objects.push({
      shape: classifyShape(fill, lowerShare),
      color: COLORS[lab - 1] as Color,
      size: Math.max(bw, bh) >= SIZE_SPLIT_PX ? 'large' : 'small',
      cell: cellAt((x0 + x1 + 1) / 2, (y0 + y1 + 1) / 2, w, h),
      area: pixels.length,
      box: { x0, y0, x1, y1 },
      fill,
      lowerShare,
    });
  }
  objects.sort((a, b) => a.cell - b.cell || b.area - a.area);
  return { background: bg, objects, backgroundShare: share };
}
