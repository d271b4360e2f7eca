/**
 * What a job asks of a model, as plain data: routes build a JobSpec after
 * validating the request, and an executor (`runJobSpec` in tasks.ts) runs it
 * on a DimooApi, in this process or on a queue worker elsewhere. The wire
 * form (JSON) carries pixels as base64; `specFromWire` checks every field a
 * foreign producer could get wrong, so a bad payload fails that one job with
 * a message naming the field instead of crashing a worker.
 */
import type {
  EditParams,
  GenerateParams,
  ImageInput,
  MaskSpec,
  PaintParams,
  RetouchParams,
  RgbImage,
  TokenGrid,
  UnderstandParams,
} from '../pipelines/types.js';
import { RequestError } from './errors.js';

export const IMAGE_TASKS = ['generate', 'edit', 'inpaint', 'outpaint', 'retouch'] as const;
export type ImageTask = (typeof IMAGE_TASKS)[number];
export const SPEC_TASKS = [...IMAGE_TASKS, 'understand', 'encode', 'decode'] as const;
export type SpecTask = (typeof SPEC_TASKS)[number];

export type ImageSpecParams = GenerateParams | EditParams | PaintParams | RetouchParams;

/** A pixel size on the token grid. */
export interface GridSize {
  width: number;
  height: number;
}

export interface ImageJobSpec {
  task: ImageTask;
  /** The DimooApi call's parameters; image i of n uses seed `params.seed + i`. */
  params: ImageSpecParams;
  /**
   * Encode `params.image` (pixels) to tokens at exactly this size first (the
   * library's image processor resizes), so masks in cells and rects line up;
   * the route decided it from the upload and the server's limits. Absent:
   * paint tasks encode at the image's own size floored to the grid, edits
   * leave fitting to the library (the original's crop).
   */
  encodeSize?: GridSize;
  n: number;
  /** Preview every k steps of the first image (0: none). */
  previewEvery: number;
  /** 'images': `{images: [...]}` with store names (OpenAI routes); 'single': one image, no store name (native jobs). */
  shape: 'images' | 'single';
}

export interface UnderstandJobSpec {
  task: 'understand';
  params: UnderstandParams;
  /** Answers wanted (answer i uses seed `params.seed + i`); default 1. */
  n?: number;
  /** 'answers': `{answers: [...]}` (chat completions); 'single' (default): one answer (native jobs). */
  shape?: 'answers' | 'single';
}

/** Pixels -> tokens at `size` (the library's image processor resizes) and the PNG of their decoding. */
export interface EncodeJobSpec {
  task: 'encode';
  image: RgbImage;
  size: GridSize;
}

export interface DecodeJobSpec {
  task: 'decode';
  tokens: TokenGrid;
}

export type JobSpec = ImageJobSpec | UnderstandJobSpec | EncodeJobSpec | DecodeJobSpec;

export function needsVq(spec: JobSpec): boolean {
  return spec.task !== 'understand';
}

// ---- wire form ----

interface WireRgb {
  width: number;
  height: number;
  b64: string;
}

function rgbToWire(img: RgbImage): WireRgb {
  return {
    width: img.width,
    height: img.height,
    b64: Buffer.from(img.data.buffer, img.data.byteOffset, img.data.byteLength).toString('base64'),
  };
}

function inputToWire(i: ImageInput): unknown {
  if ('rgb' in i) return { rgb: rgbToWire(i.rgb) };
  if ('tokens' in i) return { tokens: i.tokens };
  // Paths name files on the producer's machine; a worker elsewhere cannot read them.
  throw new Error('image inputs given as paths cannot be queued');
}

function maskToWire(m: MaskSpec): unknown {
  if (m.kind === 'cells') return { kind: 'cells', cells: Array.from(m.cells) };
  if (m.kind === 'png') throw new Error('masks given as paths cannot be queued');
  return m;
}

/** The JSON a queue carries. */
export function specToWire(spec: JobSpec): Record<string, unknown> {
  if (spec.task === 'encode')
    return { v: 1, task: 'encode', image: rgbToWire(spec.image), size: spec.size };
  if (spec.task === 'decode') return { v: 1, task: 'decode', tokens: spec.tokens };
  const p: Record<string, unknown> = { ...spec.params };
  for (const k of ['image', 'refImage'] as const)
    if (p[k] !== undefined) p[k] = inputToWire(p[k] as ImageInput);
  if (p['images'] !== undefined) p['images'] = (p['images'] as ImageInput[]).map(inputToWire);
  if (p['mask'] !== undefined) p['mask'] = maskToWire(p['mask'] as MaskSpec);
  if (spec.task === 'understand')
    return { v: 1, task: 'understand', params: p, n: spec.n ?? 1, shape: spec.shape ?? 'single' };
  return {
    v: 1,
    task: spec.task,
    params: p,
    ...(spec.encodeSize ? { encodeSize: spec.encodeSize } : {}),
    n: spec.n,
    previewEvery: spec.previewEvery,
    shape: spec.shape,
  };
}

const MAX_SIDE = 16384;

function bad(field: string, msg: string): RequestError {
  return new RequestError(`bad job payload: ${field}: ${msg}`, 'E_JOB_PAYLOAD', 400, field);
}

function obj(v: unknown, field: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v))
    throw bad(field, 'expected an object');
  return v as Record<string, unknown>;
}

function int(v: unknown, field: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max)
    throw bad(field, `expected an integer in [${min}, ${max}], got ${JSON.stringify(v)}`);
  return v;
}

function rgbFromWire(v: unknown, field: string): RgbImage {
  const o = obj(v, field);
  const width = int(o['width'], `${field}.width`, 1, MAX_SIDE);
  const height = int(o['height'], `${field}.height`, 1, MAX_SIDE);
  if (typeof o['b64'] !== 'string') throw bad(`${field}.b64`, 'expected base64 pixels');
  const data = Buffer.from(o['b64'], 'base64');
  if (data.length !== width * height * 3)
    throw bad(
      `${field}.b64`,
      `${width}x${height} RGB needs ${width * height * 3} bytes, got ${data.length}`,
    );
  return { width, height, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
}

function sizeFromWire(v: unknown, field: string): GridSize {
  const o = obj(v, field);
  return {
    width: int(o['width'], `${field}.width`, 1, MAX_SIDE),
    height: int(o['height'], `${field}.height`, 1, MAX_SIDE),
  };
}

function tokensFromWire(v: unknown, field: string): TokenGrid {
  const o = obj(v, field);
  const width = int(o['width'], `${field}.width`, 16, MAX_SIDE);
  const height = int(o['height'], `${field}.height`, 16, MAX_SIDE);
  const codes = o['codes'];
  if (!Array.isArray(codes) || !codes.every((c) => Number.isSafeInteger(c) && c >= 0))
    throw bad(`${field}.codes`, 'expected an array of non-negative integers');
  return { width, height, codes: codes as number[] };
}

function inputFromWire(v: unknown, field: string): ImageInput {
  const o = obj(v, field);
  if (o['rgb'] !== undefined) return { rgb: rgbFromWire(o['rgb'], `${field}.rgb`) };
  if (o['tokens'] !== undefined) return { tokens: tokensFromWire(o['tokens'], `${field}.tokens`) };
  throw bad(field, 'expected {"rgb": {width, height, b64}} or {"tokens": {...}}');
}

function maskFromWire(v: unknown, field: string): MaskSpec {
  const o = obj(v, field);
  if (o['kind'] === 'cells') {
    const c = o['cells'];
    if (!Array.isArray(c) || !c.every((x) => x === 0 || x === 1))
      throw bad(`${field}.cells`, 'expected an array of 0/1 flags');
    return { kind: 'cells', cells: c as number[] };
  }
  if (o['kind'] === 'ratio' || o['kind'] === 'rects') return o as MaskSpec;
  throw bad(`${field}.kind`, 'expected "cells", "rects" or "ratio"');
}

/**
 * A queue payload back to a JobSpec. Deep parameter checks (ranges, sizes,
 * edit types) are the pipeline's own, which also name the parameter.
 */
export function specFromWire(v: unknown): JobSpec {
  const o = obj(v, 'payload');
  if (o['v'] !== 1) throw bad('v', `unknown payload version ${JSON.stringify(o['v'])}`);
  const task = o['task'];
  if (typeof task !== 'string' || !(SPEC_TASKS as readonly string[]).includes(task))
    throw bad('task', `expected one of ${SPEC_TASKS.join(', ')}, got ${JSON.stringify(task)}`);
  if (task === 'encode')
    return { task, image: rgbFromWire(o['image'], 'image'), size: sizeFromWire(o['size'], 'size') };
  if (task === 'decode') return { task, tokens: tokensFromWire(o['tokens'], 'tokens') };
  const p: Record<string, unknown> = { ...obj(o['params'], 'params') };
  for (const k of ['image', 'refImage'] as const)
    if (p[k] !== undefined) p[k] = inputFromWire(p[k], `params.${k}`);
  if (p['images'] !== undefined) {
    const list = p['images'];
    if (!Array.isArray(list) || list.length > 64)
      throw bad('params.images', 'expected an array of at most 64 images');
    p['images'] = list.map((x, i) => inputFromWire(x, `params.images[${i}]`));
  }
  if (p['mask'] !== undefined) p['mask'] = maskFromWire(p['mask'], 'params.mask');
  if (task === 'understand') {
    if (typeof p['question'] !== 'string') throw bad('params.question', 'expected a string');
    // Neither `image` nor `images`: a text-only question.
    if (p['image'] !== undefined && p['images'] !== undefined)
      throw bad('params.images', 'give image or images, not both');
    const shape = o['shape'] ?? 'single';
    if (shape !== 'answers' && shape !== 'single')
      throw bad('shape', 'expected "answers" or "single"');
    return {
      task,
      params: p as unknown as UnderstandParams,
      n: o['n'] === undefined ? 1 : int(o['n'], 'n', 1, 64),
      shape,
    };
  }
  if (task !== 'retouch' && typeof p['prompt'] !== 'string')
    throw bad('params.prompt', 'expected a string');
  if (task !== 'generate' && p['image'] === undefined) throw bad('params.image', 'required');
  if (task === 'retouch' && p['mask'] === undefined) throw bad('params.mask', 'required');
  const shape = o['shape'];
  if (shape !== 'images' && shape !== 'single') throw bad('shape', 'expected "images" or "single"');
  return {
    task: task as ImageTask,
    params: p as unknown as ImageSpecParams,
    ...(o['encodeSize'] !== undefined
      ? { encodeSize: sizeFromWire(o['encodeSize'], 'encodeSize') }
      : {}),
    n: int(o['n'], 'n', 1, 64),
    previewEvery: int(o['previewEvery'], 'previewEvery', 0, 1_000_000),
    shape,
  };
}
