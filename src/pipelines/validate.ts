/**
 * Parameter checks and defaults for every task, run before any compute so a
 * bad request fails fast with the parameter named.
 */
import { DimooError } from '../errors.js';
import { DEFAULT_ML_CACHE } from '../samplers/mlcache.js';
import type { ResolvedSampling } from './image-engine.js';
import type { TextCacheMode, TextMlCacheOptions } from './text-engine.js';
import type { ImageSamplingParams, TaskDefaults } from './types.js';
import type { GenerationDefaults } from '../checkpoint/generation-config.js';

/** The original scripts' defaults, in one place. */
export const DEFAULTS = Object.freeze({
  t2i: { width: 1024, height: 1024, timesteps: 64, cfgScale: 4.0, temperature: 1.0 },
  i2i: { timesteps: 64, cfgScale: 2.5, cfgImg: 4.0, temperature: 1.0, cropBudget: 512 },
  paint: { timesteps: 64, cfgScale: 4.0, temperature: 1.0, maskHRatio: 1.0, maskWRatio: 0.2 },
  // cropBudget: one image (inference_mmu.py); multiImageCropBudget: each of several (the original's VLMEvalKit wrapper).
  mmu: {
    steps: 128,
    genLength: 1024,
    blockLength: 256,
    temperature: 0,
    cfgScale: 0,
    cropBudget: 1024,
    multiImageCropBudget: 512,
  },
  seed: 0,
});

/** The original's defaults under a checkpoint's own (its generation_config.json `dimoo` section). */
export function resolveTaskDefaults(g: GenerationDefaults): TaskDefaults {
  return {
    t2i: {
      width: g.textToImage?.width ?? DEFAULTS.t2i.width,
      height: g.textToImage?.height ?? DEFAULTS.t2i.height,
    },
    i2i: { cropBudget: g.imageToImage?.cropBudget ?? DEFAULTS.i2i.cropBudget },
    mmu: {
      genLength: g.understanding?.genLength ?? DEFAULTS.mmu.genLength,
      blockLength: g.understanding?.blockLength ?? DEFAULTS.mmu.blockLength,
      steps: g.understanding?.steps ?? DEFAULTS.mmu.steps,
      cropBudget: g.understanding?.cropBudget ?? DEFAULTS.mmu.cropBudget,
    },
  };
}

/**
 * The seed rule of the CLI and the server (the library itself defaults to
 * DEFAULTS.seed, so a bare library call is repeatable): a seed that is given
 * is used as it is, 0 included (the original's "0 = random" is not kept: every
 * seed then names one image); with none, one is drawn here and reported with
 * the result, so every image can be made again. Drawn below 2^31 so it fits
 * every consumer's range (a signed 32-bit field included).
 */
export function drawSeed(): number {
  return Math.floor(Math.random() * 0x80000000);
}

/** Hard limits that keep a request from exhausting the machine. */
export const LIMITS = Object.freeze({
  maxSide: 4096,
  maxTimesteps: 1000,
  maxGenLength: 8192,
});

const E = 'E_PARAM';

/**
 * Understanding's block layout: the answer is decoded in whole blocks, each
 * taking the same share of the steps. Exported so a server can refuse a
 * request before queueing it, with the same words.
 */
export function checkBlockLayout(genLength: number, blockLength: number, steps: number): void {
  if (genLength % blockLength !== 0)
    throw new DimooError(
      `genLength (${genLength}) must be a multiple of blockLength (${blockLength})`,
      E,
    );
  if (steps % (genLength / blockLength) !== 0) {
    throw new DimooError(
      `steps (${steps}) must be a multiple of the number of blocks (${genLength / blockLength})`,
      E,
    );
  }
}

export function checkInt(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) {
    throw new DimooError(`${name} must be an integer in [${min}, ${max}], got ${String(v)}`, E);
  }
  return v;
}

export function checkNumber(name: string, v: unknown, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) {
    throw new DimooError(`${name} must be a number in [${min}, ${max}], got ${String(v)}`, E);
  }
  return v;
}

export function checkPrompt(name: string, v: unknown, required = true): string {
  if (v === undefined && !required) return '';
  if (typeof v !== 'string') throw new DimooError(`${name} must be a string`, E);
  if (required && v.trim() === '') throw new DimooError(`${name} must not be empty`, E);
  if (v.length > 20000)
    throw new DimooError(`${name} is too long (${v.length} characters; at most 20000)`, E);
  return v;
}

/** Image size in pixels: a multiple of the VQ scale, within limits. */
export function checkSize(name: string, v: unknown, scale: number): number {
  const n = checkInt(name, v, scale, LIMITS.maxSide);
  if (n % scale !== 0) throw new DimooError(`${name} must be a multiple of ${scale}, got ${n}`, E);
  return n;
}

export function resolveSampling(
  p: ImageSamplingParams,
  defaults: { timesteps: number; temperature: number },
): ResolvedSampling {
  const timesteps = checkInt(
    'timesteps',
    p.timesteps ?? defaults.timesteps,
    1,
    LIMITS.maxTimesteps,
  );
  const temperature = checkNumber('temperature', p.temperature ?? defaults.temperature, 0, 100);
  const seed = checkInt('seed', p.seed ?? DEFAULTS.seed, 0, Number.MAX_SAFE_INTEGER);
  const useCache = p.useCache ?? false;
  if (typeof useCache !== 'boolean') throw new DimooError('useCache must be true or false', E);
  const { cacheRatio, warmupRatio, refreshInterval } = resolveMlCacheSchedule(p);
  if (useCache && (cacheRatio >= 1 || warmupRatio >= 1)) {
    throw new DimooError(
      'with useCache, cacheRatio must be in [0, 1) and warmupRatio in [0, 1)',
      E,
    );
  }
  return { timesteps, temperature, seed, useCache, cacheRatio, warmupRatio, refreshInterval };
}

/** The ML-Cache schedule of a request (image or understanding), defaults filled in and checked. */
function resolveMlCacheSchedule(p: {
  cacheRatio?: unknown;
  warmupRatio?: unknown;
  refreshInterval?: unknown;
}): TextMlCacheOptions {
  const cacheRatio = checkNumber('cacheRatio', p.cacheRatio ?? DEFAULT_ML_CACHE.cacheRatio, 0, 1);
  const warmupRatio = checkNumber(
    'warmupRatio',
    p.warmupRatio ?? DEFAULT_ML_CACHE.warmupRatio,
    0,
    1,
  );
  const refreshInterval = checkInt(
    'refreshInterval',
    p.refreshInterval ?? DEFAULT_ML_CACHE.refreshInterval,
    1,
    1_000_000,
  );
  return { cacheRatio, warmupRatio, refreshInterval };
}

/** Understanding's cache mode and ML-Cache schedule (see text-engine.ts). */
export function resolveTextCache(
  p: { useCache?: unknown; cacheRatio?: unknown; warmupRatio?: unknown; refreshInterval?: unknown },
  sampling: { temperature: number; cfgScale: number },
): { cache: TextCacheMode; mlCache?: TextMlCacheOptions } {
  const u = p.useCache ?? false;
  const cache: TextCacheMode | undefined =
    u === true || u === 'dual'
      ? 'dual'
      : u === false
        ? 'none'
        : u === 'ml-cache'
          ? 'ml-cache'
          : undefined;
  if (!cache)
    throw new DimooError(
      `useCache must be true, false, 'dual' or 'ml-cache', got ${JSON.stringify(u)}`,
      E,
    );
  if (cache !== 'ml-cache') return { cache };
  if (sampling.temperature > 0 || sampling.cfgScale > 0) {
    throw new DimooError(
      "useCache 'ml-cache' supports greedy unguided decoding only (temperature 0, cfgScale 0)",
      E,
    );
  }
  const { cacheRatio, warmupRatio, refreshInterval } = resolveMlCacheSchedule(p);
  return { cache, mlCache: { cacheRatio, warmupRatio, refreshInterval } };
}
