/**
 * One stream's ML-Cache (max-logit cache) state: per-layer keys/values
 * (pre-RoPE) and the last computed image logits / max image logit of every
 * position. A full pass refreshes everything; a partial pass recomputes only
 * the given positions, which attend to the cached K/V of all others, and the
 * returned logits of positions not recomputed are the cached (stale) ones —
 * exactly the reuse the original's ML-Cache performs.
 *
 * Also serves uncached generation (no K/V kept), so pipelines have one code path.
 */
import type { Transformer } from './transformer.js';

export interface StreamStepResult {
  /** [imageRows.length, imageVocabSize] image logits at the requested positions. */
  imageLogits: Float32Array;
  /** [seqLen] max image logit per position (current or cached); only when tracked. */
  rowMax?: Float32Array;
}

export class ModelStream {
  private k: Float32Array[] = [];
  private v: Float32Array[] = [];
  private rowMax: Float32Array = new Float32Array(0);
  /** Cached image logits, keyed by position. */
  private imageLogitRows = new Map<number, Float32Array>();
  private seqLen = 0;
  private filled = false;

  constructor(
    private readonly model: Transformer,
    /** Keep K/V and per-position logits for later partial passes. */
    readonly caching: boolean,
  ) {}

  get hasCache(): boolean {
    return this.filled;
  }

  /** Forgets everything (the original empties its caches before each refresh). */
  reset(): void {
    this.k = [];
    this.v = [];
    this.imageLogitRows.clear();
    this.filled = false;
  }

  /** Computes every position of `ids`; returns image logits at `imageRows` (positions). */
  async full(ids: ArrayLike<number>, imageRows: ArrayLike<number>): Promise<StreamStepResult> {
    const L = ids.length;
    const all = Array.from({ length: L }, (_, i) => i);
    if (!this.caching) {
      const r = await this.model.forward({ ids, imageRows });
      return { imageLogits: r.imageLogits ?? new Float32Array(0) };
    }
    const r = await this.model.forward({ ids, imageRows: all, rowmaxRows: all, wantKv: true });
    this.seqLen = L;
    this.k = r.newK!;
    this.v = r.newV!;
    this.rowMax = r.imageRowMax!;
    const V = this.model.imageVocabSize;
    const img = r.imageLogits!;
    this.imageLogitRows.clear();
    for (let p = 0; p < L; p++) this.imageLogitRows.set(p, img.subarray(p * V, (p + 1) * V));
    this.filled = true;
    return { imageLogits: this.gatherLogits(imageRows), rowMax: this.rowMax };
  }

  /**
   * Recomputes only `compute` positions (sorted ascending) with the current
   * tokens; all other positions contribute their cached K/V.
   */
  async partial(ids: ArrayLike<number>, compute: ArrayLike<number>, imageRows: ArrayLike<number>): Promise<StreamStepResult> {
    if (!this.caching || !this.filled) throw new Error('ModelStream.partial needs a filled cache');
    const L = this.seqLen;
    if (ids.length !== L) throw new Error(`ModelStream.partial: sequence length changed (${ids.length} != ${L})`);
    const computeIds = Array.from(compute, (p) => ids[p]!);
    const rows = Array.from({ length: compute.length }, (_, i) => i);
    const r = await this.model.forward({
      ids: computeIds,
      positions: compute,
      past: this.pastExcept(compute),
      imageRows: rows,
      rowmaxRows: rows,
      wantKv: true,
    });
    const V = this.model.imageVocabSize;
    this.storeKv(compute, r.newK!, r.newV!);
    const img = r.imageLogits!;
    for (let i = 0; i < compute.length; i++) {
      const p = compute[i]!;
      this.rowMax[p] = r.imageRowMax![i]!;
      this.imageLogitRows.set(p, img.subarray(i * V, (i + 1) * V));
    }
    return { imageLogits: this.gatherLogits(imageRows), rowMax: this.rowMax };
  }

  /**
   * Text decoding: computes every position, returns full-vocabulary logits at
   * `logitRows` (positions) and, when caching, keeps every position's K/V.
   */
  async fullText(ids: ArrayLike<number>, logitRows: ArrayLike<number>): Promise<Float32Array> {
    const r = await this.model.forward({ ids, logitRows, wantKv: this.caching });
    if (this.caching) {
      this.seqLen = ids.length;
      this.k = r.newK!;
      this.v = r.newV!;
      this.filled = true;
    }
    return r.logits ?? new Float32Array(0);
  }

  /**
   * Text decoding with a cache: recomputes `compute` positions (ascending)
   * against the cached K/V of all others; `logitRows` must be among them.
   */
  async partialText(ids: ArrayLike<number>, compute: ArrayLike<number>, logitRows: ArrayLike<number>): Promise<Float32Array> {
    if (!this.caching || !this.filled) throw new Error('ModelStream.partialText needs a filled cache');
    const index = new Map<number, number>();
    for (let i = 0; i < compute.length; i++) index.set(compute[i]!, i);
    const rows = Array.from(logitRows, (p) => {
      const i = index.get(p);
      if (i === undefined) throw new Error(`partialText: logit row ${p} is not recomputed`);
      return i;
    });
    const r = await this.model.forward({
      ids: Array.from(compute, (p) => ids[p]!),
      positions: compute,
      past: this.pastExcept(compute),
      logitRows: rows,
      wantKv: true,
    });
    this.storeKv(compute, r.newK!, r.newV!);
    return r.logits ?? new Float32Array(0);
  }

  private pastExcept(compute: ArrayLike<number>): { positions: number[]; k: Float32Array[]; v: Float32Array[] } {
    const L = this.seqLen;
    const kvDim = this.model.kvDim;
    const isComputed = new Uint8Array(L);
    for (let i = 0; i < compute.length; i++) isComputed[compute[i]!] = 1;
    const pastPos: number[] = [];
    for (let p = 0; p < L; p++) if (!isComputed[p]) pastPos.push(p);
    const gatherRows = (src: Float32Array): Float32Array => {
      const out = new Float32Array(pastPos.length * kvDim);
      for (let r = 0; r < pastPos.length; r++) {
        const p = pastPos[r]!;
        out.set(src.subarray(p * kvDim, (p + 1) * kvDim), r * kvDim);
      }
      return out;
    };
    return { positions: pastPos, k: this.k.map(gatherRows), v: this.v.map(gatherRows) };
  }

  private storeKv(compute: ArrayLike<number>, newK: Float32Array[], newV: Float32Array[]): void {
    const kvDim = this.model.kvDim;
    for (let layer = 0; layer < this.k.length; layer++) {
      const nk = newK[layer]!;
      const nv = newV[layer]!;
      for (let i = 0; i < compute.length; i++) {
        const p = compute[i]!;
        this.k[layer]!.set(nk.subarray(i * kvDim, (i + 1) * kvDim), p * kvDim);
        this.v[layer]!.set(nv.subarray(i * kvDim, (i + 1) * kvDim), p * kvDim);
      }
    }
  }

  private gatherLogits(rows: ArrayLike<number>): Float32Array {
    const V = this.model.imageVocabSize;
    const out = new Float32Array(rows.length * V);
    for (let i = 0; i < rows.length; i++) {
      const row = this.imageLogitRows.get(rows[i]!);
      if (!row) throw new Error(`ModelStream: no logits cached for position ${rows[i]}`);
      out.set(row, i * V);
    }
    return out;
  }
}
