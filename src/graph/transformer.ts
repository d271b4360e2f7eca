/**
 * The DiMOO (LLaDA) transformer as one ONNX graph.
 *
 * One graph serves every way the samplers call the model, so the weights are
 * loaded once:
 *  - `ids` [P] are the tokens to compute, `q_cos`/`q_sin` [P, head_dim] the RoPE
 *    tables at their absolute positions (computed by the caller, so positions
 *    can be anything, also beyond max_sequence_length).
 *  - Keys/values: per layer `past_k_i`/`past_v_i` [n_kv_heads, S, head_dim]
 *    hold S key slots (keys with RoPE already applied, values as they are).
 *    This call's keys/values are written into the slots `kv_rows` [P]
 *    (ScatterND, in the graph: the caller's arrays are not modified) and the
 *    queries attend to all S slots. A plain forward passes S = P and kv_rows =
 *    0..P-1 (the past content is then irrelevant: every slot is overwritten);
 *    an ML-Cache / dual-cache pass passes the whole sequence's cache (S = L)
 *    and recomputes only some slots. Attention has no mask, so the slots are
 *    simply all keys; slot order = position order keeps the float summation
 *    order of a full pass.
 *  - Outputs `new_k_i`/`new_v_i` [n_kv_heads, Q, head_dim] (keys with RoPE) are
 *    the rows `kv_out_rows` [Q] of this call's keys/values, for the caller's
 *    cache (all rows: a full pass's output IS the cache layout; none: nothing is
 *    kept alive).
 *  - Logits only where asked: full-vocabulary rows at `logit_rows` [A]; image
 *    logits are computed once for `head_rows` [U] (indices into the P rows),
 *    then `image_sel` [B] picks the rows returned as `image_logits` and
 *    `rowmax_sel` [R] the rows whose max image logit is returned;
 *    `greedy_sel` [G] (indices into the A logit rows) picks rows reduced to
 *    their argmax and softmax probability (greedy text decoding). The image
 *    head is its own initializer pointing at the image rows of the output head
 *    (zero-copy); the full head is split into row chunks so that each chunk's
 *    float32 copy stays below ORT's constant-folding limit (1 GiB).
 *  - Linear weights are bf16/f16/f32 external data (upcast once by folding the
 *    Cast at load) or, for quantized checkpoints, MatMulNBits blocks
 *    (com.microsoft; int8 activations at accuracy level 4) or int8 [K, N] with
 *    a scale per output channel on the integer GEMM (MatMulIntegerToFloat with
 *    per-row activation scales, or DynamicQuantizeMatMul with one per tensor).
 */
import type { LladaConfig } from '../checkpoint/config.js';
import type { LoraBranch } from '../checkpoint/lora.js';
import { GraphBuilder, type DType, type Value } from './onnx/builder.js';

/** A run of bytes in a file beside the model (external data). */
export interface ExternalBytes {
  /** File name relative to the model's external-data folder. */
  location: string;
  byteOffset: number;
  byteLength: number;
}

/** Where one weight's bytes are, as the checkpoint reader reports them. */
export interface WeightSource extends ExternalBytes {
  dtype: 'BF16' | 'F16' | 'F32';
  shape: number[];
}

/**
 * A linear weight [N, K] quantized in MatMulNBits' layout, or (layout
 * 'channel', 8 bits) as int8 [K, N] with one scale per output channel (see quant-blocks.ts).
 */
export interface QuantizedLinearSource {
  bits: 4 | 8;
  blockSize: number;
  N: number;
  K: number;
  layout?: 'channel';
  /** [N, K / blockSize, blockSize * bits / 8] uint8; channel: [K, N] int8 */
  data: ExternalBytes;
  /** [N * K / blockSize] float32; channel: [N] */
  scales: ExternalBytes;
}

export interface TransformerGraphOptions {
  config: LladaConfig;
  /** Resolves a checkpoint tensor name to its bytes; throws if absent. */
  weight: (name: string) => WeightSource;
  /** The quantized form of a linear weight, if the checkpoint has one (used instead of `weight`). */
  quantized?: (name: string) => QuantizedLinearSource | undefined;
  /** MatMulNBits accuracy_level (default 4: int8 activations). */
  accuracyLevel?: number;
  /**
   * Channel-layout (integer GEMM) linears: activations quantized with one scale
   * per row (default; MatMulIntegerToFloat) or one per tensor (DynamicQuantizeMatMul).
   */
  int8Activations?: 'row' | 'tensor';
  /**
   * Largest quantized activation magnitude of per-row integer GEMMs: 127 (8 bits,
   * default) or 63 (7 bits). x86 CPUs without VNNI multiply uint8 x int8 with
   * vpmaddubsw, which adds pairs of products in saturating int16: 2 x 255 x 127
   * overflows, 2 x 127 x 127 does not (measured: logits relative L2 0.23 with 8 bits).
   */
  int8ActivationLevels?: 127 | 63;
  /** First id and size of the image-token block of the vocabulary. */
  imageVocabStart: number;
  imageVocabSize: number;
  /** Float32 bytes per chunk of the full output head (default 256 MiB). */
  headChunkBytes?: number;
  /** Query heads per attention group (default 8; groups run one after the other to bound peak memory). */
  attentionHeadsPerGroup?: number;
  /**
   * Float (not quantized) linear and head weights on the device: float32 (default;
   * upcast once at load), float16 (kept float16, upcast per run inside the graph, so
   * compute stays float32), float16-compute (float16 weights, activations and
   * matmuls). The float16 forms need WebGPU with shader-f16.
   */
  floatWeights?: 'float32' | 'float16' | 'float16-compute';
  /** Keep reductions over possibly empty row sets non-empty (WebGPU refuses empty ones). */
  padEmptyReductions?: boolean;
  /** LoRA branches of a linear weight (by checkpoint name), added on the fly: y += scale * (x A^T) B^T. */
  lora?: (weightName: string) => readonly LoraBranch[] | undefined;
  /** Never Expand a uint8 tensor (WebGPU's Expand fails on uint8): see emitIntegerGemm. */
  avoidUint8Expand?: boolean;
}

export const TRANSFORMER_INPUTS = {
  ids: 'ids',
  qCos: 'q_cos',
  qSin: 'q_sin',
  kvRows: 'kv_rows',
  kvOutRows: 'kv_out_rows',
  logitRows: 'logit_rows',
  headRows: 'head_rows',
  imageSel: 'image_sel',
  rowmaxSel: 'rowmax_sel',
  greedySel: 'greedy_sel',
  pastK: (i: number) => `past_k_${i}`,
  pastV: (i: number) => `past_v_${i}`,
} as const;

export const TRANSFORMER_OUTPUTS = {
  logits: 'logits',
  imageLogits: 'image_logits',
  imageRowMax: 'image_row_max',
  textArgmax: 'text_argmax',
  textRest: 'text_rest',
  textTies: 'text_ties',
  newK: (i: number) => `new_k_${i}`,
  newV: (i: number) => `new_v_${i}`,
} as const;

const ONNX_DTYPE: Record<WeightSource['dtype'], DType> = {
  BF16: 'bfloat16',
  F16: 'float16',
  F32: 'float32',
};
const ELEM_BYTES: Record<WeightSource['dtype'], number> = { BF16: 2, F16: 2, F32: 4 };

/** Rows [start, end) of a row-major weight whose first dim is rows. */
export function weightRows(w: WeightSource, start: number, end: number): WeightSource {
  const rowElems = w.shape.slice(1).reduce((a, b) => a * b, 1);
  const rowBytes = rowElems * ELEM_BYTES[w.dtype];
  return {
    ...w,
    shape: [end - start, ...w.shape.slice(1)],
    byteOffset: w.byteOffset + start * rowBytes,
    byteLength: (end - start) * rowBytes,
  };
}

/** Output rows [start, end) of a quantized linear (rows are contiguous in both data and scales; not for the channel layout). */
export function quantizedRows(
  q: QuantizedLinearSource,
  start: number,
  end: number,
): QuantizedLinearSource {
  if (q.layout === 'channel')
    throw new Error(
      'quantizedRows: channel-layout weights are [K, N]; slice their columns in the graph',
    );
  const blocks = q.K / q.blockSize;
  const blob = (q.blockSize * q.bits) / 8;
  return {
    ...q,
    N: end - start,
    data: {
      ...q.data,
      byteOffset: q.data.byteOffset + start * blocks * blob,
      byteLength: (end - start) * blocks * blob,
    },
    scales: {
      ...q.scales,
      byteOffset: q.scales.byteOffset + start * blocks * 4,
      byteLength: (end - start) * blocks * 4,
    },
  };
}

const zeroPoints = new WeakMap<GraphBuilder, Map<number, Value>>();

/**
 * x [M, K] @ dequant(B) on ONNX Runtime's integer GEMM (MLAS QGEMM: uint8
 * activations x int8 weights, VNNI), B int8 [K, N] with scales [N].
 * `row`: each row of x gets its own scale max|x_row| / `levels` (symmetric
 * around the zero point levels + 1: 128 for 8 bits, 64 for 7 bits on CPUs whose
 * kernel saturates), so a row of small values keeps its precision; the row
 * and column scales multiply the int32 sums in the GEMM's output stage
 * (MatMulIntegerToFloat). `tensor`: DynamicQuantizeMatMul, one scale and zero
 * point for the whole of x. M may be 0. `noUint8Expand` (WebGPU, whose Expand
 * fails on uint8): shift x by 128 row scales and quantize without a zero-point
 * input instead of expanding the zero point to one per row (one more pass over x).
 */
export function emitIntegerGemm(
  g: GraphBuilder,
  x: Value,
  B: Value,
  bScale: Value,
  activations: 'row' | 'tensor',
  noUint8Expand = false,
  levels: 127 | 63 = 127,
): Value {
  if (activations === 'tensor') return g.dynamicQuantizeMatMul(x, B, bScale);
  // Symmetric around the zero point levels + 1: values 1 .. 2 * levels + 1.
  const zpValue = levels + 1;
  let perGraph = zeroPoints.get(g);
  if (!perGraph) zeroPoints.set(g, (perGraph = new Map()));
  let zp = perGraph.get(zpValue);
  if (!zp) {
    zp = g.initializer(`int8_act_zero_point_${zpValue}`, 'uint8', [], Uint8Array.of(zpValue));
    perGraph.set(zpValue, zp);
  }
  // (+1e-30: an all-zero row gets a non-zero scale and quantizes to exact zeros.)
  const flat = g.reshape(
    g.mul(g.add(g.reduceMax(g.abs(x), [-1], false), g.scalarF32(1e-30)), g.scalarF32(1 / levels)),
    [-1],
  ); // [M]
  // Reshaped, not keepdims: ORT's ReduceMax of an empty [0, K] input keeps its shape.
  const rowScale = g.reshape(flat, [-1, 1]);
  const xq = noUint8Expand
    ? g.quantizeLinear(g.add(x, g.mul(rowScale, g.scalarF32(zpValue))), flat, null, 0)
    : g.quantizeLinear(x, flat, g.expand(zp, g.shape(flat)), 0);
  return g.matMulIntegerToFloat(xq, B, rowScale, bScale, zp);
}

const PRE = 'model.transformer';

/** How checkpoint weights enter the graph under construction (as float32, float16 or MatMulNBits blocks). */
interface Weights {
  g: GraphBuilder;
  c: LladaConfig;
  opts: TransformerGraphOptions;
  external(name: string, dtype: DType, shape: number[], src: ExternalBytes): Value;
  /** A weight as float32; the Cast of a constant is folded once at session load. */
  f32(name: string, src: WeightSource): Value;
  /** A linear weight, quantized when the checkpoint has it so. */
  source(name: string): WeightSource | QuantizedLinearSource;
  /**
   * x @ W^T (+ b) for W [N, K] given as float or quantized source; `dep` (default x,
   * at least one row) is what float16 weights' upcasts wait for.
   */
  linearFrom(
    x: Value,
    name: string,
    w: WeightSource | QuantizedLinearSource,
    bias?: Value,
    dep?: Value,
  ): Value;
  /** The checkpoint's linear `prefix`.weight (+ `prefix`.bias) applied to x. */
  linear(x: Value, prefix: string, bias: boolean): Value;
  /** A channel-layout (integer GEMM) weight's initializers, one pair per tensor (shared by the head's uses). */
  channelWeight(name: string, w: QuantizedLinearSource): { data: Value; scales: Value };
  /** x @ dequant(B) on the integer GEMM with the configured activation scales (see emitIntegerGemm). */
  integerGemm(x: Value, B: Value, bScale: Value): Value;
}

function weightsFor(g: GraphBuilder, opts: TransformerGraphOptions): Weights {
  let extCount = 0;
  const external = (name: string, dtype: DType, shape: number[], src: ExternalBytes): Value =>
    g.external(`${name}#${extCount++}`, dtype, shape, {
      location: src.location,
      offset: src.byteOffset,
      length: src.byteLength,
    });
  const f32 = (name: string, src: WeightSource): Value => {
    const w = external(name, ONNX_DTYPE[src.dtype], src.shape, src);
    return src.dtype === 'F32' ? w : g.cast(w, 'float32');
  };
  const zero16 = new Map<string, Value>();
  /**
   * A float16 zero computed at run time from `dep` (finite activations): ORT cannot fold
   * what depends on it, and the upcast it feeds runs only once `dep` exists, just in time.
   */
  const runtimeZero16 = (dep: Value): Value => {
    let z = zero16.get(dep.name);
    if (!z) {
      const v = g.reduceMax(dep, [0, 1], false);
      z = g.cast(g.sub(v, v), 'float16');
      zero16.set(dep.name, z);
    }
    return z;
  };
  const accuracyLevel = opts.accuracyLevel ?? 4;
  const perRow = (opts.int8Activations ?? 'row') === 'row';
  const channelInits = new Map<string, { data: Value; scales: Value }>();
  /** A channel-layout weight's initializers (one pair per tensor, shared by the head's uses). */
  const channelWeight = (
    name: string,
    w: QuantizedLinearSource,
  ): { data: Value; scales: Value } => {
    let v = channelInits.get(name);
    if (!v) {
      v = {
        data: external(`${name}.i8`, 'int8', [w.K, w.N], w.data),
        scales: external(`${name}.scales`, 'float32', [w.N], w.scales),
      };
      channelInits.set(name, v);
    }
    return v;
  };
  const integerGemm = (x: Value, B: Value, bScale: Value): Value =>
    emitIntegerGemm(
      g,
      x,
      B,
      bScale,
      perRow ? 'row' : 'tensor',
      opts.avoidUint8Expand === true,
      opts.int8ActivationLevels ?? 127,
    );
  const linearFrom = (
    x: Value,
    name: string,
    w: WeightSource | QuantizedLinearSource,
    bias?: Value,
    dep: Value = x,
  ): Value => {
    if ('bits' in w && w.layout === 'channel') {
      const { data, scales } = channelWeight(name, w);
      const y = integerGemm(x, data, scales);
      return bias ? g.add(y, bias) : y;
    }
    if ('bits' in w) {
      const blocks = w.K / w.blockSize;
      const data = external(
        `${name}.q${w.bits}`,
        'uint8',
        [w.N, blocks, (w.blockSize * w.bits) / 8],
        w.data,
      );
      const scales = external(`${name}.scales`, 'float32', [w.N * blocks], w.scales);
      const y = g.matMulNBits(x, data, scales, null, {
        K: w.K,
        N: w.N,
        bits: w.bits,
        blockSize: w.blockSize,
        accuracyLevel,
      });
      return bias ? g.add(y, bias) : y;
    }
    if (opts.floatWeights === 'float16' || opts.floatWeights === 'float16-compute') {
      const stored = external(name, ONNX_DTYPE[w.dtype], w.shape, w);
      const w16 = w.dtype === 'F16' ? stored : g.cast(stored, 'float16'); // folded once at load
      if (opts.floatWeights === 'float16-compute') {
        const b16 = bias ? g.cast(bias, 'float16') : undefined;
        return g.cast(g.gemmTransB(g.cast(x, 'float16'), w16, b16), 'float32');
      }
      // + a run-time zero: ORT cannot fold the upcast, so only float16 stays resident.
      return g.gemmTransB(x, g.cast(g.add(w16, runtimeZero16(dep)), 'float32'), bias);
    }
    return g.gemmTransB(x, f32(name, w), bias);
  };
  const source = (name: string): WeightSource | QuantizedLinearSource =>
    opts.quantized?.(name) ?? opts.weight(name);
  let loraCount = 0;
  /** Adds the low-rank branches of weight `name` (adapters are small: inline float32 initializers). */
  const withLora = (x: Value, name: string, y: Value): Value => {
    for (const br of opts.lora?.(name) ?? []) {
      const a = g.initializer(
        `${name}.lora_A#${loraCount}`,
        'float32',
        [br.r, br.a.length / br.r],
        br.a,
      );
      const b = g.initializer(
        `${name}.lora_B#${loraCount++}`,
        'float32',
        [br.b.length / br.r, br.r],
        br.b,
      );
      y = g.add(y, g.mul(g.gemmTransB(g.gemmTransB(x, a), b), g.scalarF32(br.scale)));
    }
    return y;
  };
  const linear = (x: Value, prefix: string, bias: boolean): Value =>
    withLora(
      x,
      `${prefix}.weight`,
      linearFrom(
        x,
        `${prefix}.weight`,
        source(`${prefix}.weight`),
        bias ? f32(`${prefix}.bias`, opts.weight(`${prefix}.bias`)) : undefined,
      ),
    );
  return {
    g,
    c: opts.config,
    opts,
    external,
    f32,
    source,
    linearFrom,
    linear,
    channelWeight,
    integerGemm,
  };
}

/** RMSNorm over the last dim with the checkpoint's weight (and bias when norms have one). */
function rmsNorm(w: Weights, x: Value, weightName: string, eps: Value): Value {
  const { g } = w;
  const ms = g.reduceMean(g.mul(x, x), [-1]);
  const normed = g.mul(x, g.reciprocal(g.sqrt(g.add(ms, eps))));
  const scaled = g.mul(normed, w.f32(weightName, w.opts.weight(weightName)));
  if (!w.c.normBias) return scaled;
  const biasName = weightName.replace(/\.weight$/, '.bias');
  return g.add(scaled, w.f32(biasName, w.opts.weight(biasName)));
}

/** Rotate-half RoPE on [..., N, hd] with cos/sin [N, hd] broadcast over the leading dims. */
function rope(g: GraphBuilder, x: Value, cos: Value, sin: Value, hd: number): Value {
  const half = hd / 2;
  const x1 = g.slice(x, [0], [half], [-1]);
  const x2 = g.slice(x, [half], [hd], [-1]);
  const rotated = g.concat([g.neg(x2), x1], -1);
  return g.add(g.mul(x, cos), g.mul(rotated, sin));
}

/** The per-call inputs besides the caches, and the ScatterND indices every layer's cache write uses. */
interface CallInputs {
  ids: Value;
  qCos: Value;
  qSin: Value;
  kvOutRows: Value;
  logitRows: Value;
  headRows: Value;
  imageSel: Value;
  rowmaxSel: Value;
  greedySel: Value;
  /** [nKv, P, 2] = (kv head, slot) for every new row. */
  scatterIdx: Value;
}

function callInputs(g: GraphBuilder, c: LladaConfig): CallInputs {
  const hd = c.headDim;
  const nKv = c.nKvHeads;
  const P = 'P';
  const ids = g.input(TRANSFORMER_INPUTS.ids, 'int64', [P]);
  const qCos = g.input(TRANSFORMER_INPUTS.qCos, 'float32', [P, hd]);
  const qSin = g.input(TRANSFORMER_INPUTS.qSin, 'float32', [P, hd]);
  const kvRows = g.input(TRANSFORMER_INPUTS.kvRows, 'int64', [P]);
  const kvOutRows = g.input(TRANSFORMER_INPUTS.kvOutRows, 'int64', ['Q']);
  const logitRows = g.input(TRANSFORMER_INPUTS.logitRows, 'int64', ['A']);
  const headRows = g.input(TRANSFORMER_INPUTS.headRows, 'int64', ['U']);
  const imageSel = g.input(TRANSFORMER_INPUTS.imageSel, 'int64', ['B']);
  const rowmaxSel = g.input(TRANSFORMER_INPUTS.rowmaxSel, 'int64', ['R']);
  const greedySel = g.input(TRANSFORMER_INPUTS.greedySel, 'int64', ['G']);

  const scatterShape = g.concat([g.constI64([nKv]), g.shape(kvRows), g.constI64([1])], 0);
  const headIdx = g.expand(
    g.constI64(
      Array.from({ length: nKv }, (_, i) => i),
      [nKv, 1, 1],
    ),
    scatterShape,
  );
  const slotIdx = g.expand(g.reshape(kvRows, [1, -1, 1]), scatterShape);
  const scatterIdx = g.concat([headIdx, slotIdx], -1);
  return {
    ids,
    qCos,
    qSin,
    kvOutRows,
    logitRows,
    headRows,
    imageSel,
    rowmaxSel,
    greedySel,
    scatterIdx,
  };
}

/**
 * Token embedding: gathered from the stored table (bf16, or 8-bit blocks of a quantized
 * checkpoint: GatherBlockQuantized dequantizes only the rows used; 8-bit blocks
 * [N, K/bs, bs] are the same bytes as [N, K]), then only those rows are upcast.
 */
function embed(w: Weights, ids: Value): Value {
  const { g } = w;
  const embedName = `${PRE}.wte.weight`;
  const qEmb = w.opts.quantized?.(embedName);
  if (qEmb && qEmb.bits === 8) {
    const blocks = qEmb.K / qEmb.blockSize;
    const data = w.external(`${embedName}.q8`, 'uint8', [qEmb.N, qEmb.K], qEmb.data);
    const scales = w.external(`${embedName}.scales`, 'float32', [qEmb.N, blocks], qEmb.scales);
    return g.gatherBlockQuantized(data, ids, scales, { blockSize: qEmb.blockSize, bits: 8 });
  }
  const emb = w.opts.weight(embedName);
  const x = g.gather(w.external(embedName, ONNX_DTYPE[emb.dtype], emb.shape, emb), ids, 0);
  return emb.dtype !== 'F32' ? g.cast(x, 'float32') : x;
}

/** Attention settings shared by every layer. */
interface AttentionShared {
  io: CallInputs;
  /** 1 / sqrt(head_dim). */
  scale: Value;
  /** KV heads whose scores are computed together. */
  kvPerGroup: number;
  /** The config's RMSNorm epsilon. */
  eps: Value;
}

/**
 * Self-attention of layer `i` on the normed input h: q/k/v projections, RoPE,
 * this call's K/V written into the cache slots, attention over all S slots, output
 * projection. Also returns the epsilon for the norms that follow: eps plus an
 * exact 0.0 made from this layer's K/V outputs, so the next layer waits for them.
 */
function attention(
  w: Weights,
  i: number,
  h: Value,
  a: AttentionShared,
): { out: Value; nextEps: Value } {
  const { g, c } = w;
  const hd = c.headDim;
  const nKv = c.nKvHeads;
  const rep = c.nHeads / c.nKvHeads;
  const { qCos, qSin, kvOutRows, scatterIdx } = a.io;
  const b = `${PRE}.blocks.${i}`;
  const qkvBias = c.includeBias || c.includeQkvBias;
  const q = w.linear(h, `${b}.q_proj`, qkvBias);
  const k = w.linear(h, `${b}.k_proj`, qkvBias);
  const v = w.linear(h, `${b}.v_proj`, qkvBias);
  // q: [P, nH*hd] -> [nKv, rep, P, hd]; head h uses kv head floor(h / rep).
  const qr = rope(g, g.transpose(g.reshape(q, [0, nKv, rep, hd]), [1, 2, 0, 3]), qCos, qSin, hd);
  const kr = rope(g, g.transpose(g.reshape(k, [0, nKv, hd]), [1, 0, 2]), qCos, qSin, hd); // [nKv, P, hd]
  const vh = g.transpose(g.reshape(v, [0, nKv, hd]), [1, 0, 2]);
  // K/V leave the graph only for the rows asked for, and the next layer waits for
  // these outputs: ORT schedules nodes that only feed graph outputs after
  // everything else, which kept every layer's K/V alive to the end of a run
  // (+1.1 GB for the 8B shape at 512x512, measured). `dep` is an exact 0.0 made
  // from the outputs' shapes and added to the next RMSNorm's epsilon.
  const kOut = g.gather(kr, kvOutRows, 1);
  const vOut = g.gather(vh, kvOutRows, 1);
  g.output(kOut, TRANSFORMER_OUTPUTS.newK(i), 'float32', [nKv, 'Q', hd]);
  g.output(vOut, TRANSFORMER_OUTPUTS.newV(i), 'float32', [nKv, 'Q', hd]);
  const dep = g.cast(
    g.reduceSum(
      g.mul(g.concat([g.shape(kOut), g.shape(vOut)], 0), g.constI64([0], [])),
      [0],
      false,
    ),
    'float32',
  );
  const nextEps = g.add(a.eps, dep);
  const pastK = g.input(TRANSFORMER_INPUTS.pastK(i), 'float32', [nKv, 'S', hd]);
  const pastV = g.input(TRANSFORMER_INPUTS.pastV(i), 'float32', [nKv, 'S', hd]);
  const kAll = g.unsqueeze(g.scatterND(pastK, scatterIdx, kr), [1]); // [nKv, 1, S, hd]
  const vAll = g.unsqueeze(g.scatterND(pastV, scatterIdx, vh), [1]);
  // Attention over groups of kv heads, one after the other, so that only one
  // group's [heads, P, S] scores are alive at a time (peak memory).
  const groups: Value[] = [];
  const per = a.kvPerGroup;
  for (let h0 = 0; h0 < nKv; h0 += per) {
    const h1 = Math.min(nKv, h0 + per);
    const part = (x: Value): Value => (per >= nKv ? x : g.slice(x, [h0], [h1], [0]));
    const scores = g.mul(g.matmul(part(qr), g.transpose(part(kAll), [0, 1, 3, 2])), a.scale); // [nKv, rep, P, S]
    groups.push(g.matmul(g.softmax(scores, -1), part(vAll))); // [nKv, rep, P, hd]
  }
  const ctx = groups.length === 1 ? groups[0]! : g.concat(groups, 0);
  const merged = g.reshape(g.transpose(ctx, [2, 0, 1, 3]), [0, c.dModel]);
  return { out: w.linear(merged, `${b}.attn_out`, c.includeBias), nextEps };
}

/** SwiGLU MLP of block `b`: ff_out(silu(ff_proj(f)) * up_proj(f)). */
function mlp(w: Weights, b: string, f: Value): Value {
  const { g, c } = w;
  const gate = w.linear(f, `${b}.ff_proj`, c.includeBias);
  const up = w.linear(f, `${b}.up_proj`, c.includeBias);
  const act = g.mul(g.mul(gate, g.sigmoid(gate)), up);
  return w.linear(act, `${b}.ff_out`, c.includeBias);
}

/** One transformer block (pre-norm): x + attn(norm(x)), then + mlp(norm(.)). */
function block(
  w: Weights,
  i: number,
  x: Value,
  normEps: Value,
  a: AttentionShared,
): { x: Value; eps: Value } {
  const { g } = w;
  const b = `${PRE}.blocks.${i}`;
  const { out, nextEps } = attention(w, i, rmsNorm(w, x, `${b}.attn_norm.weight`, normEps), a);
  const hRes = g.add(x, out);
  const f = rmsNorm(w, hRes, `${b}.ff_norm.weight`, nextEps);
  return { x: g.add(hRes, mlp(w, b, f)), eps: nextEps };
}

/**
 * The output head on the final hidden rows: full-vocabulary logits (in row chunks
 * whose float32 copies ORT can fold), the greedy-text reductions, and image logits
 * with their row maxima.
 */
function heads(w: Weights, final: Value, io: CallInputs): void {
  const { g, c, opts } = w;
  const embedName = `${PRE}.wte.weight`;
  const headName = c.weightTying ? embedName : `${PRE}.ff_out.weight`;
  const headBiasName = c.includeBias && !c.weightTying ? `${PRE}.ff_out.bias` : undefined;
  const head = w.source(headName);
  const headBias = headBiasName ? opts.weight(headBiasName) : undefined;
  const V = c.embeddingSize;
  /** Head rows [start, end) applied to x. */
  const headPart = (xIn: Value, start: number, end: number): Value => {
    if ('bits' in head && head.layout === 'channel') {
      // Columns [start, end) of the [K, V] codes: a Slice of the shared initializer that
      // ORT folds once at load (the image head: 8192 x d_model bytes).
      const { data, scales } = w.channelWeight(headName, head);
      const whole = start === 0 && end === V;
      const B = whole ? data : g.slice(data, [start], [end], [1]);
      const s = whole ? scales : g.slice(scales, [start], [end], [0]);
      const y = w.integerGemm(xIn, B, s); // xIn may have 0 rows
      return headBias
        ? g.add(y, w.f32(`${headBiasName}[${start}:${end}]`, weightRows(headBias, start, end)))
        : y;
    }
    const wr = 'bits' in head ? quantizedRows(head, start, end) : weightRows(head, start, end);
    const bias = headBias
      ? w.f32(`${headBiasName}[${start}:${end}]`, weightRows(headBias, start, end))
      : undefined;
    return w.linearFrom(xIn, `${headName}[${start}:${end}]`, wr, bias, final); // xIn may have 0 rows
  };

  const textIn = g.gather(final, io.logitRows, 0);
  const chunkRows =
    'bits' in head
      ? V
      : Math.max(1, Math.floor((opts.headChunkBytes ?? 256 * 2 ** 20) / (c.dModel * 4)));
  const parts: Value[] = [];
  for (let s = 0; s < V; s += chunkRows)
    parts.push(headPart(textIn, s, Math.min(V, s + chunkRows)));
  const logits = parts.length === 1 ? parts[0]! : g.concat(parts, 1);
  g.output(logits, TRANSFORMER_OUTPUTS.logits, 'float32', ['A', V]);
  greedyText(g, logits, io.greedySel, V, opts.padEmptyReductions === true);

  const start = opts.imageVocabStart;
  const imageLogits = headPart(g.gather(final, io.headRows, 0), start, start + opts.imageVocabSize); // [U, 8192]
  g.output(g.gather(imageLogits, io.imageSel, 0), TRANSFORMER_OUTPUTS.imageLogits, 'float32', [
    'B',
    opts.imageVocabSize,
  ]);
  g.output(
    g.gather(g.reduceMax(imageLogits, [-1], false), io.rowmaxSel, 0),
    TRANSFORMER_OUTPUTS.imageRowMax,
    'float32',
    ['R'],
  );
}

/**
 * Greedy text decoding needs only each row's argmax and its softmax probability
 * exp(0) / (ties + rest): reduced here, so no [G, V] logits leave the graph.
 * `rest` sums the non-maximal terms on their own (near 1e-8 it would vanish next
 * to the max's 1 in float32), so the caller's float64 1 / (ties + rest) keeps
 * the precision the confidence ranking needs.
 * WebGPU refuses reductions over an empty tensor (G = 0 in every image call): there one
 * spare zero row keeps them non-empty and is sliced off. Not on CPU, where it cost
 * 0.4 ms per call (10% of a golden-tiny forward).
 */
function greedyText(
  g: GraphBuilder,
  logits: Value,
  greedySel: Value,
  V: number,
  pad: boolean,
): void {
  const selected = g.gather(logits, greedySel, 0); // [G, V]
  const gl = pad ? g.concat([selected, g.expand(g.scalarF32(0), g.constI64([1, V]))], 0) : selected;
  const gMax = g.reduceMax(gl, [-1], true);
  const isMax = g.equal(gl, gMax);
  const others = g.where(isMax, g.scalarF32(0), g.exp(g.sub(gl, gMax)));
  const firstG = (x: Value): Value => (pad ? g.slice(x, [0], g.shape(greedySel), [0]) : x);
  g.output(firstG(g.argMax(gl, -1)), TRANSFORMER_OUTPUTS.textArgmax, 'int64', ['G']);
  // Summed in 256-wide pieces, then the pieces: a plain float32 sum over ~1e5 terms
  // drifted by 2e-5 relative on the golden rows, two levels by 1.5e-7.
  const width = Math.ceil(V / 256) * 256;
  const pieces = g.reshape(width === V ? others : g.pad(others, [0, 0, 0, width - V]), [
    0,
    width / 256,
    256,
  ]);
  const rest = g.reduceSum(g.reduceSum(pieces, [-1], false), [-1], false);
  g.output(firstG(rest), TRANSFORMER_OUTPUTS.textRest, 'float32', ['G']);
  g.output(
    firstG(g.reduceSum(g.cast(isMax, 'float32'), [-1], false)),
    TRANSFORMER_OUTPUTS.textTies,
    'float32',
    ['G'],
  );
}

export function buildTransformerGraph(opts: TransformerGraphOptions): Uint8Array {
  const { config: c } = opts;
  const g = new GraphBuilder('dimoo_transformer');
  const w = weightsFor(g, opts);
  const eps = g.scalarF32(c.rmsNormEps);
  const io = callInputs(g, c);
  let x = embed(w, io.ids);
  const rep = c.nHeads / c.nKvHeads;
  const a: AttentionShared = {
    io,
    eps,
    kvPerGroup: Math.max(1, Math.floor((opts.attentionHeadsPerGroup ?? 8) / rep)),
    scale: g.scalarF32(1 / Math.sqrt(c.headDim)),
  };
  let normEps = eps;
  for (let i = 0; i < c.nLayers; i++) ({ x, eps: normEps } = block(w, i, x, normEps, a));
  heads(w, rmsNorm(w, x, `${PRE}.ln_f.weight`, normEps), io);
  return g.toBytes(`DiMOO transformer: ${c.nLayers} layers, d_model ${c.dModel}`);
}
