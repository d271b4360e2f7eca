/**
 * The training engine: gradients and optimiser steps for one checkpoint, on
 * ONNX Runtime (CPU or WebGPU). The recipe around it (data, masking, batching,
 * LR schedule, gradient accumulation, saving) lives in the Trainer.
 *
 * Contract:
 *  - `accumulate(batch, weight)` runs forward + cross entropy + backward of one
 *    micro-batch (one ONNX graph, see graph/train-graph.ts) and adds
 *    weight * d(sum of CE over the labelled tokens)/d(theta) into the gradient
 *    accumulators. With weight = 1 / (labelled tokens of the whole optimiser
 *    step) the accumulators hold the gradient of the original's mean loss.
 *    Returns the (unweighted) CE sum and the number of labelled tokens.
 *  - `step(opt)`: total L2 norm of the accumulated gradients (before clipping,
 *    what `clip_grad_norm_` returns), clipping when `clipGrad` is a number,
 *    one AdamW update (PyTorch's arithmetic, decoupled weight decay), then
 *    zeroes the accumulators. `lr` is given per step (the schedule is the
 *    caller's).
 *  - `gradients()`: the accumulators (for inspection and tests).
 *  - `parameters()`: the trainable tensors by name, float32 (full fine-tuning:
 *    checkpoint names; LoRA: PEFT keys
 *    `base_model.model.<module path>.lora_A.weight` / `.lora_B.weight`).
 *  - `exportState()` / `importState()`: parameters, Adam moments and the step
 *    count, enough to continue bit-identically (taken between steps: the
 *    accumulators must be empty).
 *
 * Batches are right-padded with id 0 (labels -100). By default the padding is
 * attended to, as the original trains; `maskPadding` adds a key mask from
 * `attentionMask` (1 = real token).
 *
 * Full fine-tuning keeps every weight as a float32 graph input (the
 * checkpoint's bf16 values upcast exactly); LoRA keeps the base frozen inside
 * the graph (external data from the checkpoint, or MatMulNBits blocks of a
 * `dimoo quantize` folder: QLoRA) and trains only the adapters.
 */
import * as ort from 'onnxruntime-node';
import { DimooError } from '../errors.js';
import { openCheckpoint } from '../checkpoint/folder.js';
import type { LladaConfig } from '../checkpoint/config.js';
import { createSession, type Device } from '../models/device.js';
import type { QuantizedCheckpoint } from '../checkpoint/quantized.js';
import { ropeInvFreq, ropeTables } from '../graph/rope.js';
import { readTensorFloat32, numel } from '../checkpoint/safetensors.js';
import { weightSources } from '../models/weight-sources.js';
import { adamwScalars, adamwStep, sumOfSquares } from './optimizer.js';
import {
  buildTrainGraph,
  LORA_TARGETS,
  MASKED_SCORE,
  TRAIN_INPUTS,
  TRAIN_OUTPUTS,
  type LoraTarget,
  type TrainableTensor,
} from '../graph/train-graph.js';
import { Prng } from '../samplers/prng.js';
import {
  compactTable,
  compactVocab,
  expandTable,
  logitOffset,
  toCompactId,
  type CompactVocab,
  type VocabRanges,
} from './vocab-rows.js';

export interface TrainBatch {
  /** [batchSize * seqLen] token ids, right-padded with id 0. */
  inputIds: Int32Array;
  /** Same shape; -100 = not learned. */
  labels: Int32Array;
  batchSize: number;
  seqLen: number;
  /** 1 = real token. Used only when the engine was created with maskPadding. */
  attentionMask?: Uint8Array;
}

export interface AdamWConfig {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** max_norm of clip_grad_norm_, or null for no clipping. */
  clipGrad: number | null;
}

export interface LoraSpec {
  r: number;
  alpha: number;
  /** Subset of q, k, v, attn_out, ff, up, down. */
  targets: string[];
}

export interface TrainEngineOptions {
  /** Checkpoint folder; a quantized folder (dimoo quantize) needs `lora` (QLoRA). */
  model: string;
  device?: Device;
  threads?: number;
  lora?: LoraSpec;
  /** Mask attention to padding (default false: padding attended to, as the original). */
  maskPadding?: boolean;
  /** Seed of the LoRA A initialisation (default 0). */
  seed?: number;
  /**
   * Recompute each block's activations in the backward pass (gradient checkpointing):
   * the memory of one block's activations instead of every block's, for ~1/3 more
   * compute. Default: on for quantized bases (QLoRA), off otherwise.
   */
  recompute?: boolean;
  /**
   * Full fine-tuning of only these embedding/head rows ([start, end) ranges):
   * the rows left out must be zero in the embedding and equal in the head, and
   * then training is the same as with every row (training/vocab-rows.ts), at the
   * cost of the rows kept. Batches may use only these ids.
   */
  vocabRows?: VocabRanges;
}

export interface TensorState {
  name: string;
  shape: number[];
  param: Float32Array;
  m: Float32Array;
  v: Float32Array;
}

/** Everything an optimiser step depends on. */
export interface TrainEngineState {
  /** Optimiser steps taken. */
  step: number;
  tensors: TensorState[];
}

export interface TrainEngine {
  readonly config: LladaConfig;
  /** The LoRA spec in use (undefined: full fine-tuning). */
  readonly lora?: LoraSpec;
  accumulate(batch: TrainBatch, weight: number): Promise<{ lossSum: number; labelCount: number }>;
  step(opt: AdamWConfig): Promise<{ gradNorm: number }>;
  parameters(): Map<string, { shape: number[]; data: Float32Array }>;
  /** Values the optimiser updates (with vocabulary rows: the kept rows, not the full tables). */
  readonly trainedCount: number;
  /** The accumulated gradients since the last step, by trainable name (empty: none yet). Copies. */
  gradients(): Map<string, Float32Array>;
  /** Optimiser steps taken so far. */
  readonly stepCount: number;
  exportState(): TrainEngineState;
  importState(state: TrainEngineState): void;
  dispose(): Promise<void>;
}

const E = 'E_TRAIN';

/** PEFT's key names for the adapters of a checkpoint linear. */
export function peftKeys(linearWeight: string): { a: string; b: string } {
  const module = linearWeight.replace(/\.weight$/, '');
  return {
    a: `base_model.model.${module}.lora_A.weight`,
    b: `base_model.model.${module}.lora_B.weight`,
  };
}

function checkLora(l: LoraSpec): LoraTarget[] {
  if (!Number.isSafeInteger(l.r) || l.r <= 0)
    throw new DimooError(`LoRA rank must be a positive integer, got ${l.r}`, E);
  if (!Number.isFinite(l.alpha) || l.alpha <= 0)
    throw new DimooError(`LoRA alpha must be a positive number, got ${l.alpha}`, E);
  if (l.targets.length === 0) throw new DimooError('LoRA needs at least one target linear', E);
  for (const t of l.targets) {
    if (!(t in LORA_TARGETS))
      throw new DimooError(
        `unknown LoRA target "${t}" (known: ${Object.keys(LORA_TARGETS).join(', ')})`,
        E,
      );
  }
  return [...new Set(l.targets)] as LoraTarget[];
}

/**
 * PEFT's default init: A ~ U(-1/sqrt(in), 1/sqrt(in)) (kaiming_uniform with
 * a = sqrt(5)), B = 0, so the adapted model equals the base exactly.
 */
function loraInit(t: TrainableTensor, seed: number, index: number): Float32Array {
  const out = new Float32Array(numel(t.shape));
  if (!t.name.endsWith('.lora_A.weight')) return out;
  const bound = 1 / Math.sqrt(t.shape[1]!);
  const rng = new Prng(seed, index);
  for (let i = 0; i < out.length; i++) out[i] = (rng.uniform() * 2 - 1) * bound;
  return out;
}

function checkBatch(b: TrainBatch, c: LladaConfig, maskPadding: boolean): void {
  const { batchSize: B, seqLen: L } = b;
  if (!Number.isSafeInteger(B) || B <= 0)
    throw new DimooError(`batch: batchSize must be a positive integer, got ${B}`, E);
  if (!Number.isSafeInteger(L) || L <= 0)
    throw new DimooError(`batch: seqLen must be a positive integer, got ${L}`, E);
  if (b.inputIds.length !== B * L)
    throw new DimooError(
      `batch: inputIds has ${b.inputIds.length} ids, expected batchSize x seqLen = ${B * L}`,
      E,
    );
  if (b.labels.length !== B * L)
    throw new DimooError(`batch: labels has ${b.labels.length} entries, expected ${B * L}`, E);
  const V = c.embeddingSize;
  for (let i = 0; i < B * L; i++) {
    const id = b.inputIds[i]!;
    if (id < 0 || id >= V)
      throw new DimooError(`batch: inputIds[${i}] = ${id} is outside the vocabulary [0, ${V})`, E);
    const l = b.labels[i]!;
    if (l !== -100 && (l < 0 || l >= V))
      throw new DimooError(
        `batch: labels[${i}] = ${l} is neither -100 nor a token id in [0, ${V})`,
        E,
      );
  }
  if (maskPadding) {
    if (!b.attentionMask || b.attentionMask.length !== B * L)
      throw new DimooError(
        `batch: maskPadding needs attentionMask with batchSize x seqLen = ${B * L} entries`,
        E,
      );
    for (let r = 0; r < B; r++) {
      if (!b.attentionMask.subarray(r * L, (r + 1) * L).some((x) => x === 1))
        throw new DimooError(
          `batch: row ${r} has no real token in attentionMask (nothing to attend to)`,
          E,
        );
    }
  }
}

function i64(values: ArrayLike<number>, dims: number[]): ort.Tensor {
  const a = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) a[i] = BigInt(values[i]!);
  return new ort.Tensor('int64', a, dims);
}

const f32 = (data: Float32Array, dims: readonly number[]): ort.Tensor =>
  new ort.Tensor('float32', data, [...dims]);
const scalar = (x: number): ort.Tensor => new ort.Tensor('float32', Float32Array.of(x), []);

class OrtTrainEngine implements TrainEngine {
  private step_ = 0;
  private readonly params = new Map<string, Float32Array>();
  private m = new Map<string, Float32Array>();
  private v = new Map<string, Float32Array>();
  /**
   * Gradient accumulators. They, the parameters and the Adam moments are
   * written in place by the graphs (pre-allocated outputs aliasing the inputs:
   * each output element depends only on the same element of its input), so a
   * step allocates nothing and never holds two copies of a tensor (fresh
   * outputs were four new float32 copies of the trainable values per step).
   */
  private acc = new Map<string, Float32Array>();
  /** Gradients were accumulated since the last optimiser step. */
  private pending = false;
  private readonly invFreq: Float32Array;

  constructor(
    readonly config: LladaConfig,
    private readonly trainable: TrainableTensor[],
    private readonly train: ort.InferenceSession,
    private readonly maskPadding: boolean,
    /** Labelled rows per graph run (bounds the [rows, vocabulary] logits). */
    private readonly maxLabelRows: number,
    init: (t: TrainableTensor, index: number) => Float32Array,
    readonly lora?: LoraSpec,
    /** Compact vocabulary: the embedding and head tensors hold only its rows. */
    private readonly vocab?: { cv: CompactVocab; embedding: string; head: string },
  ) {
    this.invFreq = ropeInvFreq(config.headDim, config.ropeTheta);
    trainable.forEach((t, i) => {
      this.params.set(t.name, init(t, i));
      this.m.set(t.name, new Float32Array(numel(t.shape)));
      this.v.set(t.name, new Float32Array(numel(t.shape)));
    });
  }

  get stepCount(): number {
    return this.step_;
  }

  get trainedCount(): number {
    return this.trainable.reduce((n, t) => n + numel(t.shape), 0);
  }

  async accumulate(
    batch: TrainBatch,
    weight: number,
  ): Promise<{ lossSum: number; labelCount: number }> {
    checkBatch(batch, this.config, this.maskPadding);
    if (!Number.isFinite(weight))
      throw new DimooError(`accumulate: weight must be a finite number, got ${weight}`, E);
    const { batchSize: B, seqLen: L } = batch;
    const cv = this.vocab?.cv;
    let inputIds: ArrayLike<number> = batch.inputIds;
    if (cv) {
      const ids = new Int32Array(B * L);
      for (let i = 0; i < B * L; i++)
        ids[i] = toCompactId(cv, batch.inputIds[i]!, `batch: inputIds[${i}]`);
      inputIds = ids;
    }
    const rows: number[] = [];
    const targets: number[] = [];
    for (let i = 0; i < B * L; i++) {
      const l = batch.labels[i]!;
      if (l !== -100) {
        rows.push(i);
        targets.push(cv ? toCompactId(cv, l, `batch: labels[${i}]`) : l);
      }
    }
    if (rows.length === 0) return { lossSum: 0, labelCount: 0 };
    const { cos, sin } = ropeTables(
      Array.from({ length: L }, (_, i) => i),
      this.invFreq,
    );
    const hd = this.config.headDim;
    const feeds: Record<string, ort.Tensor> = {
      [TRAIN_INPUTS.ids]: i64(inputIds, [B, L]),
      [TRAIN_INPUTS.cos]: f32(cos, [L, hd]),
      [TRAIN_INPUTS.sin]: f32(sin, [L, hd]),
      [TRAIN_INPUTS.weight]: scalar(weight),
    };
    if (this.maskPadding) {
      const bias = new Float32Array(B * L);
      for (let i = 0; i < B * L; i++) bias[i] = batch.attentionMask![i] === 1 ? 0 : MASKED_SCORE;
      feeds[TRAIN_INPUTS.attnBias] = f32(bias, [B, L]);
    }
    for (const t of this.trainable) {
      feeds[t.name] = f32(this.params.get(t.name)!, t.shape);
      if (!this.acc.has(t.name)) this.acc.set(t.name, new Float32Array(numel(t.shape)));
    }
    // Labelled rows in runs of at most maxLabelRows (each run recomputes the transformer;
    // gradients add up in the accumulators).
    let lossSum = 0;
    const fetches: Record<string, ort.Tensor | null> = { [TRAIN_OUTPUTS.lossSum]: null };
    for (const t of this.trainable) {
      const a = this.acc.get(t.name)!;
      feeds[TRAIN_INPUTS.acc(t.name)] = f32(a, t.shape);
      fetches[TRAIN_OUTPUTS.grad(t.name)] = f32(a, t.shape); // in place: grad = acc + w * dL
    }
    for (let start = 0; start < rows.length; start += this.maxLabelRows) {
      const end = Math.min(rows.length, start + this.maxLabelRows);
      feeds[TRAIN_INPUTS.labelRows] = i64(rows.slice(start, end), [end - start]);
      feeds[TRAIN_INPUTS.labelIds] = i64(targets.slice(start, end), [end - start]);
      this.pending = true;
      const out = await this.train.run(feeds, fetches);
      lossSum += (out[TRAIN_OUTPUTS.lossSum]!.data as Float32Array)[0]!;
    }
    return { lossSum, labelCount: rows.length };
  }

  async step(opt: AdamWConfig): Promise<{ gradNorm: number }> {
    checkAdamW(opt);
    // Compact vocabulary: each tied head row's gradient is the rest row's / N, and
    // the norm counts it N times (vocab-rows.ts).
    const tiedExtra = new Map<string, number>();
    const vocab = this.vocab;
    if (vocab && vocab.cv.rest >= 0) {
      const gr = this.acc.get(vocab.head);
      if (gr) {
        const D = this.config.dModel;
        const row = gr.subarray(vocab.cv.rest * D, (vocab.cv.rest + 1) * D);
        let ss = 0;
        for (let j = 0; j < D; j++) {
          row[j] = Math.fround(row[j]! / vocab.cv.tied);
          ss += row[j]! * row[j]!;
        }
        tiedExtra.set(vocab.head, (vocab.cv.tied - 1) * ss);
      }
    }
    // clip_grad_norm_: the norm of the per-tensor norms (each rounded to float32, as PyTorch's).
    const norms: number[] = [];
    for (const t of this.trainable) {
      const gr = this.acc.get(t.name);
      if (!gr) {
        norms.push(0);
        continue;
      }
      const ss = Math.fround(sumOfSquares(gr)) + (tiedExtra.get(t.name) ?? 0);
      norms.push(Math.fround(Math.sqrt(ss)));
    }
    const gradNorm = Math.fround(Math.sqrt(norms.reduce((s, n) => s + n * n, 0)));
    // PyTorch: clip_coef = max_norm / (total_norm + 1e-6), clamped to 1, always applied.
    const clipCoef =
      opt.clipGrad === null ? 1 : Math.min(1, Math.fround(opt.clipGrad / (gradNorm + 1e-6)));
    this.step_ += 1;
    const scalars = adamwScalars(opt, this.step_, clipCoef);
    for (const tt of this.trainable) {
      const n = numel(tt.shape);
      const gr = this.acc.get(tt.name) ?? new Float32Array(n);
      adamwStep(this.params.get(tt.name)!, this.m.get(tt.name)!, this.v.get(tt.name)!, gr, scalars);
    }
    for (const a of this.acc.values()) a.fill(0);
    this.pending = false;
    return { gradNorm };
  }

  /**
   * A copy of a trainable tensor (or its accumulator) for callers: compact
   * tables expanded to the full vocabulary's shape, other tensors copied (the
   * live buffers are updated in place by the next step).
   */
  private full(
    name: string,
    shape: readonly number[],
    data: Float32Array,
    grad: boolean,
  ): { shape: number[]; data: Float32Array } {
    const v = this.vocab;
    if (!v || (name !== v.embedding && name !== v.head))
      return { shape: [...shape], data: data.slice() };
    const D = this.config.dModel;
    const kind = name === v.embedding ? 'zero' : grad ? 'share' : 'tied';
    return { shape: [v.cv.full, D], data: expandTable(v.cv, data, D, kind) };
  }

  parameters(): Map<string, { shape: number[]; data: Float32Array }> {
    return new Map(
      this.trainable.map((t) => [
        t.name,
        this.full(t.name, t.shape, this.params.get(t.name)!, false),
      ]),
    );
  }

  gradients(): Map<string, Float32Array> {
    if (!this.pending) return new Map();
    const shapes = new Map(this.trainable.map((t) => [t.name, t.shape]));
    return new Map([...this.acc].map(([k, g]) => [k, this.full(k, shapes.get(k)!, g, true).data]));
  }

  exportState(): TrainEngineState {
    if (this.pending)
      throw new DimooError(
        'exportState: gradients are accumulated but not applied (call step first)',
        E,
      );
    return {
      step: this.step_,
      tensors: this.trainable.map((t) => ({
        name: t.name,
        shape: [...t.shape],
        param: this.params.get(t.name)!.slice(),
        m: this.m.get(t.name)!.slice(),
        v: this.v.get(t.name)!.slice(),
      })),
    };
  }

  importState(state: TrainEngineState): void {
    if (!Number.isSafeInteger(state.step) || state.step < 0)
      throw new DimooError(
        `importState: step must be a non-negative integer, got ${state.step}`,
        E,
      );
    const byName = new Map(state.tensors.map((t) => [t.name, t]));
    for (const t of this.trainable) {
      const s = byName.get(t.name);
      if (!s) throw new DimooError(`importState: tensor "${t.name}" is missing from the state`, E);
      const n = numel(t.shape);
      if (
        s.shape.join(',') !== t.shape.join(',') ||
        s.param.length !== n ||
        s.m.length !== n ||
        s.v.length !== n
      )
        throw new DimooError(
          `importState: tensor "${t.name}" has shape [${s.shape.join(', ')}] (or wrong lengths), expected [${t.shape.join(', ')}]`,
          E,
        );
    }
    const extra = state.tensors.find((s) => !this.trainable.some((t) => t.name === s.name));
    if (extra)
      throw new DimooError(
        `importState: tensor "${extra.name}" is not trainable in this engine`,
        E,
      );
    for (const t of this.trainable) {
      const s = byName.get(t.name)!;
      this.params.set(t.name, s.param.slice());
      this.m.set(t.name, s.m.slice());
      this.v.set(t.name, s.v.slice());
    }
    this.step_ = state.step;
    this.acc.clear();
    this.pending = false;
  }

  async dispose(): Promise<void> {
    await this.train.release();
  }
}

function checkAdamW(o: AdamWConfig): void {
  const bad = (f: string, v: unknown, want: string): DimooError =>
    new DimooError(`optimizer: ${f} must be ${want}, got ${v}`, E);
  if (!Number.isFinite(o.lr) || o.lr < 0) throw bad('lr', o.lr, 'a non-negative number');
  if (!(o.beta1 >= 0 && o.beta1 < 1)) throw bad('beta1', o.beta1, 'in [0, 1)');
  if (!(o.beta2 >= 0 && o.beta2 < 1)) throw bad('beta2', o.beta2, 'in [0, 1)');
  if (!Number.isFinite(o.eps) || o.eps <= 0) throw bad('eps', o.eps, 'a positive number');
  if (!Number.isFinite(o.weightDecay) || o.weightDecay < 0)
    throw bad('weightDecay', o.weightDecay, 'a non-negative number');
  if (o.clipGrad !== null && !(Number.isFinite(o.clipGrad) && o.clipGrad > 0))
    throw bad('clipGrad', o.clipGrad, 'a positive number or null');
}

export async function createTrainEngine(opts: TrainEngineOptions): Promise<TrainEngine> {
  const ckpt = openCheckpoint(opts.model);
  const c = ckpt.config;
  const quantized = (ckpt as Partial<QuantizedCheckpoint>).quantized;
  if (quantized && !opts.lora)
    throw new DimooError(
      `${ckpt.dir}: a quantized checkpoint can only be fine-tuned with LoRA adapters (QLoRA); full fine-tuning needs float weights`,
      E,
    );
  // The training graph differentiates through MatMulNBits blocks only; int8 [K, N] channel
  // weights (dimoo quantize --format qgemm) would be misread as blocks.
  if (quantized && [...quantized.values()].some((q) => q.layout === 'channel'))
    throw new DimooError(
      `${ckpt.dir}: a qgemm checkpoint (int8 per output channel) cannot be fine-tuned; quantize with --format nbits for QLoRA`,
      E,
    );
  const targets = opts.lora ? checkLora(opts.lora) : undefined;
  const device = opts.device ?? 'cpu';
  let vocab: { cv: CompactVocab; embedding: string; head: string } | undefined;
  if (opts.vocabRows) {
    if (opts.lora)
      throw new DimooError(
        'vocabulary rows apply to full fine-tuning (LoRA trains no embedding rows)',
        E,
      );
    if (c.weightTying || c.includeBias)
      throw new DimooError(
        `${ckpt.dir}: vocabulary rows need an untied head without bias (weight_tying and include_bias false)`,
        E,
      );
    vocab = {
      cv: compactVocab(opts.vocabRows, c.embeddingSize),
      embedding: 'model.transformer.wte.weight',
      head: 'model.transformer.ff_out.weight',
    };
  }
  // The same sources as inference: a Hugging Face cache snapshot's links resolve inside one folder.
  const sources = weightSources(ckpt);
  const graph = buildTrainGraph({
    config: vocab ? { ...c, embeddingSize: vocab.cv.size, vocabSize: vocab.cv.size } : c,
    logitOffset: vocab ? logitOffset(vocab.cv) : undefined,
    weight: sources.weight,
    quantized: quantized ? sources.quantized : undefined,
    lora:
      opts.lora && targets
        ? { r: opts.lora.r, alpha: opts.lora.alpha, targets, names: peftKeys }
        : undefined,
    maskPadding: opts.maskPadding,
    recompute: opts.recompute ?? quantized !== undefined,
    // Each provider gets the op that sums the loss's softmax terms in order (see Tape.crossEntropy).
    laneSum: device === 'webgpu' ? 'matmul' : 'cumsum',
  });
  const spec = {
    device,
    threads: opts.threads,
    externalDataFolder: sources.folder,
    prepack: quantized ? false : undefined,
    memPattern: false,
  };
  const train = await createSession(
    graph.bytes,
    spec,
    `${ckpt.dir}: ONNX Runtime could not load the training graph`,
  );
  const seed = opts.seed ?? 0;
  const init = (t: TrainableTensor, index: number): Float32Array => {
    if (opts.lora) return loraInit(t, seed, index);
    const info = ckpt.weights.get(t.name);
    if (!info) throw new DimooError(`${ckpt.dir}: weight ${t.name} is missing`, 'E_CHECKPOINT');
    const data = readTensorFloat32(info);
    if (vocab && (t.name === vocab.embedding || t.name === vocab.head))
      return compactTable(
        vocab.cv,
        data,
        c.dModel,
        t.name === vocab.embedding ? 'zero' : 'tied',
        `${ckpt.dir}: ${t.name}`,
      );
    return data;
  };
  // WebGPU: ORT's kernels go wrong on [rows, vocabulary] tensors beyond 128 MiB (measured on
  // lavapipe: 486 x 134548 gives -inf rows, 200 x 134548 is right), WebGPU's default
  // maxStorageBufferBindingSize; the CPU has no such limit.
  const maxLabelRows =
    device === 'webgpu'
      ? Math.max(1, Math.floor(2 ** 27 / (4 * (vocab?.cv.size ?? c.embeddingSize))))
      : Infinity;
  return new OrtTrainEngine(
    c,
    graph.trainable,
    train,
    opts.maskPadding === true,
    maxLabelRows,
    init,
    opts.lora,
    vocab,
  );
}
