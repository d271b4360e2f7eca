/**
 * The DiMOO (LLaDA) transformer's training graph: forward over a batch of
 * right-padded sequences, cross-entropy loss and backward, as one ONNX graph
 * differentiated by the tape (autodiff.ts).
 *
 * Inputs:
 *  - `ids` [B, L] int64; `cos`/`sin` [L, head_dim] RoPE tables (positions 0..L-1);
 *  - `label_rows` [M] int64: flat indices (b * L + t) of the labelled tokens,
 *    `label_ids` [M] their targets (only those rows reach the output head: the
 *    ignored -100 rows contribute nothing to loss or gradients);
 *  - `weight` [] float32: the backward computes weight * d(sum of CE)/d(theta);
 *  - `attn_bias` [B, L] (only with maskPadding): 0 for real keys, a large
 *    negative number for padding; without it every position attends to every
 *    position of its row, padding included, as the original trains;
 *  - every trainable tensor under its own name, and its gradient accumulator
 *    `acc:<name>`.
 * Outputs: `loss_sum` [] (sum of CE over the labelled tokens, unweighted) and
 * `grad:<name>` = acc + weight * gradient for every trainable tensor.
 *
 * Frozen weights (LoRA bases) are external data straight from the checkpoint
 * (float, upcast once by a folded Cast) or MatMulNBits blocks of a quantized
 * folder, exactly as the inference graph reads them.
 */
import type { LladaConfig } from '../checkpoint/config.js';
import { GraphBuilder, type DType, type Value } from './onnx/builder.js';
import type { QuantizedLinearSource, WeightSource } from './transformer.js';
import { DEQUANT_CHUNK_BYTES, Tape, type QuantWeight, type TVal } from './autodiff.js';

export const TRAIN_INPUTS = {
  ids: 'ids',
  cos: 'cos',
  sin: 'sin',
  labelRows: 'label_rows',
  labelIds: 'label_ids',
  weight: 'weight',
  attnBias: 'attn_bias',
  acc: (name: string) => `acc:${name}`,
} as const;

export const TRAIN_OUTPUTS = {
  lossSum: 'loss_sum',
  grad: (name: string) => `grad:${name}`,
} as const;

/** Which linears of a block LoRA can adapt, by the short names the CLI uses. */
export const LORA_TARGETS = {
  q: 'q_proj',
  k: 'k_proj',
  v: 'v_proj',
  attn_out: 'attn_out',
  ff: 'ff_proj',
  up: 'up_proj',
  down: 'ff_out',
} as const;
export type LoraTarget = keyof typeof LORA_TARGETS;

/** A trainable tensor of the graph: its input name and shape. */
export interface TrainableTensor {
  name: string;
  shape: number[];
}

export interface LoraGraphSpec {
  r: number;
  alpha: number;
  targets: LoraTarget[];
  /** Input name of the A/B matrices of a checkpoint linear (e.g. its PEFT key). */
  names: (linear: string) => { a: string; b: string };
}

export interface TrainGraphOptions {
  config: LladaConfig;
  /** Resolves a checkpoint tensor name to its bytes (frozen weights only). */
  weight: (name: string) => WeightSource;
  /** The quantized form of a frozen linear (or the 8-bit embedding), if the checkpoint has one. */
  quantized?: (name: string) => QuantizedLinearSource | undefined;
  /** Full fine-tuning (every weight a trainable input) or LoRA adapters on a frozen base. */
  lora?: LoraGraphSpec;
  maskPadding?: boolean;
  /**
   * Float32 lanes of the loss's softmax sum (default 8: PyTorch's AVX2 CPU kernel,
   * which the golden references ran; see Tape.crossEntropy). 0: ORT's LogSoftmax.
   */
  softmaxLanes?: number;
  /** How the lanes are summed in order (see Tape.crossEntropy): 'cumsum' (CPU, default) or 'matmul' (WebGPU). */
  laneSum?: 'cumsum' | 'matmul';
  /**
   * Recompute each block's activations in the backward pass instead of keeping them
   * (gradient checkpointing: memory of one block instead of all, ~1/3 more compute).
   */
  recompute?: boolean;
  /** MatMulNBits accuracy_level for quantized bases (default 0: float activations). */
  accuracyLevel?: number;
  /**
   * A constant [vocabulary] added to the logits before the loss. A compact
   * vocabulary (training/vocab-rows.ts) puts log(N) on the row that stands for
   * N tied rows, so the softmax is the full vocabulary's.
   */
  logitOffset?: Float32Array;
}

export interface TrainGraph {
  bytes: Uint8Array;
  /** Trainable tensors in a fixed order (inputs of the same name, accumulators `acc:<name>`). */
  trainable: TrainableTensor[];
}

const ONNX_DTYPE: Record<WeightSource['dtype'], DType> = {
  BF16: 'bfloat16',
  F16: 'float16',
  F32: 'float32',
};

/** Large negative score for masked keys (exp underflows to exactly 0; no inf arithmetic). */
export const MASKED_SCORE = -1e30;

export function buildTrainGraph(opts: TrainGraphOptions): TrainGraph {
  const c = opts.config;
  const g = new GraphBuilder('dimoo_train');
  const t = new Tape(g, 'float32');
  const hd = c.headDim;
  const nKv = c.nKvHeads;
  const rep = c.nHeads / c.nKvHeads;
  const D = c.dModel;
  const V = c.embeddingSize;
  const pre = 'model.transformer';
  const trainable: TrainableTensor[] = [];
  const params: TVal[] = [];
  const full = !opts.lora;
  let extCount = 0;

  // Weights are created once per name (a recomputed block asks for them again).
  const made = new Map<string, TVal>();
  const once = (key: string, make: () => TVal): TVal => {
    let v = made.get(key);
    if (!v) {
      v = make();
      made.set(key, v);
    }
    return v;
  };
  const trainableInput = (name: string, shape: number[]): TVal =>
    once(name, () => {
      const v = t.input(name, 'float32', shape, true);
      trainable.push({ name, shape });
      params.push(v);
      return v;
    });
  /** A frozen float weight as float32 (the Cast of a constant is folded at load). */
  const frozen = (name: string): TVal => once(`frozen:${name}`, () => frozenNew(name));
  const frozenNew = (name: string): TVal => {
    const src = opts.weight(name);
    const w = g.external(`${name}#${extCount++}`, ONNX_DTYPE[src.dtype], src.shape, {
      location: src.location,
      offset: src.byteOffset,
      length: src.byteLength,
    });
    return t.wrap(src.dtype === 'F32' ? w : g.cast(w, 'float32'), src.shape);
  };
  /** A weight (or bias/norm) as the graph uses it: trainable input in full FT, frozen otherwise. */
  const param = (name: string, shape: number[]): TVal =>
    full ? trainableInput(name, shape) : frozen(name);

  /** The tape the block code records on (a recomputed block runs on nested tapes). */
  let cur: Tape = t;
  const loraTargets = new Set((opts.lora?.targets ?? []).map((x) => LORA_TARGETS[x]));
  /** x [N, K] through a block linear `prefix` (+ LoRA when targeted). */
  const linear = (x: TVal, prefix: string, outDim: number, inDim: number, bias: boolean): TVal => {
    const wName = `${prefix}.weight`;
    const b = bias ? param(`${prefix}.bias`, [outDim]) : undefined;
    let y: TVal;
    const q = full ? undefined : opts.quantized?.(wName);
    if (q) {
      const qw = quantWeights.get(wName) ?? quantWeight(wName, q);
      quantWeights.set(wName, qw);
      y = cur.linearQuantized(x, qw);
      if (b) y = cur.add(y, b);
    } else {
      y = cur.linear(x, param(wName, [outDim, inDim]), b);
    }
    const suffix = prefix.slice(prefix.lastIndexOf('.') + 1);
    if (opts.lora && loraTargets.has(suffix as (typeof LORA_TARGETS)[LoraTarget])) {
      const { r, alpha } = opts.lora;
      const { A, B } = loraPair(wName, outDim, inDim);
      // PEFT's order: lora_B(lora_A(x)) * scaling, added to the base output.
      y = cur.add(y, cur.mul(cur.linear(cur.linear(x, A), B), cur.scalar(alpha / r)));
    }
    return y;
  };
  const loraPair = (wName: string, outDim: number, inDim: number): { A: TVal; B: TVal } => {
    const { r } = opts.lora!;
    const names = opts.lora!.names(wName);
    return { A: trainableInput(names.a, [r, inDim]), B: trainableInput(names.b, [outDim, r]) };
  };
  const quantWeights = new Map<string, QuantWeight[]>();
  /**
   * A frozen quantized linear as row pieces of at most DEQUANT_CHUNK_BYTES of float32
   * (each piece external data over its own byte range of the blocks and scales, so
   * nothing is copied): ORT's unpacked MatMulNBits dequantizes a whole weight per run.
   */
  const quantWeight = (wName: string, q: QuantizedLinearSource): QuantWeight[] => {
    const blocks = q.K / q.blockSize;
    const rowBytes = (blocks * q.blockSize * q.bits) / 8;
    const per = Math.max(1, Math.floor(DEQUANT_CHUNK_BYTES / (4 * q.K)));
    const pieces: QuantWeight[] = [];
    for (let start = 0; start < q.N; start += per) {
      const n = Math.min(per, q.N - start);
      const data = g.external(
        `${wName}.q${q.bits}#${extCount++}`,
        'uint8',
        [n, blocks, rowBytes / blocks],
        {
          location: q.data.location,
          offset: q.data.byteOffset + start * rowBytes,
          length: n * rowBytes,
        },
      );
      const scales = g.external(`${wName}.scales#${extCount++}`, 'float32', [n * blocks], {
        location: q.scales.location,
        offset: q.scales.byteOffset + start * blocks * 4,
        length: n * blocks * 4,
      });
      pieces.push({
        data,
        scales,
        N: n,
        K: q.K,
        bits: q.bits,
        blockSize: q.blockSize,
        accuracyLevel: opts.accuracyLevel ?? 0,
      });
    }
    return pieces;
  };

  const eps = t.scalar(c.rmsNormEps);
  const rmsNorm = (x: TVal, weightName: string): TVal => {
    const ms = cur.reduceMean(cur.mul(x, x), [-1]);
    let y = cur.mul(cur.mul(x, cur.reciprocal(cur.sqrt(cur.add(ms, eps)))), param(weightName, [D]));
    if (c.normBias) y = cur.add(y, param(weightName.replace(/\.weight$/, '.bias'), [D]));
    return y;
  };

  const half = hd / 2;
  const rope = (x: TVal, cos: TVal, sin: TVal): TVal => {
    const x1 = cur.slice(x, [0], [half], [-1]);
    const x2 = cur.slice(x, [half], [hd], [-1]);
    return cur.add(cur.mul(x, cos), cur.mul(cur.concat([cur.neg(x2), x1], -1), sin));
  };

  const ids = g.input(TRAIN_INPUTS.ids, 'int64', ['B', 'L']);
  const cos = t.input(TRAIN_INPUTS.cos, 'float32', ['L', hd]);
  const sin = t.input(TRAIN_INPUTS.sin, 'float32', ['L', hd]);
  const labelRows = g.input(TRAIN_INPUTS.labelRows, 'int64', ['M']);
  const labelIds = g.input(TRAIN_INPUTS.labelIds, 'int64', ['M']);
  const weight = g.input(TRAIN_INPUTS.weight, 'float32', []);
  const bl = g.shape(ids); // [B, L]
  const flatIds = g.reshape(ids, [-1]);
  const shapeBL = (...rest: number[]): Value => g.concat([bl, g.constI64(rest)], 0);

  // Embedding: trainable table (full FT), or frozen: 8-bit blocks of a quantized folder, or the stored table.
  const embName = `${pre}.wte.weight`;
  let x: TVal;
  const qEmb = full ? undefined : opts.quantized?.(embName);
  if (qEmb && qEmb.bits === 8) {
    const blocks = qEmb.K / qEmb.blockSize;
    const data = g.external(`${embName}.q8#${extCount++}`, 'uint8', [qEmb.N, qEmb.K], {
      location: qEmb.data.location,
      offset: qEmb.data.byteOffset,
      length: qEmb.data.byteLength,
    });
    const scales = g.external(`${embName}.scales#${extCount++}`, 'float32', [qEmb.N, blocks], {
      location: qEmb.scales.location,
      offset: qEmb.scales.byteOffset,
      length: qEmb.scales.byteLength,
    });
    x = t.gatherQuantized(data, flatIds, scales, { blockSize: qEmb.blockSize, bits: 8 }, ['N', D]);
  } else if (full) {
    x = t.gather(trainableInput(embName, [V, D]), flatIds, ['N']);
  } else {
    const src = opts.weight(embName);
    const table = g.external(`${embName}#${extCount++}`, ONNX_DTYPE[src.dtype], src.shape, {
      location: src.location,
      offset: src.byteOffset,
      length: src.byteLength,
    });
    const rows = g.gather(table, flatIds, 0);
    x = t.wrap(src.dtype === 'F32' ? rows : g.cast(rows, 'float32'), ['N', D]);
  }

  let bias: TVal | undefined;
  if (opts.maskPadding) {
    const ab = t.input(TRAIN_INPUTS.attnBias, 'float32', ['B', 'L']);
    bias = t.unsqueeze(ab, [1, 2, 3]); // [B, 1, 1, 1, L]
  }

  const qkvBias = c.includeBias || c.includeQkvBias;
  const scale = t.scalar(1 / Math.sqrt(hd));
  const kvDim = nKv * hd;
  const H = c.mlpHiddenSize;
  const block = (tape: Tape, x: TVal, i: number): TVal => {
    const prev = cur;
    cur = tape;
    try {
      const b = `${pre}.blocks.${i}`;
      const h = rmsNorm(x, `${b}.attn_norm.weight`);
      const q = linear(h, `${b}.q_proj`, D, D, qkvBias);
      const k = linear(h, `${b}.k_proj`, kvDim, D, qkvBias);
      const v = linear(h, `${b}.v_proj`, kvDim, D, qkvBias);
      // [N, heads*hd] -> [B, nKv, rep, L, hd]; query head j uses kv head floor(j / rep).
      const toHeads = (z: TVal, r: number): TVal => {
        return cur.transpose(
          cur.reshapeTo(z, shapeBL(nKv, r, hd), ['B', 'L', nKv, r, hd]),
          [0, 2, 3, 1, 4],
        );
      };
      const qh = rope(toHeads(q, rep), cos, sin);
      const kh = rope(toHeads(k, 1), cos, sin);
      const vh = toHeads(v, 1);
      let scores = cur.mul(cur.matmul(qh, cur.transpose(kh, [0, 1, 2, 4, 3])), scale); // [B, nKv, rep, L, L]
      if (bias) scores = cur.add(scores, bias);
      const ctx = cur.matmul(cur.softmax(scores, -1), vh); // [B, nKv, rep, L, hd]
      const merged = cur.reshape(cur.transpose(ctx, [0, 3, 1, 2, 4]), [-1, D], ['N', D]);
      const hRes = cur.add(x, linear(merged, `${b}.attn_out`, D, D, c.includeBias));
      const f = rmsNorm(hRes, `${b}.ff_norm.weight`);
      const act = cur.mul(
        cur.silu(linear(f, `${b}.ff_proj`, H, D, c.includeBias)),
        linear(f, `${b}.up_proj`, H, D, c.includeBias),
      );
      return cur.add(hRes, linear(act, `${b}.ff_out`, D, H, c.includeBias));
    } finally {
      cur = prev;
    }
  };
  /** The trainable tensors block i uses (created here, in a fixed order). */
  const blockTrainables = (i: number): TVal[] => {
    const b = `${pre}.blocks.${i}`;
    const lin: [string, number, number, boolean][] = [
      ['q_proj', D, D, qkvBias],
      ['k_proj', kvDim, D, qkvBias],
      ['v_proj', kvDim, D, qkvBias],
      ['attn_out', D, D, c.includeBias],
      ['ff_proj', H, D, c.includeBias],
      ['up_proj', H, D, c.includeBias],
      ['ff_out', D, H, c.includeBias],
    ];
    if (!full) {
      return lin
        .filter(([n]) => loraTargets.has(n as (typeof LORA_TARGETS)[LoraTarget]))
        .flatMap(([n, o, k]) => {
          const { A, B } = loraPair(`${b}.${n}.weight`, o, k);
          return [A, B];
        });
    }
    const out: TVal[] = [];
    for (const norm of ['attn_norm', 'ff_norm']) {
      out.push(param(`${b}.${norm}.weight`, [D]));
      if (c.normBias) out.push(param(`${b}.${norm}.bias`, [D]));
    }
    for (const [n, o, k, bias] of lin) {
      out.push(param(`${b}.${n}.weight`, [o, k]));
      if (bias) out.push(param(`${b}.${n}.bias`, [o]));
    }
    return out;
  };
  for (let i = 0; i < c.nLayers; i++) {
    if (opts.recompute) {
      const xi = x;
      x = t.checkpoint([xi, ...blockTrainables(i)], (tape, ins) => block(tape, ins[0]!, i));
    } else {
      x = block(t, x, i);
    }
  }
  const final = rmsNorm(x, `${pre}.ln_f.weight`);

  // The output head only on the labelled rows.
  const rows = t.gather(final, labelRows, ['M']);
  let logits: TVal;
  if (c.weightTying) {
    if (!full) throw new Error('train graph: LoRA over a weight-tied checkpoint is not supported');
    logits = t.linear(
      rows,
      params.find((p) => p.name === embName)!,
    );
  } else {
    const headName = `${pre}.ff_out.weight`;
    const qHead = full ? undefined : opts.quantized?.(headName);
    const hb = c.includeBias ? param(`${pre}.ff_out.bias`, [V]) : undefined;
    if (qHead) {
      logits = t.linearQuantized(rows, quantWeight(headName, qHead));
      if (hb) logits = t.add(logits, hb);
    } else {
      logits = t.linear(rows, param(headName, [V, D]), hb);
    }
  }
  if (opts.logitOffset) {
    if (opts.logitOffset.length !== V)
      throw new Error(
        `train graph: logitOffset has ${opts.logitOffset.length} entries, expected ${V}`,
      );
    logits = t.add(logits, t.wrap(g.constF32(opts.logitOffset, [V]), [V]));
  }
  const nll = t.crossEntropy(logits, labelIds, opts.softmaxLanes ?? 8, opts.laneSum ?? 'cumsum'); // [M]
  const lossSum = t.reduceSum(nll, [0], false);
  g.output(lossSum, TRAIN_OUTPUTS.lossSum, 'float32', []);

  const grads = t.gradients(lossSum, params, weight);
  params.forEach((p, i) => {
    const acc = g.input(TRAIN_INPUTS.acc(p.name), 'float32', p.shape);
    const gr = grads[i];
    g.output(gr ? g.add(acc, gr) : g.identity(acc), TRAIN_OUTPUTS.grad(p.name), 'float32', p.shape);
  });
  return {
    bytes: g.toBytes(
      `DiMOO training graph: ${c.nLayers} layers, d_model ${c.dModel}${opts.lora ? `, LoRA r=${opts.lora.r}` : ''}`,
    ),
    trainable,
  };
}
