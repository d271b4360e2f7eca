/**
 * Request field checks. Each failure is a 400 naming the field and what it
 * accepts, so a client can fix the request without reading the docs.
 */
import { EDIT_TYPES_HELP, isEditType } from '../pipelines/tasks.js';
import { drawSeed } from '../pipelines/validate.js';
import type { EditType, ImageSamplingParams, UnderstandParams } from '../pipelines/types.js';
import { checkBlockLayout } from '../pipelines/validate.js';
import { RequestError } from './errors.js';
import { TASK_DEFAULTS, type ServerLimits } from './limits.js';

export type Body = Record<string, unknown>;

function bad(param: string, msg: string): RequestError {
  return new RequestError(`${param}: ${msg}`, 'E_PARAM', 400, param);
}

export function asBody(v: unknown, what = 'request body'): Body {
  if (v === null || typeof v !== 'object' || Array.isArray(v))
    throw new RequestError(`${what} must be a JSON object`, 'E_PARAM');
  return v as Body;
}

/** Multipart fields arrive as strings; JSON ones keep their types. Both are accepted. */
function raw(b: Body, k: string): unknown {
  const v = b[k];
  return v === null || v === '' ? undefined : v;
}

export function optString(b: Body, k: string, maxLen: number): string | undefined {
  const v = raw(b, k);
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw bad(k, 'must be a string');
  if (v.length > maxLen)
    throw new RequestError(`${k}: longer than ${maxLen} characters`, 'E_LIMIT', 400, k);
  return v;
}

export function reqString(b: Body, k: string, maxLen: number): string {
  const v = optString(b, k, maxLen);
  if (v === undefined || v.trim() === '') throw bad(k, 'is required');
  return v;
}

export function optInt(
  b: Body,
  k: string,
  min: number,
  max: number,
  limitName?: string,
): number | undefined {
  const v = raw(b, k);
  if (v === undefined) return undefined;
  const n = typeof v === 'string' && /^-?\d+$/.test(v.trim()) ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n)) throw bad(k, 'must be an integer');
  if (n < min) throw bad(k, `must be at least ${min}, got ${n}`);
  if (n > max) {
    throw new RequestError(
      `${k}: at most ${max} allowed${limitName ? ` (server limit ${limitName})` : ''}, got ${n}`,
      'E_LIMIT',
      400,
      k,
    );
  }
  return n;
}

export function optNumber(b: Body, k: string, min: number, max: number): number | undefined {
  const v = raw(b, k);
  if (v === undefined) return undefined;
  const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isFinite(n)) throw bad(k, 'must be a number');
  if (n < min || n > max) throw bad(k, `must be between ${min} and ${max}, got ${n}`);
  return n;
}

export function optBool(b: Body, k: string): boolean | undefined {
  const v = raw(b, k);
  if (v === undefined) return undefined;
  if (typeof v === 'boolean') return v;
  if (v === 'true' || v === '1' || v === 'on') return true;
  if (v === 'false' || v === '0' || v === 'off') return false;
  throw bad(k, 'must be true or false');
}

/** A boolean, or one of `choices` by name (e.g. use_cache: true or "ml-cache"). */
export function optBoolOrChoice<T extends string>(
  b: Body,
  k: string,
  choices: readonly T[],
): boolean | T | undefined {
  const v = raw(b, k);
  if (typeof v === 'string' && (choices as readonly string[]).includes(v)) return v as T;
  try {
    return optBool(b, k);
  } catch {
    throw bad(k, `must be true, false or one of ${choices.join(', ')}`);
  }
}

export function optChoice<T extends string>(
  b: Body,
  k: string,
  choices: readonly T[],
): T | undefined {
  const v = raw(b, k);
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !(choices as readonly string[]).includes(v))
    throw bad(k, `must be one of ${choices.join(', ')}`);
  return v as T;
}

/** Checks an output size against the limits: multiples of 16, bounded side and area. */
export function checkSize(
  width: number,
  height: number,
  limits: ServerLimits,
  param = 'size',
): void {
  for (const v of [width, height]) {
    if (!Number.isInteger(v) || v < 16 || v % 16 !== 0)
      throw bad(param, `width and height must be positive multiples of 16, got ${width}x${height}`);
  }
  if (width > limits.maxSide || height > limits.maxSide) {
    throw new RequestError(
      `${param}: ${width}x${height} has a side over the server limit of ${limits.maxSide} px`,
      'E_LIMIT',
      400,
      param,
    );
  }
  if (width * height > limits.maxPixels) {
    throw new RequestError(
      `${param}: ${width}x${height} is ${width * height} pixels, over the server limit of ${limits.maxPixels}`,
      'E_LIMIT',
      400,
      param,
    );
  }
}

/** "WxH" (OpenAI `size`) or separate width/height fields. */
export function parseSize(
  b: Body,
  limits: ServerLimits,
  dflt: { width: number; height: number },
): { width: number; height: number } {
  const s = raw(b, 'size');
  let width: number;
  let height: number;
  if (s !== undefined && s !== 'auto') {
    const m = typeof s === 'string' ? /^(\d{1,5})x(\d{1,5})$/.exec(s.trim()) : null;
    if (!m) throw bad('size', `must look like "1024x1024", got ${JSON.stringify(s)}`);
    width = Number(m[1]);
    height = Number(m[2]);
  } else {
    width = optInt(b, 'width', 1, 1 << 20) ?? dflt.width;
    height = optInt(b, 'height', 1, 1 << 20) ?? dflt.height;
  }
  checkSize(width, height, limits);
  return { width, height };
}

/** Two names for one field: taking one and ignoring the other would be a silent guess. */
export function refuseBoth(b: Body, a: string, other: string): void {
  if (b[a] !== undefined && b[a] !== null && b[other] !== undefined && b[other] !== null)
    throw new RequestError(
      `${a} and ${other} name the same setting; give only one`,
      'E_PARAM',
      400,
      other,
    );
}

/** DiMOO sampling fields shared by every image task. `steps` is the OpenAI-ish name of `timesteps`. */
export function parseSampling(
  b: Body,
  limits: ServerLimits,
  defaultSteps: number,
): ImageSamplingParams & { seed: number } {
  refuseBoth(b, 'steps', 'timesteps');
  refuseBoth(b, 'cfg_scale', 'guidance');
  const steps =
    optInt(b, 'steps', 1, limits.maxSteps, 'maxSteps') ??
    optInt(b, 'timesteps', 1, limits.maxSteps, 'maxSteps') ??
    defaultSteps;
  if (steps > limits.maxSteps)
    throw new RequestError(
      `steps: at most ${limits.maxSteps} allowed (server limit maxSteps)`,
      'E_LIMIT',
      400,
      'steps',
    );
  const p: ImageSamplingParams & { seed: number } = {
    timesteps: steps,
    // A seed is always chosen here, so a result can be reproduced or retouched with the same noise.
    seed: optInt(b, 'seed', 0, 0xffffffff) ?? drawSeed(),
  };
  const cfg = optNumber(b, 'cfg_scale', 0, 100) ?? optNumber(b, 'guidance', 0, 100);
  if (cfg !== undefined) p.cfgScale = cfg;
  const t = optNumber(b, 'temperature', 0, 100);
  if (t !== undefined) p.temperature = t;
  const uc = optBool(b, 'use_cache');
  if (uc !== undefined) p.useCache = uc;
  Object.assign(p, parseCacheSchedule(b));
  return p;
}

/** The ML-Cache schedule fields (`cache_ratio`, `warmup_ratio`, `refresh_interval`), those given. */
export function parseCacheSchedule(b: Body): {
  cacheRatio?: number;
  warmupRatio?: number;
  refreshInterval?: number;
} {
  const p: { cacheRatio?: number; warmupRatio?: number; refreshInterval?: number } = {};
  const cr = optNumber(b, 'cache_ratio', 0, 1);
  if (cr !== undefined) p.cacheRatio = cr;
  const wr = optNumber(b, 'warmup_ratio', 0, 1);
  if (wr !== undefined) p.warmupRatio = wr;
  const ri = optInt(b, 'refresh_interval', 1, 100000);
  if (ri !== undefined) p.refreshInterval = ri;
  return p;
}

/**
 * Understanding parameters of a chat/understand request (defaults scaled to
 * the requested length). `dflt`: the model's own (ModelInfo.defaults.mmu),
 * else the original script's.
 */
export function parseUnderstand(
  b: Body,
  limits: { maxTokens: number; maxSteps: number },
  dflt: { genLength: number; blockLength: number; steps: number } = {
    genLength: TASK_DEFAULTS.mmuGenLength,
    blockLength: TASK_DEFAULTS.mmuBlockLength,
    steps: TASK_DEFAULTS.mmuSteps,
  },
): Omit<UnderstandParams, 'question' | 'image'> {
  const genLength =
    optInt(b, 'max_tokens', 1, limits.maxTokens, 'maxTokens') ??
    optInt(b, 'max_completion_tokens', 1, limits.maxTokens, 'maxTokens') ??
    optInt(b, 'gen_length', 1, limits.maxTokens, 'maxTokens');
  const p: Omit<UnderstandParams, 'question' | 'image'> = {};
  const gl = genLength ?? Math.min(dflt.genLength, limits.maxTokens);
  p.genLength = gl;
  p.blockLength = optInt(b, 'block_length', 1, limits.maxTokens) ?? Math.min(dflt.blockLength, gl);
  p.steps =
    optInt(b, 'steps', 1, limits.maxTokens, 'maxTokens') ??
    Math.max(1, Math.round((dflt.steps * gl) / dflt.genLength));
  // The model refuses a layout whose blocks do not divide evenly; say so before queueing.
  try {
    checkBlockLayout(p.genLength!, p.blockLength!, p.steps!);
  } catch (e) {
    const param = /^steps/.test((e as Error).message) ? 'steps' : 'block_length';
    throw new RequestError((e as Error).message, 'E_PARAM', 400, param);
  }
  const t = optNumber(b, 'temperature', 0, 100);
  if (t !== undefined) p.temperature = t;
  const c = optNumber(b, 'cfg_scale', 0, 100);
  if (c !== undefined) p.cfgScale = c;
  const seed = optInt(b, 'seed', 0, 0xffffffff);
  if (seed !== undefined) p.seed = seed;
  const rm = optChoice(b, 'remasking', ['low_confidence', 'random'] as const);
  if (rm) p.remasking = rm;
  const uc = optBoolOrChoice(b, 'use_cache', ['dual', 'ml-cache'] as const);
  if (uc !== undefined) p.useCache = uc;
  if (uc === 'ml-cache') Object.assign(p, parseCacheSchedule(b));
  return p;
}

/** edit_type: a known name or multi_view_<view>. */
export function optEditType(b: Body): EditType | undefined {
  const v = raw(b, 'edit_type');
  if (v === undefined) return undefined;
  if (!isEditType(v)) throw bad('edit_type', `must be one of ${EDIT_TYPES_HELP}`);
  return v;
}
