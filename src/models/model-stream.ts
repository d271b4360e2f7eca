/**
 * One stream's ML-Cache (max-logit cache) state: the key/value cache of
 * every position (one slot per position, see transformer.ts KvCache), the
 * max image logit of every position and the last computed image logits of
 * the positions the sampler asks about. A full pass refreshes everything; a
 * partial pass recomputes only the given positions, which attend to the
 * cached K/V of all others, and the returned logits of positions not
 * recomputed are the cached (stale) ones — exactly the reuse the original's
 * ML-Cache performs.
 *
 * Cost notes (measured on CPU): the cache lives in persistent JS buffers fed
 * to ONNX Runtime zero-copy; only the recomputed rows' K/V come back and are
 * scattered in place. Image logits are kept only for rows that were asked
 * for (the masked cells), never for every position.
 *
 * Also serves uncached generation (no K/V kept), so pipelines have one code path.
 */
import { iota, type ForwardResult, type KvCache, type Transformer } from './transformer.js';

export interface StreamStepResult {
  /** [imageRows.length, imageVocabSize] image logits at the requested positions. */
  imageLogits: Float32Array;
  /** [seqLen] max image logit per position (current or cached); only when tracked. */
  rowMax?: Float32Array;
}

export interface ModelStreamOptions {
  /**
   * Return partial passes' logits in one buffer reused from call to call
   * (valid until the stream's next call) instead of a fresh array.
   */
  reuseOutput?: boolean;
}

export interface FullPassOptions {
  /**
   * Keep K/V, row maxima and logits for later partial passes (default true).
   * A full pass followed by another full pass needs none of it.
   */
  keep?: boolean;
}

export interface TextRowsOptions {
  /** Reduce each row to its argmax and that token's probability inside the model. */
  argmax?: boolean;
}

/** Text rows as logits ([rows, vocab]) or, with `argmax`, reduced. */
export interface TextRows {
  logits?: Float32Array;
  argmax?: Int32Array;
  argmaxProb?: Float64Array;
}

function textRequest(
  rows: ArrayLike<number>,
  opts: TextRowsOptions,
): { logitRows?: ArrayLike<number>; argmaxRows?: ArrayLike<number> } {
  return opts.argmax ? { argmaxRows: rows } : { logitRows: rows };
}

function textRows(r: ForwardResult, opts: TextRowsOptions): TextRows {
  if (opts.argmax)
    return {
      argmax: r.argmax ?? new Int32Array(0),
      argmaxProb: r.argmaxProb ?? new Float64Array(0),
    };
  return { logits: r.logits ?? new Float32Array(0) };
}

export class ModelStream {
  private kv: KvCache | undefined;
  private rowMax: Float32Array = new Float32Array(0);
  /** Cached image logits: row slotOf[p] of logitBuf holds position p's logits (-1: none). */
  private logitBuf = new Float32Array(0);
  private slotOf = new Int32Array(0);
  private out = new Float32Array(0);
  private seqLen = 0;
  private filled = false;

  constructor(
    private readonly model: Transformer,
    /** Keep K/V and per-position logits for later partial passes. */
    readonly caching: boolean,
    private readonly options: ModelStreamOptions = {},
  ) {}

  get hasCache(): boolean {
    return this.filled;
  }

  /** Forgets everything (the original empties its caches before each refresh). */
  reset(): void {
    this.kv = undefined;
    this.slotOf.fill(-1);
    this.filled = false;
  }

  /** Computes every position of `ids`; returns image logits at `imageRows` (positions). */
  async full(
    ids: ArrayLike<number>,
    imageRows: ArrayLike<number>,
    opts: FullPassOptions = {},
  ): Promise<StreamStepResult> {
    const L = ids.length;
    if (!this.caching || opts.keep === false) {
      this.filled = false;
      const r = await this.model.forward({ ids, imageRows });
      return { imageLogits: r.imageLogits };
    }
    const r = await this.model.forward({ ids, imageRows, rowmaxRows: iota(L), wantKv: true });
    this.seqLen = L;
    this.kv = { slots: L, k: r.newK, v: r.newV };
    this.rowMax = r.imageRowMax;
    const img = r.imageLogits;
    if (this.logitBuf.length < img.length) this.logitBuf = new Float32Array(img.length);
    this.logitBuf.set(img);
    if (this.slotOf.length < L) this.slotOf = new Int32Array(L);
    this.slotOf.fill(-1);
    for (let i = 0; i < imageRows.length; i++) this.slotOf[imageRows[i]!] = i;
    this.filled = true;
    return { imageLogits: img, rowMax: this.rowMax };
  }

  /**
   * Recomputes only `compute` positions (sorted ascending) with the current
   * tokens; all other positions contribute their cached K/V.
   */
  async partial(
    ids: ArrayLike<number>,
    compute: ArrayLike<number>,
    imageRows: ArrayLike<number>,
  ): Promise<StreamStepResult> {
    if (!this.caching || !this.filled || !this.kv)
      throw new Error('ModelStream.partial needs a filled cache');
    const L = this.seqLen;
    if (ids.length !== L)
      throw new Error(`ModelStream.partial: sequence length changed (${ids.length} != ${L})`);
    const computeIds = Array.from(compute, (p) => ids[p]!);
    // Fresh logits for requested rows that are recomputed and have a logits slot.
    const rowOf = new Map<number, number>();
    for (let i = 0; i < compute.length; i++) rowOf.set(compute[i]!, i);
    const freshRows: number[] = [];
    const freshPos: number[] = [];
    for (let i = 0; i < imageRows.length; i++) {
      const p = imageRows[i]!;
      const row = rowOf.get(p);
      if (row !== undefined) {
        freshRows.push(row);
        freshPos.push(p);
      }
    }
    const r = await this.model.forward({
      ids: computeIds,
      positions: compute,
      cache: this.kv,
      slots: compute,
      imageRows: freshRows,
      rowmaxRows: iota(compute.length),
      wantKv: true,
    });
    const V = this.model.imageVocabSize;
    this.model.writeKv(this.kv, compute, r.newK, r.newV);
    for (let i = 0; i < compute.length; i++) this.rowMax[compute[i]!] = r.imageRowMax[i]!;
    const img = r.imageLogits;
    for (let i = 0; i < freshPos.length; i++) {
      const slot = this.slotOf[freshPos[i]!]!;
      if (slot < 0)
        throw new Error(
          `ModelStream: position ${freshPos[i]} was not asked for at the last full pass`,
        );
      this.logitBuf.set(img!.subarray(i * V, (i + 1) * V), slot * V);
    }
    return { imageLogits: this.gatherLogits(imageRows), rowMax: this.rowMax };
  }

  /**
   * Text decoding: computes every position, returns the rows `rows`
   * (positions) as full-vocabulary logits or, with `argmax`, reduced to each
   * row's argmax and its probability; when caching, keeps every position's K/V.
   */
  async fullText(
    ids: ArrayLike<number>,
    rows: ArrayLike<number>,
    opts: TextRowsOptions = {},
  ): Promise<TextRows> {
    const r = await this.model.forward({ ids, ...textRequest(rows, opts), wantKv: this.caching });
    if (this.caching) {
      this.seqLen = ids.length;
      this.kv = { slots: ids.length, k: r.newK!, v: r.newV! }; // wantKv was this.caching
      this.filled = true;
    }
    return textRows(r, opts);
  }

  /**
   * Text decoding with a cache: recomputes `compute` positions (ascending)
   * against the cached K/V of all others; `rows` must be among them.
   */
  async partialText(
    ids: ArrayLike<number>,
    compute: ArrayLike<number>,
    rows: ArrayLike<number>,
    opts: TextRowsOptions = {},
  ): Promise<TextRows> {
    if (!this.caching || !this.filled || !this.kv)
      throw new Error('ModelStream.partialText needs a filled cache');
    if (ids.length !== this.seqLen)
      throw new Error(
        `ModelStream.partialText: sequence length changed (${ids.length} != ${this.seqLen})`,
      );
    const index = new Map<number, number>();
    for (let i = 0; i < compute.length; i++) index.set(compute[i]!, i);
    const local = Array.from(rows, (p) => {
      const i = index.get(p);
      if (i === undefined) throw new Error(`partialText: logit row ${p} is not recomputed`);
      return i;
    });
    const r = await this.model.forward({
      ids: Array.from(compute, (p) => ids[p]!),
      positions: compute,
      cache: this.kv,
      slots: compute,
      ...textRequest(local, opts),
      wantKv: true,
    });
    this.model.writeKv(this.kv, compute, r.newK, r.newV);
    return textRows(r, opts);
  }

  private gatherLogits(rows: ArrayLike<number>): Float32Array {
    const V = this.model.imageVocabSize;
    const n = rows.length * V;
    let out: Float32Array;
    if (this.options.reuseOutput) {
      if (this.out.length < n) this.out = new Float32Array(n);
      out = this.out.subarray(0, n);
    } else {
      out = new Float32Array(n);
    }
    for (let i = 0; i < rows.length; i++) {
      const p = rows[i]!;
      const slot = p < this.slotOf.length ? this.slotOf[p]! : -1;
      if (slot < 0) throw new Error(`ModelStream: no logits cached for position ${p}`);
      out.set(this.logitBuf.subarray(slot * V, (slot + 1) * V), i * V);
    }
    return out;
  }
}
