/**
 * The DiMOO (LLaDA) transformer as one ONNX graph.
 *
 * One graph serves every way the samplers call the model, so the weights are
 * loaded once:
 *  - `ids` [P] are the tokens to compute, `q_cos`/`q_sin` [P, head_dim] the RoPE
 *    tables at their absolute positions (computed by the caller, so positions
 *    can be anything, also beyond max_sequence_length).
 *  - Per layer, `past_k_i`/`past_v_i` [C, kv_dim] are cached keys/values
 *    (pre-RoPE, as the original ML-Cache keeps them) of the C positions that
 *    are NOT recomputed, with `past_cos`/`past_sin` [C, head_dim]. A plain
 *    forward passes C = 0. Attention has no mask, so key order does not matter:
 *    keys are concat(past, new).
 *  - Outputs `new_k_i`/`new_v_i` [P, kv_dim] (pre-RoPE) let the caller refresh
 *    its cache; request them only when caching.
 *  - Logits are produced only where asked: full-vocabulary rows at
 *    `logit_rows` [A], image-vocabulary rows at `image_rows` [B], and the max
 *    image logit of rows `rowmax_rows` [R] (indices into the P computed
 *    positions). Pass empty index lists for what is not needed.
 */
import type { LladaConfig } from './config.js';
import { GraphBuilder, type DType, type Value } from './onnx/builder.js';

/** Where one weight's bytes are, as the checkpoint reader reports them. */
export interface WeightSource {
  dtype: 'BF16' | 'F16' | 'F32';
  shape: number[];
  /** File name relative to the model's external-data folder. */
  location: string;
  byteOffset: number;
  byteLength: number;
}

export interface TransformerGraphOptions {
  config: LladaConfig;
  /** Resolves a checkpoint tensor name to its bytes; throws if absent. */
  weight: (name: string) => WeightSource;
  /** First id and size of the image-token block of the vocabulary. */
  imageVocabStart: number;
  imageVocabSize: number;
}

export const TRANSFORMER_INPUTS = {
  ids: 'ids',
  qCos: 'q_cos',
  qSin: 'q_sin',
  pastCos: 'past_cos',
  pastSin: 'past_sin',
  logitRows: 'logit_rows',
  imageRows: 'image_rows',
  rowmaxRows: 'rowmax_rows',
  pastK: (i: number) => `past_k_${i}`,
  pastV: (i: number) => `past_v_${i}`,
} as const;

export const TRANSFORMER_OUTPUTS = {
  logits: 'logits',
  imageLogits: 'image_logits',
  imageRowMax: 'image_row_max',
  newK: (i: number) => `new_k_${i}`,
  newV: (i: number) => `new_v_${i}`,
} as const;

const ONNX_DTYPE: Record<WeightSource['dtype'], DType> = { BF16: 'bfloat16', F16: 'float16', F32: 'float32' };

export function buildTransformerGraph(opts: TransformerGraphOptions): Uint8Array {
  const { config: c } = opts;
  const g = new GraphBuilder('dimoo_transformer');
  const hd = c.headDim;
  const kvDim = c.nKvHeads * hd;
  const rep = c.nHeads / c.nKvHeads;
  const P = 'P';
  const C = 'C';

  /** A weight in its stored dtype (external data, zero-copy). */
  const raw = (name: string): Value => {
    const w = opts.weight(name);
    return g.external(name, ONNX_DTYPE[w.dtype], w.shape, {
      location: w.location,
      offset: w.byteOffset,
      length: w.byteLength,
    });
  };
  /** A weight as float32; the Cast of a constant is folded once at session load. */
  const f32 = (name: string): Value => {
    const w = raw(name);
    return opts.weight(name).dtype === 'F32' ? w : g.cast(w, 'float32');
  };
  const linear = (x: Value, prefix: string, bias: boolean): Value =>
    g.gemmTransB(x, f32(`${prefix}.weight`), bias ? f32(`${prefix}.bias`) : undefined);

  const eps = g.scalarF32(c.rmsNormEps);
  const rmsNorm = (x: Value, weightName: string): Value => {
    const ms = g.reduceMean(g.mul(x, x), [-1]);
    const normed = g.mul(x, g.reciprocal(g.sqrt(g.add(ms, eps))));
    const scaled = g.mul(normed, f32(weightName));
    return c.normBias ? g.add(scaled, f32(weightName.replace(/\.weight$/, '.bias'))) : scaled;
  };

  // rotate-half RoPE on [heads, N, hd] with cos/sin [N, hd] broadcast over heads.
  const half = hd / 2;
  const rope = (x: Value, cos: Value, sin: Value): Value => {
    const x1 = g.slice(x, [0], [half], [-1]);
    const x2 = g.slice(x, [half], [hd], [-1]);
    const rotated = g.concat([g.neg(x2), x1], -1);
    return g.add(g.mul(x, cos), g.mul(rotated, sin));
  };

  const ids = g.input(TRANSFORMER_INPUTS.ids, 'int64', [P]);
  const qCos = g.input(TRANSFORMER_INPUTS.qCos, 'float32', [P, hd]);
  const qSin = g.input(TRANSFORMER_INPUTS.qSin, 'float32', [P, hd]);
  const pastCos = g.input(TRANSFORMER_INPUTS.pastCos, 'float32', [C, hd]);
  const pastSin = g.input(TRANSFORMER_INPUTS.pastSin, 'float32', [C, hd]);
  const logitRows = g.input(TRANSFORMER_INPUTS.logitRows, 'int64', ['A']);
  const imageRows = g.input(TRANSFORMER_INPUTS.imageRows, 'int64', ['B']);
  const rowmaxRows = g.input(TRANSFORMER_INPUTS.rowmaxRows, 'int64', ['R']);
  const keyCos = g.concat([pastCos, qCos], 0);
  const keySin = g.concat([pastSin, qSin], 0);

  const pre = 'model.transformer';
  const embedName = `${pre}.wte.weight`;
  // Gather from the stored (bf16) table, then upcast only the rows used.
  const embRaw = raw(embedName);
  let x = g.gather(embRaw, ids, 0);
  if (opts.weight(embedName).dtype !== 'F32') x = g.cast(x, 'float32');

  const qkvBias = c.includeBias || c.includeQkvBias;
  const scale = g.scalarF32(1 / Math.sqrt(hd));
  for (let i = 0; i < c.nLayers; i++) {
    const b = `${pre}.blocks.${i}`;
    const h = rmsNorm(x, `${b}.attn_norm.weight`);
    const q = linear(h, `${b}.q_proj`, qkvBias);
    const k = linear(h, `${b}.k_proj`, qkvBias);
    const v = linear(h, `${b}.v_proj`, qkvBias);
    g.output(k, TRANSFORMER_OUTPUTS.newK(i), 'float32', [P, kvDim]);
    g.output(v, TRANSFORMER_OUTPUTS.newV(i), 'float32', [P, kvDim]);
    const pastK = g.input(TRANSFORMER_INPUTS.pastK(i), 'float32', [C, kvDim]);
    const pastV = g.input(TRANSFORMER_INPUTS.pastV(i), 'float32', [C, kvDim]);
    const kAll = g.concat([pastK, k], 0); // [L, kvDim]
    const vAll = g.concat([pastV, v], 0);

    // q: [P, nH*hd] -> [nKv, rep, P, hd]; head h uses kv head floor(h / rep).
    const qh = g.transpose(g.reshape(q, [0, c.nKvHeads, rep, hd]), [1, 2, 0, 3]);
    const qr = rope(qh, qCos, qSin);
    // k: [L, kvDim] -> [nKv, 1, L, hd]
    const kh = g.unsqueeze(g.transpose(g.reshape(kAll, [0, c.nKvHeads, hd]), [1, 0, 2]), [1]);
    const kr = rope(kh, keyCos, keySin);
    const vh = g.unsqueeze(g.transpose(g.reshape(vAll, [0, c.nKvHeads, hd]), [1, 0, 2]), [1]);
    const scores = g.mul(g.matmul(qr, g.transpose(kr, [0, 1, 3, 2])), scale); // [nKv, rep, P, L]
    const ctx = g.matmul(g.softmax(scores, -1), vh); // [nKv, rep, P, hd]
    const merged = g.reshape(g.transpose(ctx, [2, 0, 1, 3]), [0, c.dModel]);
    const attnOut = linear(merged, `${b}.attn_out`, c.includeBias);
    const hRes = g.add(x, attnOut);

    const f = rmsNorm(hRes, `${b}.ff_norm.weight`);
    const gate = linear(f, `${b}.ff_proj`, c.includeBias);
    const up = linear(f, `${b}.up_proj`, c.includeBias);
    const act = g.mul(g.mul(gate, g.sigmoid(gate)), up);
    x = g.add(hRes, linear(act, `${b}.ff_out`, c.includeBias));
  }
  const final = rmsNorm(x, `${pre}.ln_f.weight`);

  const headName = c.weightTying ? embedName : `${pre}.ff_out.weight`;
  const headBias = c.includeBias && !c.weightTying ? f32(`${pre}.ff_out.bias`) : undefined;
  const head = f32(headName);
  g.output(g.gemmTransB(g.gather(final, logitRows, 0), head, headBias), TRANSFORMER_OUTPUTS.logits, 'float32', ['A', c.embeddingSize]);

  const start = opts.imageVocabStart;
  const end = start + opts.imageVocabSize;
  const imgHead = g.slice(head, [start], [end], [0]);
  const imgBias = headBias ? g.slice(headBias, [start], [end], [0]) : undefined;
  g.output(g.gemmTransB(g.gather(final, imageRows, 0), imgHead, imgBias), TRANSFORMER_OUTPUTS.imageLogits, 'float32', ['B', opts.imageVocabSize]);
  const rowmaxLogits = g.gemmTransB(g.gather(final, rowmaxRows, 0), imgHead, imgBias);
  g.output(g.reduceMax(rowmaxLogits, [-1], false), TRANSFORMER_OUTPUTS.imageRowMax, 'float32', ['R']);

  return g.toBytes(`DiMOO transformer: ${c.nLayers} layers, d_model ${c.dModel}`);
}
