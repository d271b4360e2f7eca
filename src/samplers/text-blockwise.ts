/**
 * LLaDA block-wise masked-diffusion text decoding
 * (generators/text_understanding_generator.py), as a state machine that a
 * pipeline drives:
 *
 *   const s = new BlockwiseTextSampler({ sequence, codeStart, genLength, blockLength, steps });
 *   while (!s.done) {
 *     const pos = s.positionsNeedingLogits();          // ascending sequence positions
 *     const rows = model(s.sequence(), pos);           // pos.length x V full-vocabulary logits
 *     const unc = s.cfgScale > 0 ? model(s.uncondSequence(), pos) : undefined;
 *     s.step(rows, unc);
 *   }
 *   s.answerIds();
 *
 * Semantics (per the original):
 * - The answer region [codeStart, codeStart + genLength) is split into
 *   genLength / blockLength blocks; `steps` must be a multiple of the block
 *   count and each block gets steps / numBlocks steps. The tokens to commit
 *   per step are numTransferTokens(masks in the block at its start, steps per block).
 * - Each step: x0 = argmax(logits + tau * gumbel) over the full vocabulary
 *   (tau = 0: argmax, ties -> first index); confidence = float64 softmax
 *   probability of x0 ('low_confidence') or a uniform draw ('random'); only
 *   masked positions before the end of the current block compete (others are
 *   -inf); the k most confident are committed (ties -> lower position).
 *   Steps whose k is 0 are skipped: they would commit nothing.
 * - CFG (cfgScale > 0): the unconditional sequence is the current one with
 *   every position that was not a mask initially (prompt, <answer>,
 *   </answer>) replaced by the mask id; guided = u + (s + 1) * (c - u),
 *   float32 (guidance.ts guideText).
 * - Early stop (option `earlyStop`, default ON): the original's check after
 *   each block references undefined names and would crash (README quirk 7).
 *   We implement its intent: after a block is finished, if a stop token
 *   (default </answer> 126355 and <|endoftext|> 126081) has been committed in
 *   the answer region and every answer position before it is decided,
 *   decoding stops; remaining positions stay masked. With earlyStop false,
 *   all blocks run, which is what the golden references record.
 *
 * Randomness (tau > 0 or 'random' remasking) comes from a Prng; per step we
 * use rng.fork(block, stepInBlock), so results depend only on the seed.
 */
import { DimooError } from '../errors.js';
import { guideText } from './guidance.js';
import type { Prng } from './prng.js';
import { numTransferTokens } from './schedule.js';

export type RemaskingStrategy = 'low_confidence' | 'random';

/** Default mask id and stop ids of DiMOO (special-tokens.ts has the full set). */
const DEFAULT_MASK_ID = 126336;
const DEFAULT_STOP_IDS: readonly number[] = [126355, 126081];

export interface BlockwiseTextOptions {
  /** Initial full sequence: prompt, <answer>, genLength masks, </answer>. */
  sequence: ArrayLike<number>;
  /** Index of the first answer position. */
  codeStart: number;
  genLength: number;
  blockLength: number;
  /** Total steps over all blocks; a positive multiple of genLength / blockLength. */
  steps: number;
  /** Gumbel temperature (default 0 = greedy). */
  temperature?: number;
  /** Classifier-free guidance scale (default 0 = off). */
  cfgScale?: number;
  /** Confidence measure (default 'low_confidence'). */
  remasking?: RemaskingStrategy;
  maskId?: number;
  /** Stop after a finished block once one of these is committed (default on). */
  earlyStop?: boolean;
  stopTokenIds?: readonly number[];
  /** Noise source; required when temperature > 0 or remasking is 'random'. */
  rng?: Prng;
}

export interface TextStepRecord {
  block: number;
  /** Step index within the block. */
  step: number;
  /** Tokens committed this step. */
  k: number;
  /** Committed positions, ascending. */
  selectedPositions: number[];
  /** Tokens committed there, in the same order. */
  selectedTokens: number[];
}

function checkInt(v: number, name: string, min: number): void {
  if (!Number.isSafeInteger(v) || v < min) {
    throw new DimooError(`${name} must be an integer >= ${min}, got ${v}`, 'E_PARAM');
  }
}

export class BlockwiseTextSampler {
  readonly codeStart: number;
  readonly genLength: number;
  readonly blockLength: number;
  readonly numBlocks: number;
  readonly stepsPerBlock: number;
  readonly temperature: number;
  readonly cfgScale: number;
  readonly remasking: RemaskingStrategy;
  readonly maskId: number;
  readonly earlyStop: boolean;
  readonly stopTokenIds: readonly number[];
  readonly records: TextStepRecord[] = [];
  private readonly x: Int32Array;
  /** 1 where the initial sequence was not a mask (the original's prompt_index). */
  private readonly promptIndex: Uint8Array;
  private readonly rng: Prng | undefined;
  private block = 0;
  private stepInBlock = 0;
  private transfer: number[] = [];
  private finished = false;
  private stoppedEarly = false;

  constructor(opts: BlockwiseTextOptions) {
    const {
      sequence,
      codeStart,
      genLength,
      blockLength,
      steps,
      temperature = 0,
      cfgScale = 0,
      remasking = 'low_confidence',
      maskId = DEFAULT_MASK_ID,
      earlyStop = true,
      stopTokenIds = DEFAULT_STOP_IDS,
      rng,
    } = opts;
    checkInt(genLength, 'genLength', 1);
    checkInt(blockLength, 'blockLength', 1);
    checkInt(steps, 'steps', 1);
    checkInt(codeStart, 'codeStart', 0);
    if (genLength % blockLength !== 0) {
      throw new DimooError(
        `genLength (${genLength}) must be a multiple of blockLength (${blockLength})`,
        'E_PARAM',
      );
    }
    const numBlocks = genLength / blockLength;
    if (steps % numBlocks !== 0) {
      throw new DimooError(
        `steps (${steps}) must be a multiple of the number of blocks (${numBlocks})`,
        'E_PARAM',
      );
    }
    if (codeStart + genLength > sequence.length) {
      throw new DimooError(
        `codeStart + genLength (${codeStart + genLength}) exceeds the sequence length ${sequence.length}`,
        'E_PARAM',
      );
    }
    if (!(temperature >= 0) || !Number.isFinite(temperature)) {
      throw new DimooError(
        `temperature must be a finite number >= 0, got ${temperature}`,
        'E_PARAM',
      );
    }
    if (!Number.isFinite(cfgScale) || cfgScale < 0) {
      throw new DimooError(`cfgScale must be a finite number >= 0, got ${cfgScale}`, 'E_PARAM');
    }
    if (remasking !== 'low_confidence' && remasking !== 'random') {
      throw new DimooError(
        `remasking must be 'low_confidence' or 'random', got ${String(remasking)}`,
        'E_PARAM',
      );
    }
    if ((temperature > 0 || remasking === 'random') && !rng) {
      throw new DimooError(
        'BlockwiseTextSampler needs rng when temperature > 0 or remasking is random',
        'E_PARAM',
      );
    }
    this.x = Int32Array.from(sequence);
    for (let i = 0; i < this.x.length; i++) {
      if (this.x[i] !== sequence[i] || this.x[i]! < 0) {
        throw new DimooError(
          `sequence[${i}] must be a non-negative token id, got ${sequence[i]}`,
          'E_PARAM',
        );
      }
    }
    this.promptIndex = Uint8Array.from(this.x, (t) => (t !== maskId ? 1 : 0));
    this.codeStart = codeStart;
    this.genLength = genLength;
    this.blockLength = blockLength;
    this.numBlocks = numBlocks;
    this.stepsPerBlock = steps / numBlocks;
    this.temperature = temperature;
    this.cfgScale = cfgScale;
    this.remasking = remasking;
    this.maskId = maskId;
    this.earlyStop = earlyStop;
    this.stopTokenIds = [...stopTokenIds];
    this.rng = rng;
    this.startBlock();
  }

  /** True when all blocks ran or decoding stopped early. */
  get done(): boolean {
    return this.finished;
  }

  /** True when the early-stop rule ended decoding before the last block. */
  get earlyStopped(): boolean {
    return this.stoppedEarly;
  }

  /** Current block index and step within it (the next step to run). */
  get position(): { block: number; step: number } {
    return { block: this.block, step: this.stepInBlock };
  }

  /** Copy of the current (conditional) sequence. */
  sequence(): Int32Array {
    return Int32Array.from(this.x);
  }

  /** The unconditional sequence for CFG: initially non-mask positions replaced by the mask id. */
  uncondSequence(): Int32Array {
    return this.x.map((t, i) => (this.promptIndex[i] ? this.maskId : t));
  }

  private blockEnd(): number {
    return this.codeStart + (this.block + 1) * this.blockLength;
  }

  /** Masked positions that compete this step: every mask before the end of the current block. */
  positionsNeedingLogits(): Int32Array {
    if (this.finished) return new Int32Array(0);
    const end = Math.min(this.blockEnd(), this.x.length);
    const out: number[] = [];
    for (let i = 0; i < end; i++) if (this.x[i] === this.maskId) out.push(i);
    return Int32Array.from(out);
  }

  private startBlock(): void {
    // Skip blocks (and, in advance(), steps) that would commit nothing.
    for (; this.block < this.numBlocks; this.block++) {
      const start = this.codeStart + this.block * this.blockLength;
      let m = 0;
      for (let i = start; i < start + this.blockLength; i++) if (this.x[i] === this.maskId) m++;
      this.transfer = numTransferTokens(m, this.stepsPerBlock);
      this.stepInBlock = 0;
      while (this.stepInBlock < this.stepsPerBlock && this.transfer[this.stepInBlock] === 0)
        this.stepInBlock++;
      if (this.stepInBlock < this.stepsPerBlock) return;
      if (this.checkEarlyStop()) return;
    }
    this.finished = true;
  }

  private advance(): void {
    this.stepInBlock++;
    while (this.stepInBlock < this.stepsPerBlock && this.transfer[this.stepInBlock] === 0)
      this.stepInBlock++;
    if (this.stepInBlock < this.stepsPerBlock) return;
    if (this.checkEarlyStop()) return;
    this.block++;
    this.startBlock();
  }

  /** After block `this.block` finished: stop if a stop token is committed with everything before it decided. */
  private checkEarlyStop(): boolean {
    if (!this.earlyStop) return false;
    const end = Math.min(this.blockEnd(), this.codeStart + this.genLength);
    for (let i = this.codeStart; i < end; i++) {
      const t = this.x[i]!;
      if (t === this.maskId) return false;
      if (this.stopTokenIds.includes(t)) {
        this.finished = true;
        this.stoppedEarly = this.block < this.numBlocks - 1;
        return true;
      }
    }
    return false;
  }

  /**
   * Run one step. `logits` holds one full-vocabulary row per position of
   * positionsNeedingLogits(), in that order; `uncondLogits` likewise for the
   * unconditional sequence, required iff cfgScale > 0 (guidance is applied
   * in place into `logits`).
   */
  step(logits: Float32Array, uncondLogits?: Float32Array): TextStepRecord {
    if (this.finished)
      throw new DimooError('BlockwiseTextSampler.step called after decoding finished', 'E_STATE');
    const positions = this.positionsNeedingLogits();
    const n = positions.length;
    if (n === 0 || logits.length === 0 || logits.length % n !== 0) {
      throw new DimooError(
        `logits must hold ${n} full rows, got ${logits.length} values`,
        'E_PARAM',
      );
    }
    const V = logits.length / n;
    if (this.cfgScale > 0) {
      if (!uncondLogits)
        throw new DimooError('uncondLogits is required when cfgScale > 0', 'E_PARAM');
      guideText(logits, uncondLogits, this.cfgScale, logits);
    } else if (uncondLogits) {
      throw new DimooError('uncondLogits given but cfgScale is 0', 'E_PARAM');
    }
    const rng = this.stepRng();
    const tau = this.temperature;
    const x0 = new Int32Array(n);
    const conf = new Float64Array(n);
    for (let r = 0; r < n; r++) {
      const base = r * V;
      let best = 0;
      if (tau > 0) {
        // Original: argmax(exp(l) / (-log u)^tau) in float64, i.e. argmax(l + tau * gumbel).
        let bestV = -Infinity;
        for (let j = 0; j < V; j++) {
          const v = logits[base + j]! + tau * rng!.gumbel();
          if (v > bestV) {
            bestV = v;
            best = j;
          }
        }
      } else {
        let bestV = logits[base]!;
        for (let j = 1; j < V; j++) {
          const v = logits[base + j]!;
          if (v > bestV) {
            bestV = v;
            best = j;
          }
        }
      }
      x0[r] = best;
      if (this.remasking === 'low_confidence') {
        // Greedy: the argmax's logit is the row maximum; no separate pass.
        let m = tau > 0 ? -Infinity : logits[base + best]!;
        if (tau > 0) for (let j = 0; j < V; j++) if (logits[base + j]! > m) m = logits[base + j]!;
        let sum = 0;
        for (let j = 0; j < V; j++) sum += Math.exp(logits[base + j]! - m);
        conf[r] = Math.exp(logits[base + best]! - m) / sum;
      } else {
        conf[r] = rng!.uniform();
      }
    }
    return this.commit(positions, x0, conf);
  }

  /**
   * Whether steps can take each row's argmax and its softmax probability
   * instead of logits (stepArgmax): greedy and unguided, so nothing else of
   * the logits is looked at. Lets the model reduce the rows itself.
   */
  get acceptsArgmax(): boolean {
    return this.temperature === 0 && this.cfgScale === 0;
  }

  /**
   * Run one step from each row's argmax over the full vocabulary (first index
   * of the maximum) and that token's softmax probability, for the rows of
   * positionsNeedingLogits() in order. Same result as step() on the logits
   * those values come from; only when acceptsArgmax.
   */
  stepArgmax(argmax: ArrayLike<number>, prob: ArrayLike<number>): TextStepRecord {
    if (this.finished)
      throw new DimooError(
        'BlockwiseTextSampler.stepArgmax called after decoding finished',
        'E_STATE',
      );
    if (!this.acceptsArgmax) {
      throw new DimooError(
        'stepArgmax needs temperature 0 and cfgScale 0 (use step with logits)',
        'E_STATE',
      );
    }
    const positions = this.positionsNeedingLogits();
    const n = positions.length;
    if (argmax.length !== n || prob.length !== n) {
      throw new DimooError(
        `stepArgmax needs ${n} rows, got ${argmax.length} argmax values and ${prob.length} probabilities`,
        'E_PARAM',
      );
    }
    const rng = this.stepRng();
    const x0 = Int32Array.from(argmax);
    const conf = new Float64Array(n);
    for (let r = 0; r < n; r++)
      conf[r] = this.remasking === 'low_confidence' ? prob[r]! : rng!.uniform();
    return this.commit(positions, x0, conf);
  }

  private stepRng(): Prng | undefined {
    return this.temperature > 0 || this.remasking === 'random'
      ? this.rng!.fork(this.block, this.stepInBlock)
      : undefined;
  }

  /** Commits the k most confident rows' tokens (ties -> lower position) and advances. */
  private commit(positions: Int32Array, x0: Int32Array, conf: Float64Array): TextStepRecord {
    const n = positions.length;
    const k = this.transfer[this.stepInBlock]!;
    const order = Array.from({ length: n }, (_, i) => i);
    order.sort((a, b) => conf[b]! - conf[a]! || a - b);
    const chosen = order.slice(0, Math.min(k, n)).sort((a, b) => a - b);
    const rec: TextStepRecord = {
      block: this.block,
      step: this.stepInBlock,
      k,
      selectedPositions: chosen.map((r) => positions[r]!),
      selectedTokens: chosen.map((r) => x0[r]!),
    };
    for (const r of chosen) this.x[positions[r]!] = x0[r]!;
    this.records.push(rec);
    this.advance();
    return rec;
  }

  /** The raw answer region x[codeStart, codeStart + genLength) (masks remain if stopped early). */
  generatedIds(): number[] {
    return Array.from(this.x.subarray(this.codeStart, this.codeStart + this.genLength));
  }

  /**
   * Answer tokens for decoding: the answer region up to (not including) the
   * first stop token; after an early stop this excludes the undecided tail.
   */
  answerIds(): number[] {
    const out: number[] = [];
    for (const t of this.generatedIds()) {
      if (this.stopTokenIds.includes(t) || t === this.maskId) break;
      out.push(t);
    }
    return out;
  }
}
