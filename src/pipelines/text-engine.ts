/**
 * Drives LLaDA block-wise text decoding (image understanding) with the model.
 *
 * Without cache every step runs the whole sequence, as the original does.
 * With `useCache` (our addition; the original ships none for understanding):
 * a full pass at the first step of every block stores every position's K/V,
 * and the other steps of the block recompute only the current block's
 * positions, attending to the cached K/V of the prompt, the image, earlier
 * blocks and the still-masked later blocks (a Fast-dLLM-style dual cache).
 * Outputs can then differ from the uncached ones; see docs/understanding.md.
 */
import { ModelStream, type TextRows } from '../models/ml-cache.js';
import type { Transformer } from '../models/transformer.js';
import { BlockwiseTextSampler, type BlockwiseTextOptions } from '../samplers/text-blockwise.js';
import type { RunOptions } from './types.js';

export interface TextJob {
  sampler: BlockwiseTextOptions;
  useCache: boolean;
  /** Decodes committed ids for progress events (optional). */
  decode?: (ids: number[]) => Promise<string>;
}

export interface TextJobResult {
  sampler: BlockwiseTextSampler;
  stepMs: number[];
}

export async function runTextJob(model: Transformer, job: TextJob, opts: RunOptions = {}): Promise<TextJobResult> {
  const s = new BlockwiseTextSampler(job.sampler);
  const cond = new ModelStream(model, job.useCache);
  const uncond = s.cfgScale > 0 ? new ModelStream(model, job.useCache) : null;
  const stepMs: number[] = [];
  let cachedBlock = -1;
  const total = job.sampler.steps;
  while (!s.done) {
    opts.signal?.throwIfAborted();
    const t0 = performance.now();
    const { block } = s.position;
    const rows = s.positionsNeedingLogits();
    // Greedy and unguided (the default): the model reduces each row to its argmax and
    // probability, so no full-vocabulary logits are copied out or scanned in JS.
    const opt = { argmax: s.acceptsArgmax };
    let cond0: TextRows;
    let uncond0: TextRows | undefined;
    if (job.useCache && cachedBlock === block) {
      const start = s.codeStart + block * s.blockLength;
      const blockPositions = Array.from({ length: s.blockLength }, (_, i) => start + i);
      cond0 = await cond.partialText(s.sequence(), blockPositions, rows, opt);
      if (uncond) uncond0 = await uncond.partialText(s.uncondSequence(), blockPositions, rows, opt);
    } else {
      cond.reset();
      uncond?.reset();
      cond0 = await cond.fullText(s.sequence(), rows, opt);
      if (uncond) uncond0 = await uncond.fullText(s.uncondSequence(), rows, opt);
      cachedBlock = block;
    }
    const rec = opt.argmax ? s.stepArgmax(cond0.argmax!, cond0.argmaxProb!) : s.step(cond0.logits!, uncond0?.logits);
    const ms = performance.now() - t0;
    stepMs.push(ms);
    if (opts.onProgress) {
      const text = job.decode ? await job.decode(s.answerIds()) : undefined;
      opts.onProgress({ task: 'understand', step: stepMs.length, total, block: rec.block, text, ms });
    }
  }
  return { sampler: s, stepMs };
}
