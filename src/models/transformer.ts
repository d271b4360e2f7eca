/**
 * Runs the DiMOO transformer graph on ONNX Runtime.
 *
 * `forward` is the one entry point: tokens to compute at absolute positions,
 * optionally attending to a key/value cache of the whole sequence (ML-Cache,
 * dual cache), with logits only where the caller asks. Weights stay in the
 * checkpoint's .safetensors files (external data); bf16/f16 linears are
 * upcast once when the session loads (ORT folds the Cast of a constant), the
 * embedding stays in its stored dtype and only gathered rows are upcast.
 * Quantized checkpoints (checkpoint/quantized.ts) run their linears as MatMulNBits.
 */
import { DimooError } from '../errors.js';
import type { LladaConfig } from '../checkpoint/config.js';
import { loadLoraAdapters, type LoraRef } from '../checkpoint/lora.js';
import type { QuantizedLinear } from '../checkpoint/quantized.js';
import {
  createSession,
  Tensor,
  type InferenceSession,
  requireFp16,
  int8GemmSaturates,
  type Device,
} from './device.js';
import { ropeInvFreq, ropeTables } from '../graph/rope.js';
import { weightSources } from './weight-sources.js';
import {
  buildTransformerGraph,
  TRANSFORMER_INPUTS as IN,
  TRANSFORMER_OUTPUTS as OUT,
  type QuantizedLinearSource,
} from '../graph/transformer.js';

/** What the transformer needs from an opened checkpoint. */
export interface TransformerCheckpoint {
  dir: string;
  config: LladaConfig;
  weights: Map<
    string,
    { dtype: string; shape: number[]; file: string; byteOffset: number; byteLength: number }
  >;
  /** Quantized linears by weight name (a repacked checkpoint, see checkpoint/quantized.ts); used instead of `weights`. */
  quantized?: Map<string, QuantizedLinear>;
}

export type { Device } from './device.js';

export interface TransformerLoadOptions {
  /** Intra-op threads (default: ORT's choice, all cores). */
  threads?: number;
  device?: Device;
  /** Size of the image-token block at the end of the vocabulary (VQ codebook size). */
  imageVocabSize?: number;
  /** Quantized checkpoints: MatMulNBits accuracy_level (default 4 = int8 activations, fastest; 0 = float activations). */
  accuracyLevel?: number;
  /**
   * Quantized checkpoints: let MatMulNBits repack its blocks at load (faster
   * kernels, a load of seconds and a private copy of the weights) instead of
   * reading them in place from the memory-mapped file. Default: see
   * defaultQuantPrepack (yes for int8, no for int4; docs/performance.md has the numbers).
   */
  prepack?: boolean;
  /**
   * qgemm checkpoints: activation scales of the integer GEMM, one per row
   * (default; env DIMOO_INT8_ACTIVATIONS=row|tensor overrides) or one per
   * tensor (DynamicQuantizeMatMul). docs/performance.md has both measured.
   */
  int8Activations?: 'row' | 'tensor';
  /** Float32 bytes per row chunk of the full output head (default 256 MiB; tests use small ones). */
  headChunkBytes?: number;
  /**
   * Float weights on the device (WebGPU with shader-f16 for the fp16 forms):
   * fp32 (default); fp16 keeps them float16 (half the memory) and upcasts each
   * per run, so results match fp32; fp16-compute also runs the matmuls in
   * float16 (logits off by ~1e-2, see docs/gpu.md).
   */
  precision?: 'fp32' | 'fp16' | 'fp16-compute';
  /** LoRA adapters (PEFT folders) added to the linears on the fly. */
  lora?: readonly LoraRef[];
}

/**
 * Keys/values of S slots (usually: every position of a sequence, slot =
 * position), per layer [nKvHeads, S, headDim]; keys have RoPE applied.
 */
export interface KvCache {
  slots: number;
  k: Float32Array[];
  v: Float32Array[];
}

export interface ForwardRequest {
  /** Token ids to compute. */
  ids: ArrayLike<number>;
  /** Absolute position of each id (default 0..P-1). */
  positions?: ArrayLike<number>;
  /**
   * Attend to every slot of this cache, with this call's keys/values written
   * into slots `slots` first (inside the graph; the arrays are not modified).
   * Without a cache the ids attend to each other only.
   */
  cache?: KvCache;
  /** Cache slot of each id (default: its position); distinct, in [0, cache.slots). */
  slots?: ArrayLike<number>;
  /** Rows (indices into `ids`) that need full-vocabulary logits. */
  logitRows?: ArrayLike<number>;
  /** Rows that need image-vocabulary logits. */
  imageRows?: ArrayLike<number>;
  /** Rows whose max image logit is wanted. */
  rowmaxRows?: ArrayLike<number>;
  /**
   * Rows that need only the argmax over the full vocabulary (first index of
   * the maximum) and its softmax probability: reduced inside the graph.
   */
  argmaxRows?: ArrayLike<number>;
  /** Return this call's keys (with RoPE) and values to refresh a cache. */
  wantKv?: boolean;
}

/** Every output `forward` can return; each is there exactly when its request field is. */
export interface ForwardOutputs {
  /** [logitRows.length, embeddingSize] */
  logits?: Float32Array;
  /** [imageRows.length, imageVocabSize] */
  imageLogits?: Float32Array;
  /** [rowmaxRows.length] */
  imageRowMax?: Float32Array;
  /** [argmaxRows.length] token id of each row's maximum logit (first one on ties). */
  argmax?: Int32Array;
  /** [argmaxRows.length] softmax probability of that token, in float64 from in-graph float32 sums. */
  argmaxProb?: Float64Array;
  /**
   * Per layer [nKvHeads, P, headDim] (keys with RoPE), when wantKv: for a
   * plain forward over a whole sequence this is exactly a KvCache's layout.
   */
  newK?: Float32Array[];
  newV?: Float32Array[];
}

/**
 * What `forward(req)` returns, typed by what `req` asks for: an output whose
 * request field the caller set (rows given, wantKv: true) is not optional.
 */
export type ForwardResult<R extends ForwardRequest = ForwardRequest> = ForwardOutputs &
  (R extends { logitRows: ArrayLike<number> } ? { logits: Float32Array } : unknown) &
  (R extends { imageRows: ArrayLike<number> } ? { imageLogits: Float32Array } : unknown) &
  (R extends { rowmaxRows: ArrayLike<number> } ? { imageRowMax: Float32Array } : unknown) &
  (R extends { argmaxRows: ArrayLike<number> }
    ? { argmax: Int32Array; argmaxProb: Float64Array }
    : unknown) &
  (R extends { wantKv: true } ? { newK: Float32Array[]; newV: Float32Array[] } : unknown);

/** Whether quantized checkpoints repack their blocks at load unless told (env DIMOO_QUANT_PREPACK=0/1 overrides). */
export function defaultQuantPrepack(bits: 4 | 8): boolean {
  const env = process.env.DIMOO_QUANT_PREPACK;
  if (env === '0' || env === '1') return env === '1';
  // Measured on the 8B shape at 512x512 (docs/performance.md): int8 prepacked runs a step
  // 2.8x faster within the 10 GB budget (9.1 GB peak, 20 s load); int4 prepacked is barely
  // faster and needs 8.6 GB, unpacked 5.4 GB.
  return bits === 8;
}

/** Activation scales of qgemm linears unless told (env DIMOO_INT8_ACTIVATIONS=row|tensor). */
export function defaultInt8Activations(): 'row' | 'tensor' {
  const env = process.env.DIMOO_INT8_ACTIVATIONS;
  return env === 'tensor' ? 'tensor' : 'row';
}

function i64(values: ArrayLike<number>): Tensor {
  const a = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) a[i] = BigInt(values[i]!);
  return new Tensor('int64', a, [values.length]);
}

/** 0, 1, ..., n-1. */
export function iota(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

export class Transformer {
  readonly imageVocabStart: number;
  readonly imageVocabSize: number;
  readonly kvDim: number;
  /** Bits of the quantized linears (undefined: float weights). */
  readonly quantBits: 4 | 8 | undefined;
  private readonly invFreq: Float32Array;
  /** Zeros standing in for the past of a cache-less call (every slot is overwritten). */
  private scratch = new Float32Array(0);

  private constructor(
    readonly config: LladaConfig,
    private readonly session: InferenceSession,
    imageVocabSize: number,
    readonly device: Device,
    quantBits?: 4 | 8,
    /** Whether kernels repacked the weights at load (quantized checkpoints may run them in place). */
    readonly prepacked = true,
  ) {
    this.imageVocabSize = imageVocabSize;
    // The original learns the text-vocabulary size from the logits width.
    this.imageVocabStart = config.embeddingSize - imageVocabSize;
    this.kvDim = config.nKvHeads * config.headDim;
    this.invFreq = ropeInvFreq(config.headDim, config.ropeTheta);
    this.quantBits = quantBits;
  }

  static async load(
    ckpt: TransformerCheckpoint,
    opts: TransformerLoadOptions = {},
  ): Promise<Transformer> {
    const imageVocabSize = opts.imageVocabSize ?? 8192;
    const c = ckpt.config;
    if (imageVocabSize >= c.embeddingSize) {
      throw new DimooError(
        `config.json: embedding_size ${c.embeddingSize} leaves no room for ${imageVocabSize} image tokens`,
        'E_CONFIG',
      );
    }
    const sources = weightSources(ckpt);
    const dataFolder = sources.folder;
    const weight = sources.weight;
    let quantBits: 4 | 8 | undefined;
    const quantized = (name: string): QuantizedLinearSource | undefined => {
      const q = sources.quantized(name);
      if (q) quantBits = quantBits === undefined ? q.bits : (Math.min(quantBits, q.bits) as 4 | 8);
      return q;
    };
    const device = opts.device ?? 'cpu';
    const precision = opts.precision ?? 'fp32';
    const adapters = opts.lora?.length ? loadLoraAdapters(opts.lora, c) : undefined;
    if (precision !== 'fp32') await requireFp16(device, precision);
    const int8Activations = opts.int8Activations ?? defaultInt8Activations();
    const saturates = int8GemmSaturates();
    // DynamicQuantizeMatMul quantizes to 8 bits inside ORT: nothing to narrow.
    const channel = [...(ckpt.quantized?.values() ?? [])].some((q) => q.layout === 'channel');
    if (saturates && int8Activations === 'tensor' && channel)
      throw new DimooError(
        "per-tensor int8 activations (DynamicQuantizeMatMul) overflow on this CPU's integer GEMM (x86 without VNNI): use per-row activations ('row', the default)",
        'E_PARAM',
      );
    const bytes = buildTransformerGraph({
      config: c,
      weight,
      floatWeights:
        precision === 'fp16'
          ? 'float16'
          : precision === 'fp16-compute'
            ? 'float16-compute'
            : 'float32',
      quantized: ckpt.quantized ? quantized : undefined,
      accuracyLevel: opts.accuracyLevel,
      int8Activations,
      int8ActivationLevels: saturates ? 63 : 127,
      headChunkBytes: opts.headChunkBytes,
      padEmptyReductions: device === 'webgpu',
      avoidUint8Expand: device === 'webgpu',
      lora: adapters ? (name) => adapters.get(name) : undefined,
      imageVocabStart: c.embeddingSize - imageVocabSize,
      imageVocabSize,
    });
    const prepack =
      quantBits === undefined ? true : (opts.prepack ?? defaultQuantPrepack(quantBits));
    const session = await createSession(
      bytes,
      // Quantized blocks: repacked at load or used in place from the memory-mapped file (device.ts `prepack`).
      {
        device,
        threads: opts.threads,
        externalDataFolder: dataFolder,
        prepack,
        memPattern: device === 'cpu' ? false : undefined,
      },
      `${ckpt.dir}: ONNX Runtime could not load the transformer`,
    );
    return new Transformer(c, session, imageVocabSize, device, quantBits, prepack);
  }

  /** RoPE cos/sin for absolute positions, [n, headDim]. */
  rope(positions: ArrayLike<number>): { cos: Float32Array; sin: Float32Array } {
    return ropeTables(positions, this.invFreq);
  }

  /** Writes a forward's newK/newV ([nKv, P, hd] per layer) into `cache` at `slots` (one per row). */
  writeKv(
    cache: KvCache,
    slots: ArrayLike<number>,
    newK: Float32Array[],
    newV: Float32Array[],
  ): void {
    const hd = this.config.headDim;
    const nKv = this.config.nKvHeads;
    const P = slots.length;
    const S = cache.slots;
    for (let layer = 0; layer < cache.k.length; layer++) {
      const dk = cache.k[layer]!;
      const dv = cache.v[layer]!;
      const sk = newK[layer]!;
      const sv = newV[layer]!;
      for (let h = 0; h < nKv; h++) {
        for (let i = 0; i < P; i++) {
          const src = (h * P + i) * hd;
          const dst = (h * S + slots[i]!) * hd;
          dk.set(sk.subarray(src, src + hd), dst);
          dv.set(sv.subarray(src, src + hd), dst);
        }
      }
    }
  }

  private zeros(n: number): Float32Array {
    if (this.scratch.length < n) this.scratch = new Float32Array(n);
    return this.scratch.subarray(0, n);
  }

  async forward<R extends ForwardRequest>(req: R): Promise<ForwardResult<R>> {
    const c = this.config;
    const P = req.ids.length;
    const hd = c.headDim;
    const nKv = c.nKvHeads;
    const positions = req.positions ?? iota(P);
    if (positions.length !== P) throw new Error('forward: positions and ids differ in length');
    const q = this.rope(positions);
    const cache = req.cache;
    const S = cache ? cache.slots : P;
    const slots = cache ? (req.slots ?? positions) : iota(P);
    if (slots.length !== P) throw new Error('forward: slots and ids differ in length');
    if (cache) {
      const seen = new Uint8Array(S);
      for (let i = 0; i < P; i++) {
        const s = slots[i]!;
        if (!(s >= 0 && s < S) || seen[s])
          throw new Error(`forward: slot ${s} is out of range or repeated`);
        seen[s] = 1;
      }
    }
    // Image logits are computed once for the union of imageRows and rowmaxRows.
    const imageRows = req.imageRows ?? [];
    const rowmaxRows = req.rowmaxRows ?? [];
    let headRows: number[];
    let imageSel: ArrayLike<number>;
    let rowmaxSel: ArrayLike<number>;
    if (rowmaxRows.length === 0) {
      headRows = Array.from(imageRows);
      imageSel = iota(imageRows.length);
      rowmaxSel = [];
    } else {
      const index = new Map<number, number>();
      headRows = [];
      const at = (r: number): number => {
        let i = index.get(r);
        if (i === undefined) {
          i = headRows.length;
          index.set(r, i);
          headRows.push(r);
        }
        return i;
      };
      rowmaxSel = Array.from(rowmaxRows, at);
      imageSel = Array.from(imageRows, at);
    }
    // ORT runs every node, fetched or not, and WebGPU's ReduceMax refuses an empty input: one spare row there.
    if (headRows.length === 0 && this.device === 'webgpu') headRows = [0];
    // Argmax rows are computed as extra logit rows (after the requested ones) and reduced in the graph.
    const logitRows = req.logitRows ?? [];
    const argmaxRows = req.argmaxRows ?? [];
    const allLogitRows = argmaxRows.length
      ? [...Array.from(logitRows), ...Array.from(argmaxRows)]
      : logitRows;
    const greedySel = argmaxRows.length
      ? iota(argmaxRows.length).map((i) => i + logitRows.length)
      : [];
    const feeds: Record<string, Tensor> = {
      [IN.ids]: i64(req.ids),
      [IN.qCos]: new Tensor('float32', q.cos, [P, hd]),
      [IN.qSin]: new Tensor('float32', q.sin, [P, hd]),
      [IN.kvRows]: i64(slots),
      // WebGPU gets one spare row rather than an empty tensor (as for ReduceMax below).
      [IN.kvOutRows]: i64(req.wantKv ? iota(P) : this.device === 'webgpu' ? [0] : []),
      [IN.logitRows]: i64(allLogitRows),
      [IN.greedySel]: i64(greedySel),
      [IN.headRows]: i64(headRows),
      [IN.imageSel]: i64(imageSel),
      [IN.rowmaxSel]: i64(rowmaxSel),
    };
    const n = nKv * S * hd;
    const zeros = cache ? undefined : new Tensor('float32', this.zeros(n), [nKv, S, hd]);
    for (let i = 0; i < c.nLayers; i++) {
      if (cache && (cache.k[i]!.length !== n || cache.v[i]!.length !== n)) {
        throw new Error(`forward: cache layer ${i} does not hold ${S} slots`);
      }
      feeds[IN.pastK(i)] = zeros ?? new Tensor('float32', cache!.k[i]!, [nKv, S, hd]);
      feeds[IN.pastV(i)] = zeros ?? new Tensor('float32', cache!.v[i]!, [nKv, S, hd]);
    }
    const fetches: string[] = [];
    if (logitRows.length) fetches.push(OUT.logits);
    if (argmaxRows.length) fetches.push(OUT.textArgmax, OUT.textRest, OUT.textTies);
    if (imageRows.length) fetches.push(OUT.imageLogits);
    if (rowmaxRows.length) fetches.push(OUT.imageRowMax);
    if (req.wantKv) for (let i = 0; i < c.nLayers; i++) fetches.push(OUT.newK(i), OUT.newV(i));
    if (fetches.length === 0) fetches.push(OUT.imageRowMax);
    const out = await this.session.run(feeds, fetches);
    const f32 = (name: string) => out[name]!.data as Float32Array;
    // Every output asked for is returned (empty when its rows are), so ForwardResult<R> holds.
    const res: ForwardOutputs = {};
    if (req.logitRows) {
      const all = logitRows.length ? f32(OUT.logits) : new Float32Array(0);
      res.logits = argmaxRows.length ? all.subarray(0, logitRows.length * c.embeddingSize) : all;
    }
    if (req.argmaxRows) {
      const ids = argmaxRows.length
        ? (out[OUT.textArgmax]!.data as BigInt64Array)
        : new BigInt64Array(0);
      const rest = argmaxRows.length ? f32(OUT.textRest) : new Float32Array(0);
      const ties = argmaxRows.length ? f32(OUT.textTies) : new Float32Array(0);
      res.argmax = Int32Array.from(ids, Number);
      res.argmaxProb = Float64Array.from(rest, (r, i) => 1 / (ties[i]! + r));
    }
    if (req.imageRows)
      res.imageLogits = imageRows.length ? f32(OUT.imageLogits) : new Float32Array(0);
    if (req.rowmaxRows)
      res.imageRowMax = rowmaxRows.length ? f32(OUT.imageRowMax) : new Float32Array(0);
    if (req.wantKv) {
      res.newK = [];
      res.newV = [];
      for (let i = 0; i < c.nLayers; i++) {
        res.newK.push(f32(OUT.newK(i)));
        res.newV.push(f32(OUT.newV(i)));
      }
    }
    return res as ForwardResult<R>;
  }

  async dispose(): Promise<void> {
    await this.session.release();
  }
}
