/**
 * Learning-rate schedules per optimiser step, as the original's
 * xllmx.util.lr_sched (and Hugging Face's *_with_warmup schedules): a linear
 * warm-up from 0 over `warmupSteps` (step 0 runs at lr 0), then either the
 * constant `lr` or a half-cycle cosine from `lr` down to `minLr` at the end
 * of training.
 *
 *   learningRate(step, schedule)   lr of optimiser step `step` (0-based)
 */
import { DimooError } from '../errors.js';

export type LrScheduleKind = 'cosine' | 'constant';

export interface LrSchedule {
  kind: LrScheduleKind;
  lr: number;
  minLr: number;
  warmupSteps: number;
  totalSteps: number;
}

export function checkSchedule(s: LrSchedule): void {
  const bad = (msg: string): never => {
    throw new DimooError(msg, 'E_PARAM');
  };
  if (s.kind !== 'cosine' && s.kind !== 'constant')
    bad(`--lr-schedule must be cosine or constant, got ${String(s.kind)}`);
  if (!Number.isFinite(s.lr) || s.lr < 0) bad(`--lr must be a finite number >= 0, got ${s.lr}`);
  if (!Number.isFinite(s.minLr) || s.minLr < 0 || s.minLr > s.lr) {
    bad(`--min-lr must be in [0, lr = ${s.lr}], got ${s.minLr}`);
  }
  if (!Number.isSafeInteger(s.warmupSteps) || s.warmupSteps < 0) {
    bad(`--warmup-steps must be an integer >= 0, got ${s.warmupSteps}`);
  }
  if (!Number.isSafeInteger(s.totalSteps) || s.totalSteps < 1) {
    bad(`the run must have at least one optimiser step, got ${s.totalSteps}`);
  }
}

export function learningRate(step: number, s: LrSchedule): number {
  if (step < s.warmupSteps) return (s.lr * step) / s.warmupSteps;
  if (s.kind === 'constant') return s.lr;
  const span = Math.max(1, s.totalSteps - s.warmupSteps);
  const progress = Math.min(1, (step - s.warmupSteps) / span);
  return s.minLr + (s.lr - s.minLr) * 0.5 * (1 + Math.cos(Math.PI * progress));
}
