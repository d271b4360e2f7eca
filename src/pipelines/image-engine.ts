/**
 * The MaskGIT loop shared by every image task (text-to-image, image-to-image,
 * inpainting, outpainting, retouching): they differ only in the conditional
 * prefix, the unconditional branches, the guidance formula and which grid
 * cells start masked.
 *
 * Sequence layout (as the original): cond = prefix + [<answer>, <IMAGE>] +
 * rows (each followed by end-of-line) + [</IMAGE>, </answer>]; code_start =
 * prefix.length + 2; every unconditional branch is its own prefix + the same
 * tail x[code_start-2:], rebuilt from the current grid at each step.
 */
import { DimooError } from '../errors.js';
import { ModelStream } from '../models/model-stream.js';
import type { SpecialTokens } from '../checkpoint/special-tokens.js';
import type { Transformer } from '../models/transformer.js';
import { MaskGitState, MASKED } from '../samplers/maskgit.js';
import { recomputePositions } from '../samplers/mlcache.js';
import { Prng } from '../samplers/prng.js';
import { cacheRefreshSchedule } from '../samplers/schedule.js';
import { answerImage, branchSequence, gridCellPositions, gridCellTokens } from './prompts.js';
import type { ProgressEvent, RunOptions, TaskName } from './types.js';
import { firstNonFinite, NonFiniteError } from '../checkpoint/nonfinite.js';

export interface ResolvedSampling {
  timesteps: number;
  temperature: number;
  seed: number;
  useCache: boolean;
  cacheRatio: number;
  warmupRatio: number;
  refreshInterval: number;
}

export interface ImageJob {
  task: TaskName;
  /** x[:code_start-2] of the conditional sequence. */
  condPrefix: number[];
  /** Prefixes of the unconditional branches (empty: no guidance). */
  uncondPrefixes: number[][];
  /** Combines [cond, ...uncond] image logits (same row order) into guided logits. */
  guide?: (cond: Float32Array, unconds: Float32Array[]) => Float32Array;
  /** Initial grid, row-major: a code, or MASKED (-1) for cells to generate. */
  cells: Int32Array;
  gridH: number;
  gridW: number;
  sampling: ResolvedSampling;
  /**
   * Called with each step's guided logits before the sampler uses them (for
   * benchmarks and diagnostics; its time counts in stepMs unless subtracted).
   */
  inspect?: (info: StepInspection) => void | Promise<void>;
}

export interface StepInspection {
  step: number;
  /** Whether this step was a full pass (no ML-Cache reuse). */
  full: boolean;
  /** Per branch: the token sequence and the positions of the masked cells (logit rows). */
  sequences: number[][];
  rows: number[][];
  /** Guided logits [rows, V] (or the cond logits without guidance). */
  guided: Float32Array;
}

export interface ImageJobResult {
  codes: Int32Array;
  promptIds: number[];
  codeStart: number;
  stepMs: number[];
  state: MaskGitState;
}

export interface EngineDeps {
  model: Transformer;
  special: SpecialTokens;
}

/** Token ids of the tail x[code_start-2:] for a grid of codes (MASKED = mask token). */
function imageTail(
  cells: ArrayLike<number>,
  gridH: number,
  gridW: number,
  sp: SpecialTokens,
): number[] {
  return answerImage(gridH, gridW, sp, gridCellTokens(cells, sp));
}

export async function runImageJob(
  deps: EngineDeps,
  job: ImageJob,
  opts: RunOptions = {},
): Promise<ImageJobResult> {
  const { model, special } = deps;
  const s = job.sampling;
  const V = model.imageVocabSize;
  const state = new MaskGitState({
    cells: job.cells,
    timesteps: s.timesteps,
    temperature: s.temperature,
    rng: s.temperature > 0 ? new Prng(s.seed) : undefined,
    codebookSize: V,
  });
  const prefixes = [job.condPrefix, ...(job.guide ? job.uncondPrefixes : [])];
  const streams = prefixes.map(() => new ModelStream(model, s.useCache, { reuseOutput: true }));
  const refresh = cacheRefreshSchedule(s.timesteps, {
    useCache: s.useCache,
    warmupRatio: s.warmupRatio,
    refreshInterval: s.refreshInterval,
  });
  const compute: (Int32Array | null)[] = prefixes.map(() => null);
  // Position of each cell inside the tail (after <answer><IMAGE>), computed once.
  const cellInTail = gridCellPositions(2, job.gridH, job.gridW);
  const codeStart = job.condPrefix.length + 2;
  const promptIds = branchSequence(
    job.condPrefix,
    imageTail(job.cells, job.gridH, job.gridW, special),
  );
  const stepMs: number[] = [];

  while (!state.done) {
    opts.signal?.throwIfAborted();
    const t0 = performance.now();
    const step = state.stepIndex;
    const cells = state.maskedCells();
    const tail = imageTail(state.codes(), job.gridH, job.gridW, special);
    const full = refresh[step]!;
    if (s.useCache && step > 0 && full) streams.forEach((st) => st.reset());
    const branchLogits: Float32Array[] = [];
    const seqs: number[][] = [];
    const rowLists: number[][] = [];
    for (let b = 0; b < prefixes.length; b++) {
      const prefix = prefixes[b]!;
      const seq = branchSequence(prefix, tail);
      const rows = Array.from(cells, (cell) => prefix.length + cellInTail[cell]!);
      seqs.push(seq);
      rowLists.push(rows);
      const st = streams[b]!;
      // K/V, row maxima and stale logits are only needed when the next step is a partial one.
      const nextPartial = s.useCache && step < s.timesteps - 1 && !refresh[step + 1]!;
      const res =
        full || !st.hasCache
          ? await st.full(seq, rows, { keep: nextPartial })
          : await st.partial(seq, compute[b]!, rows);
      branchLogits.push(res.imageLogits);
      if (nextPartial) compute[b] = recomputePositions(res.rowMax!, s.cacheRatio);
    }
    const guided = job.guide
      ? job.guide(branchLogits[0]!, branchLogits.slice(1))
      : branchLogits[0]!;
    if (guided.length !== cells.length * V)
      throw new Error('internal: guided logits have the wrong size');
    // Sampling NaN logits would still produce codes (and an image): stop, naming the step.
    const bad = firstNonFinite(guided);
    if (bad >= 0) {
      throw new NonFiniteError(
        `non-finite image logits (${guided[bad]}) at sampling step ${step + 1} of ${s.timesteps}, image cell ${cells[Math.floor(bad / V)]}`,
      );
    }
    if (job.inspect)
      await job.inspect({
        step,
        full: full || !s.useCache,
        sequences: seqs,
        rows: rowLists,
        guided,
      });
    state.step(guided);
    const ms = performance.now() - t0;
    stepMs.push(ms);
    if (opts.onProgress) {
      const ev: ProgressEvent = {
        task: job.task,
        step: step + 1,
        total: s.timesteps,
        masked: state.maskedCells().length,
        gridH: job.gridH,
        gridW: job.gridW,
        ms,
      };
      if (opts.preview) ev.previewCodes = state.codes();
      opts.onProgress(ev);
    }
  }
  const codes = state.codes();
  for (let i = 0; i < codes.length; i++) {
    if (codes[i] === MASKED)
      throw new DimooError('internal: decoding ended with masked cells', 'E_INTERNAL');
  }
  return { codes, promptIds, codeStart, stepMs, state };
}
