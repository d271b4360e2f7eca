/**
 * The training loop: which records form each batch, how micro-batches are
 * weighted, the learning rate of each step, and stepping the engine. The
 * engine (forward + loss + backward + clip + AdamW as ONNX graphs) is
 * `engine.ts`; this file only drives it, so it is deterministic given
 * (seed, step): resuming at step s replays exactly what an uninterrupted run
 * does from s on.
 *
 * Data order: epoch e visits the records in file order (`shuffle: false`) or
 * in a permutation drawn from stream (seed, 1, e); consecutive runs of
 * `batchSize` records form micro-batches (an incomplete last one is dropped,
 * as the original's loader does), `gradAccum` micro-batches form one
 * optimiser step, and epochs follow one another without a gap. Each use of
 * an item record draws its masks from stream (seed, 2, e, record index), so
 * an epoch re-masks every item; processed records are used as they are.
 * With `groupByLength` the epoch's order is then regrouped (groupByLength,
 * stream (seed, 3, e)) so each batch holds records of similar length.
 *
 * Loss normalisation (the original's train_one_epoch): each micro-batch's
 * loss is the mean cross entropy over its labelled positions, divided by
 * `gradAccum` before backward; the step's reported loss is the mean of its
 * micro-batch losses.
 *
 *   new TrainLoop(engine, data, config, { startStep })
 *   trainer.totalSteps / trainer.step / trainer.epochOf(step)
 *   await trainer.trainStep()                       one optimiser step -> StepReport
 *   await trainer.run({ signal, onStep })           until done or aborted (between steps)
 */
import { DimooError } from '../errors.js';
import type { SpecialTokens } from '../checkpoint/special-tokens.js';
import { Prng } from '../samplers/prng.js';
import {
  collate,
  labelCount,
  recordLayout,
  recordLength,
  type Batch,
  type TrainRecord,
} from './data.js';
import { ANSWER_BLOCK, I2I_DROPS, prngChoices, type I2iDrop } from './recipe.js';
import { checkSchedule, learningRate, type LrScheduleKind } from './schedule.js';

export interface AdamWSettings {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Max total gradient norm; null = no clipping. */
  clipGrad: number | null;
}

/** What the loop needs from a training engine. */
export interface StepEngine {
  /** Adds weight * d(sum of CE over labelled positions)/dθ to the gradients. */
  accumulate(batch: Batch, weight: number): Promise<{ lossSum: number; labelCount: number }>;
  /** Total gradient norm before clipping; clips, updates, zeroes the gradients. */
  step(opt: AdamWSettings): Promise<{ gradNorm: number }>;
}

export interface TrainerConfig {
  batchSize: number;
  gradAccum: number;
  /** Optimiser steps; when absent, `epochs` passes over the data. */
  steps?: number;
  epochs?: number;
  lr: number;
  minLr: number;
  lrSchedule: LrScheduleKind;
  warmupSteps: number;
  weightDecay: number;
  clipGrad: number | null;
  beta1: number;
  beta2: number;
  eps: number;
  seed: number;
  shuffle: boolean;
  /**
   * Batches of records of similar length (less padding; Hugging Face's
   * `group_by_length`): see groupByLength.
   */
  groupByLength: boolean;
  maskPadding: boolean;
  /**
   * Length of an understanding record's answer + masked padding block. The
   * original pads to 1024; a model that only ever answers in a few words
   * (the shapes world) trains with a short block and answers with the same
   * length at inference (the checkpoint's generation_config.json says so).
   */
  answerBlock: number;
  /** The condition drop of image-to-image records (recipe.ts I2iDrop; the original's: 'original'). */
  i2iDrop: I2iDrop;
  /** Share of answer pictures masked whole (recipe.ts LayoutOptions.imageFullMask; the original's: 0). */
  imageFullMask: number;
  /**
   * Which embedding/head rows train (full fine-tuning): 'all'; 'auto', the
   * rows whose embedding is not zero; or ranges "start:end,..." (see
   * vocab-rows.ts: the same training, only the rows kept cost time).
   */
  vocabRows: string;
}

/** The original's defaults (xllmx finetune solver + its AdamW betas). */
export const TRAIN_DEFAULTS: Readonly<TrainerConfig> = Object.freeze({
  batchSize: 1,
  gradAccum: 1,
  epochs: 1,
  lr: 2e-5,
  minLr: 0,
  lrSchedule: 'cosine',
  warmupSteps: 0,
  weightDecay: 0,
  clipGrad: 4.0,
  beta1: 0.9,
  beta2: 0.95,
  eps: 1e-8,
  seed: 0,
  shuffle: true,
  groupByLength: false,
  maskPadding: false,
  answerBlock: ANSWER_BLOCK,
  i2iDrop: 'original',
  imageFullMask: 0,
  vocabRows: 'all',
});

export interface StepReport {
  /** 1-based number of the optimiser step just taken. */
  step: number;
  totalSteps: number;
  /** Fractional epoch reached after this step. */
  epoch: number;
  loss: number;
  gradNorm: number;
  lr: number;
  /** Real (unpadded) tokens in the step's micro-batches. */
  tokens: number;
  labels: number;
  seconds: number;
  tokensPerS: number;
}

export interface TrainerData {
  records: readonly TrainRecord[];
  tokens: SpecialTokens;
}

export interface RunOptions {
  signal?: AbortSignal;
  onStep?: (r: StepReport) => void | Promise<void>;
}

const STREAM_SHUFFLE = 1;
const STREAM_MASKS = 2;
const STREAM_LENGTH_GROUPS = 3;

/** Batches per group sorted by length (Hugging Face's Trainer uses 50 too). */
export const LENGTH_GROUP_BATCHES = 50;

/**
 * Reorders an epoch's visiting order so that each run of `batchSize` records
 * has similar lengths, padding less: the whole batches of `order` are cut
 * into groups of LENGTH_GROUP_BATCHES batches, each group is sorted by length
 * (longest first, stable) and cut into batches, and the batches of the epoch
 * are then shuffled so that kinds of record (which differ in length) stay
 * mixed from step to step. The records after the last whole batch stay last
 * (dropped, as without grouping). Pure: the same inputs give the same order.
 */
export function groupByLength(
  order: readonly number[],
  length: (record: number) => number,
  batchSize: number,
  rng: Prng,
): number[] {
  const whole = Math.floor(order.length / batchSize) * batchSize;
  const group = LENGTH_GROUP_BATCHES * batchSize;
  const batches: number[][] = [];
  for (let s = 0; s < whole; s += group) {
    const sorted = order.slice(s, Math.min(s + group, whole)).sort((a, b) => length(b) - length(a));
    for (let k = 0; k < sorted.length; k += batchSize) batches.push(sorted.slice(k, k + batchSize));
  }
  return [...rng.shuffle(batches).flat(), ...order.slice(whole)];
}

function positiveInt(v: number, flag: string): void {
  if (!Number.isSafeInteger(v) || v < 1) {
    throw new DimooError(`${flag} must be a positive integer, got ${v}`, 'E_PARAM');
  }
}

export function checkTrainerConfig(c: TrainerConfig): void {
  positiveInt(c.batchSize, '--batch-size');
  positiveInt(c.gradAccum, '--grad-accum');
  if (c.steps !== undefined) positiveInt(c.steps, '--steps');
  if (c.epochs !== undefined && (!Number.isFinite(c.epochs) || c.epochs <= 0)) {
    throw new DimooError(`--epochs must be a number > 0, got ${c.epochs}`, 'E_PARAM');
  }
  const num = (v: number, flag: string, lo: number, hi: number, loOpen = false) => {
    if (!Number.isFinite(v) || v < lo || v > hi || (loOpen && v === lo)) {
      throw new DimooError(
        `${flag} must be in ${loOpen ? '(' : '['}${lo}, ${hi}], got ${v}`,
        'E_PARAM',
      );
    }
  };
  num(c.weightDecay, '--weight-decay', 0, Infinity);
  num(c.beta1, 'beta1', 0, 1);
  num(c.beta2, 'beta2', 0, 1);
  num(c.eps, 'eps', 0, Infinity, true);
  if (c.clipGrad !== null) num(c.clipGrad, '--clip-grad', 0, Infinity, true);
  positiveInt(c.answerBlock, '--answer-block');
  if (!I2I_DROPS.includes(c.i2iDrop))
    throw new DimooError(
      `--i2i-drop must be one of ${I2I_DROPS.join(', ')}, got ${String(c.i2iDrop)}`,
      'E_PARAM',
    );
  num(c.imageFullMask, '--image-full-mask', 0, 1);
  if (!Number.isSafeInteger(c.seed) || c.seed < 0) {
    throw new DimooError(`--seed must be a non-negative integer, got ${c.seed}`, 'E_PARAM');
  }
}

/** Checks the settings against the data size: batches per epoch and total steps. */
export function planRun(
  records: number,
  config: TrainerConfig,
  startStep = 0,
): { batchesPerEpoch: number; totalSteps: number } {
  checkTrainerConfig(config);
  const batchesPerEpoch = Math.floor(records / config.batchSize);
  if (batchesPerEpoch === 0) {
    throw new DimooError(
      `--batch-size ${config.batchSize} needs at least that many records; the data has ${records}`,
      'E_PARAM',
    );
  }
  const totalSteps =
    config.steps ?? Math.floor(((config.epochs ?? 1) * batchesPerEpoch) / config.gradAccum);
  if (totalSteps < 1) {
    throw new DimooError(
      `${config.epochs ?? 1} epoch(s) of ${batchesPerEpoch} batch(es) make no step of --grad-accum ${config.gradAccum} micro-batches; raise --epochs or give --steps`,
      'E_PARAM',
    );
  }
  checkSchedule({
    kind: config.lrSchedule,
    lr: config.lr,
    minLr: config.minLr,
    warmupSteps: config.warmupSteps,
    totalSteps,
  });
  if (!Number.isSafeInteger(startStep) || startStep < 0 || startStep > totalSteps) {
    throw new DimooError(
      `cannot start at step ${startStep} of a ${totalSteps}-step run`,
      'E_PARAM',
    );
  }
  return { batchesPerEpoch, totalSteps };
}

export class TrainLoop {
  readonly totalSteps: number;
  readonly batchesPerEpoch: number;
  private current: number;
  private readonly orders = new Map<number, number[]>();

  constructor(
    private readonly engine: StepEngine,
    private readonly data: TrainerData,
    readonly config: TrainerConfig,
    opts: { startStep?: number } = {},
  ) {
    const plan = planRun(data.records.length, config, opts.startStep ?? 0);
    this.batchesPerEpoch = plan.batchesPerEpoch;
    this.totalSteps = plan.totalSteps;
    this.current = opts.startStep ?? 0;
  }

  /** Optimiser steps taken so far. */
  get step(): number {
    return this.current;
  }

  get done(): boolean {
    return this.current >= this.totalSteps;
  }

  private schedule() {
    const c = this.config;
    return {
      kind: c.lrSchedule,
      lr: c.lr,
      minLr: c.minLr,
      warmupSteps: c.warmupSteps,
      totalSteps: this.totalSteps,
    };
  }

  /** Learning rate of optimiser step `step` (0-based). */
  lrAt(step: number): number {
    return learningRate(step, this.schedule());
  }

  /** Fractional epoch after `steps` optimiser steps. */
  epochOf(steps: number): number {
    return (steps * this.config.gradAccum) / this.batchesPerEpoch;
  }

  /** Record indices of epoch `e`, in visiting order. */
  private order(e: number): number[] {
    let o = this.orders.get(e);
    if (!o) {
      o = Array.from({ length: this.data.records.length }, (_, i) => i);
      if (this.config.shuffle) new Prng(this.config.seed, STREAM_SHUFFLE, e).shuffle(o);
      if (this.config.groupByLength) {
        const lengths = this.recordLengths();
        o = groupByLength(
          o,
          (i) => lengths[i]!,
          this.config.batchSize,
          new Prng(this.config.seed, STREAM_LENGTH_GROUPS, e),
        );
      }
      this.orders.clear();
      this.orders.set(e, o);
    }
    return o;
  }

  private lengths: number[] | undefined;

  /** Each record's sequence length with its condition kept (the longest its layout can be). */
  private recordLengths(): number[] {
    this.lengths ??= this.data.records.map((r) =>
      recordLength(r, { answerBlock: this.config.answerBlock, i2iDrop: this.config.i2iDrop }),
    );
    return this.lengths;
  }

  /** Micro-batch number `m` (counted from the start of training) as a padded batch. */
  microBatch(m: number): { batch: Batch; tokens: number } {
    const e = Math.floor(m / this.batchesPerEpoch);
    const j = m % this.batchesPerEpoch;
    const order = this.order(e);
    const b = this.config.batchSize;
    const layouts = [];
    for (let r = 0; r < b; r++) {
      const idx = order[j * b + r]!;
      const choices = prngChoices(new Prng(this.config.seed, STREAM_MASKS, e, idx));
      layouts.push(
        recordLayout(this.data.records[idx]!, choices, this.data.tokens, {
          answerBlock: this.config.answerBlock,
          i2iDrop: this.config.i2iDrop,
          imageFullMask: this.config.imageFullMask,
        }),
      );
    }
    const tokens = layouts.reduce((s, l) => s + l.inputIds.length, 0);
    return { batch: collate(layouts, { maskPadding: this.config.maskPadding }), tokens };
  }

  /** One optimiser step: gradAccum micro-batches, then clip + AdamW. */
  async trainStep(): Promise<StepReport> {
    if (this.done)
      throw new DimooError(`training is complete (${this.totalSteps} steps)`, 'E_STATE');
    const c = this.config;
    const t0 = performance.now();
    let lossMean = 0;
    let tokens = 0;
    let labels = 0;
    for (let k = 0; k < c.gradAccum; k++) {
      const { batch, tokens: t } = this.microBatch(this.current * c.gradAccum + k);
      const n = labelCount(batch);
      const r = await this.engine.accumulate(batch, 1 / (c.gradAccum * n));
      lossMean += r.lossSum / r.labelCount / c.gradAccum;
      tokens += t;
      labels += n;
    }
    const lr = this.lrAt(this.current);
    const { gradNorm } = await this.engine.step({
      lr,
      beta1: c.beta1,
      beta2: c.beta2,
      eps: c.eps,
      weightDecay: c.weightDecay,
      clipGrad: c.clipGrad,
    });
    this.current++;
    const seconds = (performance.now() - t0) / 1000;
    return {
      step: this.current,
      totalSteps: this.totalSteps,
      epoch: this.epochOf(this.current),
      loss: lossMean,
      gradNorm,
      lr,
      tokens,
      labels,
      seconds,
      tokensPerS: seconds > 0 ? tokens / seconds : 0,
    };
  }

  /** Steps until done; an abort is honoured between steps (the current one finishes). */
  async run(opts: RunOptions = {}): Promise<{ reports: StepReport[]; aborted: boolean }> {
    const reports: StepReport[] = [];
    while (!this.done) {
      if (opts.signal?.aborted) return { reports, aborted: true };
      const r = await this.trainStep();
      reports.push(r);
      await opts.onStep?.(r);
    }
    return { reports, aborted: false };
  }
}
