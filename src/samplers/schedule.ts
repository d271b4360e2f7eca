/**
 * Step schedules of the DiMOO samplers, reproducing the original's float32
 * arithmetic exactly.
 *
 *   cosineSchedule(t)                      float32 cos(pi/2 * t), as torch computes it
 *   maskRatio(step, T)                     cosineSchedule((step + 1) / T)
 *   keepMaskedCount(n, step, T)            image tokens kept masked after `step`
 *   numTransferTokens(m, steps)            text tokens committed per step of one block
 *   cacheRefreshSchedule(T, opts)          ML-Cache full-refresh flag per step
 *   isCacheRefreshStep(step, T, warmupRatio, refreshInterval, useCache?)
 *
 * Float32 details: the original evaluates `torch.cos(0.5 * math.pi * t)` on
 * a float32 tensor `t = float32((step+1)/T)`; the Python scalar is cast to
 * float32 by the CPU kernel, so the argument is f32(f32(pi/2) * t), and the
 * cosine is SLEEF's (see f32.ts). keep_n is `floor(f32(n * cos))`, at least
 * 1, and 0 at the last step.
 */
import { DimooError } from '../errors.js';
import { cosF32, f32 } from './f32.js';

const HALF_PI_F32 = f32(0.5 * Math.PI);

function checkInt(v: number, name: string, min: number): void {
  if (!Number.isSafeInteger(v) || v < min) {
    throw new DimooError(`${name} must be an integer >= ${min}, got ${v}`, 'E_PARAM');
  }
}

/** MaskGIT cosine schedule m(t) = cos(pi/2 * t) in float32 (t is rounded to float32 first). */
export function cosineSchedule(t: number): number {
  return cosF32(f32(HALF_PI_F32 * f32(t)));
}

/** Fraction of the initially masked image tokens that stay masked after step `step` of `timesteps`. */
export function maskRatio(step: number, timesteps: number): number {
  return cosineSchedule((step + 1) / timesteps);
}

/**
 * keep_n of the image generators: how many of the `initialMasked` tokens stay
 * masked after step `step` (0-based) of `timesteps`:
 * max(1, floor(n * cos(pi/2 * (step+1)/T))), and 0 at the last step.
 * (The MaskGIT step then clamps it to masked-now - 1; see maskgit.ts.)
 */
export function keepMaskedCount(initialMasked: number, step: number, timesteps: number): number {
  checkInt(initialMasked, 'initialMasked', 0);
  checkInt(timesteps, 'timesteps', 1);
  if (!Number.isSafeInteger(step) || step < 0 || step >= timesteps) {
    throw new DimooError(`step must be an integer in [0, ${timesteps}), got ${step}`, 'E_PARAM');
  }
  if (step === timesteps - 1) return 0;
  return Math.max(1, Math.floor(f32(initialMasked * maskRatio(step, timesteps))));
}

/**
 * LLaDA's get_num_transfer_tokens: `maskCount` tokens spread over `steps`
 * steps, floor(m / steps) each, the first (m mod steps) steps one more.
 */
export function numTransferTokens(maskCount: number, steps: number): number[] {
  checkInt(maskCount, 'maskCount', 0);
  checkInt(steps, 'steps', 1);
  const base = Math.floor(maskCount / steps);
  const rem = maskCount % steps;
  return Array.from({ length: steps }, (_, i) => base + (i < rem ? 1 : 0));
}

export interface CacheScheduleOptions {
  /** ML-Cache on; when false every step is a full step. Default true. */
  useCache?: boolean;
  /** Fraction of the steps that are always full (int(T * warmupRatio)). Original default 0.3. */
  warmupRatio?: number;
  /** After warm-up, a full refresh every this many steps. Original default 5. */
  refreshInterval?: number;
}

function checkCacheParams(warmupRatio: number, refreshInterval: number): void {
  if (!Number.isFinite(warmupRatio) || warmupRatio < 0 || warmupRatio > 1) {
    throw new DimooError(`warmupRatio must be in [0, 1], got ${warmupRatio}`, 'E_PARAM');
  }
  checkInt(refreshInterval, 'refreshInterval', 1);
}

/**
 * Whether step `step` of `timesteps` is a full (cache-refresh) step:
 * warmup = int(T * warmupRatio); full iff step <= warmup or
 * (step - warmup) % refreshInterval == 0; always full without the cache.
 */
export function isCacheRefreshStep(
  step: number,
  timesteps: number,
  warmupRatio: number,
  refreshInterval: number,
  useCache = true,
): boolean {
  checkInt(timesteps, 'timesteps', 1);
  checkCacheParams(warmupRatio, refreshInterval);
  if (!useCache) return true;
  // Python's int() truncates; T * ratio is a double product as in the original.
  const warmup = Math.trunc(timesteps * warmupRatio);
  return step <= warmup || (step - warmup) % refreshInterval === 0;
}

/** Full-refresh flag for every step (true = run the whole sequence through the model). */
export function cacheRefreshSchedule(
  timesteps: number,
  opts: CacheScheduleOptions = {},
): boolean[] {
  const { useCache = true, warmupRatio = 0.3, refreshInterval = 5 } = opts;
  checkInt(timesteps, 'timesteps', 1);
  return Array.from({ length: timesteps }, (_, s) =>
    isCacheRefreshStep(s, timesteps, warmupRatio, refreshInterval, useCache),
  );
}
