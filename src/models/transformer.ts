/**
 * Runs the DiMOO transformer graph on ONNX Runtime.
 *
 * `forward` is the one entry point: tokens to compute at absolute positions,
 * optionally attending to cached keys/values of other positions, with logits
 * only where the caller asks. Weights stay in the checkpoint's .safetensors
 * files (external data); bf16/f16 linears are upcast once when the session
 * loads (ORT folds the Cast of a constant), the embedding stays in its stored
 * dtype and only gathered rows are upcast.
 */
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { DimooError } from '../errors.js';
import type { LladaConfig } from './config.js';
import { createSession, type Device } from './device.js';
import { ropeInvFreq, ropeTables } from './rope.js';
import {
  buildTransformerGraph,
  TRANSFORMER_INPUTS as IN,
  TRANSFORMER_OUTPUTS as OUT,
  type WeightSource,
} from './transformer-graph.js';

/** What the transformer needs from an opened checkpoint. */
export interface TransformerCheckpoint {
  dir: string;
  config: LladaConfig;
  weights: Map<string, { dtype: string; shape: number[]; file: string; byteOffset: number; byteLength: number }>;
}

export type { Device } from './device.js';

export interface TransformerLoadOptions {
  /** Intra-op threads (default: ORT's choice, all cores). */
  threads?: number;
  device?: Device;
  /** Size of the image-token block at the end of the vocabulary (VQ codebook size). */
  imageVocabSize?: number;
}

export interface KvCacheView {
  /** Absolute positions of the cached rows, in the order of the k/v rows. */
  positions: ArrayLike<number>;
  /** Per layer, [C, kvDim] pre-RoPE keys and values. */
  k: Float32Array[];
  v: Float32Array[];
}

export interface ForwardRequest {
  /** Token ids to compute. */
  ids: ArrayLike<number>;
  /** Absolute position of each id (default 0..P-1). */
  positions?: ArrayLike<number>;
  /** Cached keys/values of the positions not computed in this call. */
  past?: KvCacheView;
  /** Rows (indices into `ids`) that need full-vocabulary logits. */
  logitRows?: ArrayLike<number>;
  /** Rows that need image-vocabulary logits. */
  imageRows?: ArrayLike<number>;
  /** Rows whose max image logit is wanted. */
  rowmaxRows?: ArrayLike<number>;
  /** Return this call's keys/values (pre-RoPE) to refresh a cache. */
  wantKv?: boolean;
}

export interface ForwardResult {
  /** [logitRows.length, embeddingSize] */
  logits?: Float32Array;
  /** [imageRows.length, imageVocabSize] */
  imageLogits?: Float32Array;
  /** [rowmaxRows.length] */
  imageRowMax?: Float32Array;
  /** Per layer [P, kvDim], when wantKv. */
  newK?: Float32Array[];
  newV?: Float32Array[];
}

function i64(values: ArrayLike<number>): ort.Tensor {
  const a = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) a[i] = BigInt(values[i]!);
  return new ort.Tensor('int64', a, [values.length]);
}

const EMPTY = new Float32Array(0);

export class Transformer {
  readonly imageVocabStart: number;
  readonly imageVocabSize: number;
  readonly kvDim: number;
  private readonly invFreq: Float32Array;

  private constructor(
    readonly config: LladaConfig,
    private readonly session: ort.InferenceSession,
    imageVocabSize: number,
    readonly device: Device,
  ) {
    this.imageVocabSize = imageVocabSize;
    // The original learns the text-vocabulary size from the logits width.
    this.imageVocabStart = config.embeddingSize - imageVocabSize;
    this.kvDim = config.nKvHeads * config.headDim;
    this.invFreq = ropeInvFreq(config.headDim, config.ropeTheta);
  }

  static async load(ckpt: TransformerCheckpoint, opts: TransformerLoadOptions = {}): Promise<Transformer> {
    const imageVocabSize = opts.imageVocabSize ?? 8192;
    const c = ckpt.config;
    if (imageVocabSize >= c.embeddingSize) {
      throw new DimooError(
        `config.json: embedding_size ${c.embeddingSize} leaves no room for ${imageVocabSize} image tokens`,
        'E_CONFIG',
      );
    }
    const weight = (name: string): WeightSource => {
      const w = ckpt.weights.get(name);
      if (!w) throw new DimooError(`${ckpt.dir}: weight ${name} is missing`, 'E_CHECKPOINT');
      if (w.dtype !== 'BF16' && w.dtype !== 'F16' && w.dtype !== 'F32') {
        throw new DimooError(`${w.file}: tensor ${name} has unsupported dtype ${w.dtype}`, 'E_CHECKPOINT');
      }
      return {
        dtype: w.dtype,
        shape: w.shape,
        location: path.relative(ckpt.dir, w.file).split(path.sep).join('/'),
        byteOffset: w.byteOffset,
        byteLength: w.byteLength,
      };
    };
    const bytes = buildTransformerGraph({
      config: c,
      weight,
      imageVocabStart: c.embeddingSize - imageVocabSize,
      imageVocabSize,
    });
    const device = opts.device ?? 'cpu';
    const session = await createSession(
      bytes,
      { device, threads: opts.threads, externalDataFolder: path.resolve(ckpt.dir) },
      `${ckpt.dir}: ONNX Runtime could not load the transformer`,
    );
    return new Transformer(c, session, imageVocabSize, device);
  }

  /** RoPE cos/sin for absolute positions, [n, headDim]. */
  rope(positions: ArrayLike<number>): { cos: Float32Array; sin: Float32Array } {
    return ropeTables(positions, this.invFreq);
  }

  async forward(req: ForwardRequest): Promise<ForwardResult> {
    const c = this.config;
    const P = req.ids.length;
    const hd = c.headDim;
    const positions = req.positions ?? Array.from({ length: P }, (_, i) => i);
    if (positions.length !== P) throw new Error('forward: positions and ids differ in length');
    const q = this.rope(positions);
    const past = req.past;
    const C = past ? past.positions.length : 0;
    const pr = past ? this.rope(past.positions) : { cos: EMPTY, sin: EMPTY };
    const feeds: Record<string, ort.Tensor> = {
      [IN.ids]: i64(req.ids),
      [IN.qCos]: new ort.Tensor('float32', q.cos, [P, hd]),
      [IN.qSin]: new ort.Tensor('float32', q.sin, [P, hd]),
      [IN.pastCos]: new ort.Tensor('float32', pr.cos, [C, hd]),
      [IN.pastSin]: new ort.Tensor('float32', pr.sin, [C, hd]),
      [IN.logitRows]: i64(req.logitRows ?? []),
      [IN.imageRows]: i64(req.imageRows ?? []),
      // ORT runs every node, fetched or not, and WebGPU's ReduceMax refuses an empty input: one spare row there.
      [IN.rowmaxRows]: i64(req.rowmaxRows?.length || this.device !== 'webgpu' ? (req.rowmaxRows ?? []) : [0]),
    };
    for (let i = 0; i < c.nLayers; i++) {
      feeds[IN.pastK(i)] = new ort.Tensor('float32', past ? past.k[i]! : EMPTY, [C, this.kvDim]);
      feeds[IN.pastV(i)] = new ort.Tensor('float32', past ? past.v[i]! : EMPTY, [C, this.kvDim]);
    }
    const fetches: string[] = [];
    if (req.logitRows?.length) fetches.push(OUT.logits);
    if (req.imageRows?.length) fetches.push(OUT.imageLogits);
    if (req.rowmaxRows?.length) fetches.push(OUT.imageRowMax);
    if (req.wantKv) for (let i = 0; i < c.nLayers; i++) fetches.push(OUT.newK(i), OUT.newV(i));
    if (fetches.length === 0) fetches.push(OUT.imageRowMax);
    const out = await this.session.run(feeds, fetches);
    const f32 = (name: string) => out[name]!.data as Float32Array;
    const res: ForwardResult = {};
    if (req.logitRows?.length) res.logits = f32(OUT.logits);
    if (req.imageRows?.length) res.imageLogits = f32(OUT.imageLogits);
    if (req.rowmaxRows?.length) res.imageRowMax = f32(OUT.imageRowMax);
    if (req.wantKv) {
      res.newK = [];
      res.newV = [];
      for (let i = 0; i < c.nLayers; i++) {
        res.newK.push(f32(OUT.newK(i)));
        res.newV.push(f32(OUT.newV(i)));
      }
    }
    return res;
  }

  async dispose(): Promise<void> {
    await this.session.release();
  }
}
