/**
 * Drives LLaDA block-wise text decoding (image understanding) with the model.
 *
 * Without cache every step runs the whole sequence, as the original does.
 * Our additions (the original ships no cache for understanding); outputs can
 * differ from the uncached ones, see docs/tasks/understanding.md:
 * - 'dual' (Fast-dLLM-style dual cache): a full pass at the first step of
 *   every block stores every position's K/V; the other steps of the block
 *   recompute only the block's positions, attending to the cached K/V of the
 *   prompt, the image, earlier blocks and the still-masked later blocks.
 * - 'ml-cache': the dual cache, and inside a block the ML-Cache schedule
 *   (warm-up, then a whole-block refresh every `refreshInterval` steps); the
 *   steps between recompute only the least confident masked positions and the
 *   ones committed at the previous step (samplers/mlcache.ts
 *   textRecomputePositions); the other masked positions reuse their cached
 *   prediction. Greedy unguided decoding only (it caches argmax + probability).
 */
import { ModelStream, type TextRows } from '../models/model-stream.js';
import type { Transformer } from '../models/transformer.js';
import { textRecomputePositions } from '../samplers/mlcache.js';
import { isCacheRefreshStep } from '../samplers/schedule.js';
import { BlockwiseTextSampler, type BlockwiseTextOptions } from '../samplers/text-blockwise.js';
import type { RunOptions } from './types.js';
import { firstNonFinite, NonFiniteError } from '../checkpoint/nonfinite.js';

export type TextCacheMode = 'none' | 'dual' | 'ml-cache';

export interface TextMlCacheOptions {
  cacheRatio: number;
  warmupRatio: number;
  refreshInterval: number;
}

export interface TextJob {
  sampler: BlockwiseTextOptions;
  cache: TextCacheMode;
  /** Schedule of the 'ml-cache' mode (steps counted within each block). */
  mlCache?: TextMlCacheOptions;
  /** Decodes committed ids for progress events (optional). */
  decode?: (ids: number[]) => Promise<string>;
}

export interface TextJobResult {
  sampler: BlockwiseTextSampler;
  stepMs: number[];
  /** Positions run through the model per step (cond branch). */
  computedRows: number[];
}

export async function runTextJob(
  model: Transformer,
  job: TextJob,
  opts: RunOptions = {},
): Promise<TextJobResult> {
  const s = new BlockwiseTextSampler(job.sampler);
  const caching = job.cache !== 'none';
  const ml = job.cache === 'ml-cache' ? job.mlCache : undefined;
  if (job.cache === 'ml-cache' && (!ml || !s.acceptsArgmax)) {
    throw new Error(
      'runTextJob: the ml-cache mode needs its schedule and greedy unguided decoding',
    );
  }
  const cond = new ModelStream(model, caching);
  const uncond = s.cfgScale > 0 ? new ModelStream(model, caching) : null;
  // Greedy and unguided (the default): the model reduces each row to its argmax and
  // probability, so no full-vocabulary logits are copied out or scanned in JS.
  const opt = { argmax: s.acceptsArgmax };
  // Last computed prediction of each masked position (argmax mode).
  const known = new Map<number, { id: number; prob: number }>();
  let committed: number[] = [];
  const stepMs: number[] = [];
  const computedRows: number[] = [];
  let cachedBlock = -1;
  const total = job.sampler.steps;
  while (!s.done) {
    opts.signal?.throwIfAborted();
    const t0 = performance.now();
    const { block, step } = s.position;
    const rows = s.positionsNeedingLogits();
    const seq = s.sequence(); // a copy: taken once per step
    let need: ArrayLike<number> = rows;
    let cond0: TextRows;
    let uncond0: TextRows | undefined;
    if (caching && cachedBlock === block) {
      const start = s.codeStart + block * s.blockLength;
      let compute: ArrayLike<number> = Array.from({ length: s.blockLength }, (_, i) => start + i);
      if (ml && !isCacheRefreshStep(step, s.stepsPerBlock, ml.warmupRatio, ml.refreshInterval)) {
        const conf = Float32Array.from(rows, (p) => known.get(p)!.prob);
        compute = textRecomputePositions(rows, conf, ml.cacheRatio, committed);
        const inCompute = new Set(Array.from(compute));
        need = rows.filter((p) => inCompute.has(p));
      }
      computedRows.push(compute.length);
      cond0 = await cond.partialText(seq, compute, need, opt);
      if (uncond) uncond0 = await uncond.partialText(s.uncondSequence(), compute, need, opt);
    } else {
      cond.reset();
      uncond?.reset();
      computedRows.push(seq.length);
      cond0 = await cond.fullText(seq, rows, opt);
      if (uncond) uncond0 = await uncond.fullText(s.uncondSequence(), rows, opt);
      cachedBlock = block;
    }
    // NaN logits would still be sampled into an answer: stop, naming the step.
    const probe = opt.argmax
      ? [cond0.argmaxProb!]
      : [cond0.logits!, ...(uncond0 ? [uncond0.logits!] : [])];
    for (const a of probe) {
      if (firstNonFinite(a) >= 0) {
        throw new NonFiniteError(
          `non-finite logits at understanding step ${stepMs.length + 1} of ${total}`,
        );
      }
    }
    let rec;
    if (opt.argmax) {
      for (let i = 0; i < need.length; i++)
        known.set(need[i]!, { id: cond0.argmax![i]!, prob: cond0.argmaxProb![i]! });
      const argmax = Int32Array.from(rows, (p) => known.get(p)!.id);
      const prob = Float64Array.from(rows, (p) => known.get(p)!.prob);
      rec = s.stepArgmax(argmax, prob);
      for (const p of rec.selectedPositions) known.delete(p);
      committed = rec.selectedPositions;
    } else {
      rec = s.step(cond0.logits!, uncond0?.logits);
    }
    const ms = performance.now() - t0;
    stepMs.push(ms);
    if (opts.onProgress) {
      const text = job.decode ? await job.decode(s.answerIds()) : undefined;
      opts.onProgress({
        task: 'understand',
        step: stepMs.length,
        total,
        block: rec.block,
        text,
        ms,
      });
    }
  }
  return { sampler: s, stepMs, computedRows };
}
