/**
 * MaskGIT parallel decoding of image tokens, as DiMOO's image generators do it
 * (generators/image_generation_generator.py, image_to_image_generator.py and
 * utils/generation_utils.py).
 *
 * One step, given guided logits over the image codebook (rows = the currently
 * masked cells, in ascending cell order; width V = codebook size):
 *   1. sample a code per row from softmax(logits / tau), which the original
 *      does by Gumbel-max, argmax(logits / tau + g); we draw the same
 *      distribution by inverse CDF (one uniform and one exp pass per row
 *      instead of 8192 Gumbel draws: 5x cheaper, and torch's noise cannot be
 *      matched anyway); tau = 0 is plain argmax (ties -> first index, like
 *      torch.argmax);
 *   2. prob = float32 softmax probability of the sampled code;
 *   3. confidence = log(max(prob, 1e-20)) + tau * g' (fresh Gumbel noise);
 *   4. k = clamp(keepN, 0, rows - 1); the rows whose confidence is strictly
 *      below the k-th smallest confidence (0-based) are masked again, so
 *      exactly k rows when there is no tie at the cut (README quirks 3, 4),
 *      and every step decodes at least one token.
 * keepN comes from schedule.keepMaskedCount(initial masked count, step, T).
 *
 * Randomness: with tau > 0 the noise comes from a Prng (prng.ts); it cannot
 * match torch's streams. With tau = 0 the original still draws noise and
 * multiplies it by 0; we skip the draws, which changes nothing.
 *
 * API:
 *   maskGitStep(logits, rows, vocab, keepN, { temperature, rng }) -> MaskGitStepResult
 *   new MaskGitState({ cells, timesteps, temperature?, rng?, codebookSize? })
 *     .maskedCells()  cells to feed to the model this step (ascending)
 *     .keepN()        schedule value for the current step
 *     .step(logits)   apply one step; returns a MaskGitStepRecord
 *     .codes()        current grid, MASKED (-1) where still masked
 *     .done / .stepIndex / .initialMasked / .records
 */
import { DimooError } from '../errors.js';
import type { Prng } from './prng.js';
import { keepMaskedCount } from './schedule.js';

const f32 = Math.fround;

/** Grid value of a cell that is still masked. */
export const MASKED = -1;

export interface MaskGitStepOptions {
  /** Sampling temperature tau >= 0 (0 = greedy). Default 0. */
  temperature?: number;
  /** Noise source, required when temperature > 0. */
  rng?: Prng;
}

export interface MaskGitStepResult {
  /** Sampled code per row (0..V-1). */
  codes: Int32Array;
  /** Float32 softmax probability of each sampled code. */
  probs: Float32Array;
  /** Confidence used for re-masking (log prob + tau * gumbel), float32. */
  confidence: Float32Array;
  /** 1 where the row stays masked for the next step. */
  remask: Uint8Array;
  /** k after clamping to [0, rows - 1]. */
  k: number;
  /** Number of rows re-masked (= k unless confidences tie at the cut). */
  remaskCount: number;
}

function checkTemperature(t: number): void {
  if (!(t >= 0) || !Number.isFinite(t)) {
    throw new DimooError(`temperature must be a finite number >= 0, got ${t}`, 'E_PARAM');
  }
}

/** First index of the maximum of row r (NaN counts as maximal, as in torch.argmax). */
function argmaxRow(logits: Float32Array, base: number, vocab: number): number {
  let best = 0;
  let bestV = logits[base]!;
  if (Number.isNaN(bestV)) return 0;
  for (let j = 1; j < vocab; j++) {
    const v = logits[base + j]!;
    if (v > bestV) {
      bestV = v;
      best = j;
    } else if (Number.isNaN(v)) {
      return j;
    }
  }
  return best;
}

/** Largest value of a row (-Infinity for an all -Infinity row). */
function rowMax(logits: Float32Array, base: number, vocab: number): number {
  let m = -Infinity;
  for (let j = 0; j < vocab; j++) {
    const v = logits[base + j]!;
    if (v > m) m = v;
  }
  return m;
}

/** Sum of exp(x - m) over a row, in double (max-subtracted, so it cannot overflow). */
function expSum(logits: Float32Array, base: number, vocab: number, m: number): number {
  let sum = 0;
  for (let j = 0; j < vocab; j++) sum += Math.exp(logits[base + j]! - m);
  return sum;
}

/** Float32 softmax probability of column `c` of a row (max-subtracted, summed in double). */
export function softmaxProbF32(
  logits: Float32Array,
  base: number,
  vocab: number,
  c: number,
): number {
  const m = rowMax(logits, base, vocab);
  return f32(Math.exp(logits[base + c]! - m) / expSum(logits, base, vocab, m));
}

/**
 * Draw a code from softmax(row / tau) by inverse CDF, using `weights` as
 * scratch for the unnormalised probabilities exp((l - m) / tau). At tau = 1
 * those are the softmax's own terms, so the sampled code's probability comes
 * with it (`prob`); otherwise the caller computes it at temperature 1.
 */
function sampleRow(
  logits: Float32Array,
  base: number,
  vocab: number,
  tau: number,
  u: number,
  weights: Float64Array,
): { code: number; prob?: number } {
  const m = rowMax(logits, base, vocab);
  const inv = 1 / tau; // x * 1 is exact: at tau = 1 these are exp(l - m)
  let sum = 0;
  for (let j = 0; j < vocab; j++) {
    const w = Math.exp((logits[base + j]! - m) * inv);
    weights[j] = w;
    sum += w;
  }
  // Not a probability distribution (NaN or all -Infinity logits): fall back to argmax.
  if (!(sum > 0) || !Number.isFinite(sum)) return { code: argmaxRow(logits, base, vocab) };
  const target = u * sum;
  let acc = 0;
  let code = 0;
  for (let j = 0; j < vocab; j++) {
    const w = weights[j]!;
    if (w === 0) continue;
    acc += w;
    code = j;
    if (acc > target) break;
  }
  // (Without a break, u * sum rounded up to sum: `code` is the last one with any weight.)
  return tau === 1 ? { code, prob: f32(weights[code]! / sum) } : { code };
}

/**
 * One MaskGIT step over `rows` rows of `vocab` guided logits (flat, row-major).
 * `keepN` is the scheduled number of tokens to keep masked (before clamping).
 */
export function maskGitStep(
  logits: Float32Array,
  rows: number,
  vocab: number,
  keepN: number,
  opts: MaskGitStepOptions = {},
): MaskGitStepResult {
  const tau = opts.temperature ?? 0;
  checkTemperature(tau);
  if (!Number.isSafeInteger(rows) || rows < 0 || !Number.isSafeInteger(vocab) || vocab < 1) {
    throw new DimooError(
      `rows and vocab must be integers (rows >= 0, vocab >= 1), got ${rows}, ${vocab}`,
      'E_PARAM',
    );
  }
  if (logits.length !== rows * vocab) {
    throw new DimooError(
      `logits has ${logits.length} values, expected rows*vocab = ${rows}*${vocab}`,
      'E_PARAM',
    );
  }
  if (!Number.isSafeInteger(keepN) || keepN < 0) {
    throw new DimooError(`keepN must be an integer >= 0, got ${keepN}`, 'E_PARAM');
  }
  const rng = opts.rng;
  if (tau > 0 && !rng)
    throw new DimooError('maskGitStep needs rng when temperature > 0', 'E_PARAM');

  const codes = new Int32Array(rows);
  const probs = new Float32Array(rows);
  const confidence = new Float32Array(rows);
  const weights = tau > 0 ? new Float64Array(vocab) : undefined;
  for (let r = 0; r < rows; r++) {
    const base = r * vocab;
    let c: number;
    let p: number;
    if (tau === 0) {
      c = argmaxRow(logits, base, vocab);
      // The argmax's value is the row maximum, so its weight is exp(0) = 1.
      p = f32(1 / expSum(logits, base, vocab, logits[base + c]!));
    } else {
      const s = sampleRow(logits, base, vocab, tau, rng!.uniform(), weights!);
      c = s.code;
      p = s.prob ?? softmaxProbF32(logits, base, vocab, c);
    }
    codes[r] = c;
    probs[r] = p;
    let conf = f32(Math.log(Math.max(p, 1e-20)));
    if (tau > 0) conf = f32(conf + f32(tau * rng!.gumbel()));
    confidence[r] = conf;
  }

  const remask = new Uint8Array(rows);
  let k = 0;
  let remaskCount = 0;
  if (rows > 0) {
    k = Math.min(keepN, rows - 1);
    const cut = Float32Array.from(confidence).sort()[k]!;
    for (let r = 0; r < rows; r++) {
      if (confidence[r]! < cut) {
        remask[r] = 1;
        remaskCount++;
      }
    }
  }
  return { codes, probs, confidence, remask, k, remaskCount };
}

export interface MaskGitStateOptions {
  /** Initial grid, row-major: a code 0..codebookSize-1, or MASKED (-1) for cells to generate. */
  cells: ArrayLike<number>;
  /** Number of steps T (the original's `timesteps`). */
  timesteps: number;
  /** Sampling temperature (default 0 = greedy). */
  temperature?: number;
  /** Root noise stream; step s draws from rng.fork(s). Required when temperature > 0. */
  rng?: Prng;
  /** Codebook size V (default 8192); logits rows must have this width. */
  codebookSize?: number;
}

export interface MaskGitStepRecord {
  step: number;
  /** Masked cells fed to the model this step (ascending). */
  cells: Int32Array;
  /** = cells.length. */
  maskedBefore: number;
  sampledCodes: Int32Array;
  sampledProbs: Float32Array;
  /** keepMaskedCount for this step, before clamping. */
  keepNSchedule: number;
  /** k after clamping to masked - 1. */
  remaskK: number;
  /** Cells masked again after this step (ascending). */
  remasked: Int32Array;
}

/** Tracks one image grid through MaskGIT decoding; the pipeline supplies guided logits. */
export class MaskGitState {
  readonly timesteps: number;
  readonly temperature: number;
  readonly codebookSize: number;
  /** Number of masked cells at the start (the original's vq_len). */
  readonly initialMasked: number;
  readonly records: MaskGitStepRecord[] = [];
  private readonly grid: Int32Array;
  private readonly rng: Prng | undefined;
  private stepIdx = 0;
  private maskedCount: number;

  constructor(opts: MaskGitStateOptions) {
    const { cells, timesteps, temperature = 0, rng, codebookSize = 8192 } = opts;
    if (!Number.isSafeInteger(timesteps) || timesteps < 1) {
      throw new DimooError(`timesteps must be an integer >= 1, got ${timesteps}`, 'E_PARAM');
    }
    if (!Number.isSafeInteger(codebookSize) || codebookSize < 1) {
      throw new DimooError(`codebookSize must be an integer >= 1, got ${codebookSize}`, 'E_PARAM');
    }
    checkTemperature(temperature);
    if (temperature > 0 && !rng)
      throw new DimooError('MaskGitState needs rng when temperature > 0', 'E_PARAM');
    this.grid = Int32Array.from(cells);
    let masked = 0;
    for (let i = 0; i < this.grid.length; i++) {
      const v = this.grid[i]!;
      if (v === MASKED) masked++;
      else if (!(v >= 0 && v < codebookSize) || v !== cells[i]) {
        throw new DimooError(
          `cells[${i}] must be a code in [0, ${codebookSize}) or ${MASKED}, got ${cells[i]}`,
          'E_PARAM',
        );
      }
    }
    this.timesteps = timesteps;
    this.temperature = temperature;
    this.codebookSize = codebookSize;
    this.rng = rng;
    this.initialMasked = masked;
    this.maskedCount = masked;
  }

  /** A grid of n cells, all masked (plain text-to-image). */
  static allMasked(n: number, opts: Omit<MaskGitStateOptions, 'cells'>): MaskGitState {
    return new MaskGitState({ ...opts, cells: new Int32Array(n).fill(MASKED) });
  }

  /** Index of the next step (0-based); equals the number of steps taken. */
  get stepIndex(): number {
    return this.stepIdx;
  }

  /** True after `timesteps` steps or once nothing is masked (the original breaks out then). */
  get done(): boolean {
    return this.stepIdx >= this.timesteps || this.maskedCount === 0;
  }

  /** Cells still masked, ascending: the rows `step` expects, in this order. */
  maskedCells(): Int32Array {
    const out = new Int32Array(this.maskedCount);
    let n = 0;
    for (let i = 0; i < this.grid.length; i++) if (this.grid[i] === MASKED) out[n++] = i;
    return out;
  }

  /** keep_n of the current step, before clamping. */
  keepN(): number {
    return keepMaskedCount(this.initialMasked, this.stepIdx, this.timesteps);
  }

  /**
   * Apply one step. `guidedLogits` holds one row of `codebookSize` values per
   * masked cell, in maskedCells() order.
   */
  step(guidedLogits: Float32Array): MaskGitStepRecord {
    if (this.done)
      throw new DimooError('MaskGitState.step called after decoding finished', 'E_STATE');
    const cells = this.maskedCells();
    const V = this.codebookSize;
    if (guidedLogits.length !== cells.length * V) {
      throw new DimooError(
        `guidedLogits must have ${cells.length} rows x ${V} codes = ${cells.length * V} values, got ${guidedLogits.length}`,
        'E_PARAM',
      );
    }
    const keepNSchedule = this.keepN();
    const res = maskGitStep(guidedLogits, cells.length, V, keepNSchedule, {
      temperature: this.temperature,
      rng: this.temperature > 0 ? this.rng!.fork(this.stepIdx) : undefined,
    });
    const remasked: number[] = [];
    for (let r = 0; r < cells.length; r++) {
      if (res.remask[r]) remasked.push(cells[r]!);
      else this.grid[cells[r]!] = res.codes[r]!;
    }
    this.maskedCount = remasked.length;
    const rec: MaskGitStepRecord = {
      step: this.stepIdx,
      cells,
      maskedBefore: cells.length,
      sampledCodes: res.codes,
      sampledProbs: res.probs,
      keepNSchedule,
      remaskK: res.k,
      remasked: Int32Array.from(remasked),
    };
    this.records.push(rec);
    this.stepIdx++;
    return rec;
  }

  /** Copy of the grid: codes, MASKED where still masked. */
  codes(): Int32Array {
    return Int32Array.from(this.grid);
  }
}
