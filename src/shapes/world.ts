/**
 * The "shapes" world: a tiny synthetic domain small enough to train a DiMOO
 * on this machine, and simple enough that a rule-based checker can read any
 * picture of it back (see checker.ts).
 *
 * A scene is a 128x128 canvas (an 8x8 token grid at the VQ-VAE's 16x) with a
 * white, black or gray background and one to three non-overlapping objects.
 * Each object is a circle, square, up-pointing triangle or diamond in one of
 * six colors, small (~32 px across) or large (~56 px), centred in one of the
 * nine cells of a 3x3 layout (row-major: 0 = top left ... 8 = bottom right).
 * Pure: no I/O; randomness comes from the caller's seeded Prng.
 */
import { DimooError } from '../errors.js';
import type { Prng } from '../samplers/prng.js';

export const CANVAS = 128;

export const SHAPES = ['circle', 'square', 'triangle', 'diamond'] as const;
export const COLORS = ['red', 'orange', 'yellow', 'green', 'blue', 'purple'] as const;
export const BACKGROUNDS = ['white', 'black', 'gray'] as const;
export const SIZES = ['small', 'large'] as const;
/** Cell names, row-major; the index is the cell id. */
export const CELLS = [
  'top left',
  'top',
  'top right',
  'left',
  'center',
  'right',
  'bottom left',
  'bottom',
  'bottom right',
] as const;

export type Shape = (typeof SHAPES)[number];
export type Color = (typeof COLORS)[number];
export type Background = (typeof BACKGROUNDS)[number];
export type Size = (typeof SIZES)[number];

/** Display RGB of each color; far enough apart (>= 80 in RGB distance) for the checker. */
export const COLOR_RGB: Readonly<Record<Color | Background, readonly [number, number, number]>> = {
  red: [220, 30, 30],
  orange: [255, 140, 0],
  yellow: [245, 225, 40],
  green: [30, 165, 60],
  blue: [30, 80, 225],
  purple: [145, 55, 195],
  white: [255, 255, 255],
  black: [0, 0, 0],
  gray: [128, 128, 128],
};

/**
 * Extent (px across) ranges per size; the checker splits them at SIZE_SPLIT_PX.
 * One extent per size (and no jitter below): every (shape, size, cell) has one
 * drawing, so the VQ-VAE and the transformer learn the world's few hundred
 * object drawings rather than thousands of sub-pixel variants (with +-2 px and
 * 5-7 extents, the 45-minute VQ-VAE reached 18 dB and confused colours).
 */
export const SIZE_PX: Readonly<Record<Size, readonly [number, number]>> = {
  small: [32, 32],
  large: [56, 56],
};
export const SIZE_SPLIT_PX = 44;
/** Empty pixels kept between two objects' boxes, and between an object and the edge. */
export const GAP_PX = 4;
export const EDGE_PX = 2;
/** Largest shift of an object's centre from its cell's centre (0: see SIZE_PX). */
export const JITTER_PX = 0;

export interface ShapeObject {
  shape: Shape;
  color: Color;
  size: Size;
  /** Cell id 0..8 (row-major 3x3). */
  cell: number;
  /** Centre of the object's box, in pixels. */
  cx: number;
  cy: number;
  /** Width = height of the object's box, in pixels. */
  extent: number;
}

export interface Scene {
  background: Background;
  objects: ShapeObject[];
}

export function cellRow(cell: number): number {
  return Math.floor(cell / 3);
}
export function cellCol(cell: number): number {
  return cell % 3;
}

/**
 * Centre (px) of the layout's column or row `i` (0..2): a quarter, a half and
 * three quarters of the canvas (32, 64, 96 on 128 px). Every centre is then a
 * multiple of the VQ-VAE's 16-px cell, so a drawing covers the same token
 * cells around its centre wherever it stands: an object's codes depend on
 * what it is (shape, size, colour, background), not on where it is, and the
 * transformer learns one set of codes per object, placed by the caption.
 * (Centres at thirds of the canvas, until 2026-12-02, gave each of the nine
 * places its own sub-cell offsets and codes: ~7 700 cell codes, too many to
 * learn from this world's data; see docs/shapes.md.)
 */
export function cellCentre(i: number): number {
  return ((i + 1) * CANVAS) / 4;
}

/** The cell holding pixel (x, y) of a canvas of the given size. */
export function cellAt(x: number, y: number, width = CANVAS, height = CANVAS): number {
  const col = Math.min(2, Math.max(0, Math.floor((x * 3) / width)));
  const row = Math.min(2, Math.max(0, Math.floor((y * 3) / height)));
  return row * 3 + col;
}

function pick<T>(prng: Prng, list: readonly T[]): T {
  return list[prng.randint(0, list.length)]!;
}

export interface Box {
  x0: number;
  y0: number;
  x1: number;
  y1: number;
}

export function objectBox(o: Pick<ShapeObject, 'cx' | 'cy' | 'extent'>): Box {
  const r = o.extent / 2;
  return { x0: o.cx - r, y0: o.cy - r, x1: o.cx + r, y1: o.cy + r };
}

/** True when two boxes come closer than `gap` pixels. */
export function boxesTooClose(a: Box, b: Box, gap = GAP_PX): boolean {
  return !(a.x1 + gap <= b.x0 || b.x1 + gap <= a.x0 || a.y1 + gap <= b.y0 || b.y1 + gap <= a.y0);
}

/**
 * Places an object in `cell`: centred on the cell with a small jitter,
 * pulled inside the canvas. Null when it would come too close to `others`
 * (or the cell is taken).
 */
export function placeObject(
  prng: Prng,
  others: readonly ShapeObject[],
  spec: { shape: Shape; color: Color; size: Size; cell: number },
): ShapeObject | null {
  if (!Number.isInteger(spec.cell) || spec.cell < 0 || spec.cell > 8) {
    throw new DimooError(`cell must be 0..8, got ${spec.cell}`, 'E_PARAM');
  }
  if (others.some((o) => o.cell === spec.cell)) return null;
  const [lo, hi] = SIZE_PX[spec.size];
  const extent = prng.randint(lo, hi + 1);
  const r = extent / 2;
  const clamp = (v: number): number => Math.min(CANVAS - EDGE_PX - r, Math.max(EDGE_PX + r, v));
  const cx = clamp(cellCentre(cellCol(spec.cell)) + prng.randint(-JITTER_PX, JITTER_PX + 1));
  const cy = clamp(cellCentre(cellRow(spec.cell)) + prng.randint(-JITTER_PX, JITTER_PX + 1));
  const obj: ShapeObject = { ...spec, cx, cy, extent };
  // Clamping must not carry the centre out of its cell (the checker reads the cell from it).
  if (cellAt(cx, cy) !== spec.cell) return null;
  const box = objectBox(obj);
  if (others.some((o) => boxesTooClose(box, objectBox(o)))) return null;
  return obj;
}

export interface SceneOptions {
  minObjects?: number;
  maxObjects?: number;
}

/** A random scene; object count uniform in [min, max] (default 1..3). */
export function sampleScene(prng: Prng, opts: SceneOptions = {}): Scene {
  const min = opts.minObjects ?? 1;
  const max = opts.maxObjects ?? 3;
  if (!(Number.isInteger(min) && Number.isInteger(max) && min >= 0 && max <= 3 && min <= max)) {
    throw new DimooError(`object count range must be within 0..3, got ${min}..${max}`, 'E_PARAM');
  }
  const n = prng.randint(min, max + 1);
  const background = pick(prng, BACKGROUNDS);
  // Count-style captions ("two small blue squares") need repeats; make them common enough.
  const repeat = n >= 2 && prng.uniform() < 0.25;
  // A first object can leave no room for the rest (a large one in the centre): start over.
  for (let attempt = 0; attempt < 100; attempt++) {
    const objects: ShapeObject[] = [];
    for (let tries = 0; objects.length < n && tries < 30; tries++) {
      const base = repeat && objects.length > 0 ? objects[0]! : undefined;
      const spec = {
        shape: base?.shape ?? pick(prng, SHAPES),
        color: base?.color ?? pick(prng, COLORS),
        size: base?.size ?? pick(prng, SIZES),
        cell: prng.randint(0, 9),
      };
      const o = placeObject(prng, objects, spec);
      if (o) objects.push(o);
    }
    if (objects.length === n) return { background, objects: sortObjects(objects) };
  }
  throw new DimooError(`could not place ${n} objects`, 'E_STATE');
}

/** Objects in cell order (the order captions and the checker use). */
export function sortObjects(objects: readonly ShapeObject[]): ShapeObject[] {
  return [...objects].sort((a, b) => a.cell - b.cell);
}

/** Attributes only (no pixel geometry): what captions speak of and the checker reads back. */
export interface ObjectFacts {
  shape: Shape;
  color: Color;
  size: Size;
  cell: number;
}

export interface SceneFacts {
  background: Background;
  objects: ObjectFacts[];
}

export function sceneFacts(s: {
  background: Background;
  objects: readonly ObjectFacts[];
}): SceneFacts {
  return {
    background: s.background,
    objects: sortObjects(s.objects as ShapeObject[]).map(({ shape, color, size, cell }) => ({
      shape,
      color,
      size,
      cell,
    })),
  };
}

/** A canonical string of a scene's facts: equal keys = same scene for every checker question. */
export function sceneKey(s: { background: Background; objects: readonly ObjectFacts[] }): string {
  const f = sceneFacts(s);
  return [f.background, ...f.objects.map((o) => `${o.cell}:${o.size}:${o.color}:${o.shape}`)].join(
    '|',
  );
}

/** FNV-1a of a string, for the held-out split. */
export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/**
 * The held-out split is a pure function of the scene's facts, so one scene
 * never lands on both sides, and `dimoo eval` finds the same held-out scenes
 * the generator set aside (with the same fraction).
 */
export function isHeldOut(
  s: { background: Background; objects: readonly ObjectFacts[] },
  fraction: number,
): boolean {
  if (!(fraction >= 0 && fraction <= 1))
    throw new DimooError(`held-out fraction must be in [0, 1], got ${fraction}`, 'E_PARAM');
  return hashString(sceneKey(s)) % 10000 < Math.round(fraction * 10000);
}
