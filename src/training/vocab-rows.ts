/**
 * Compact vocabulary for full fine-tuning: train only the embedding and head
 * rows a model can ever read or predict (a small model in the official
 * 134 548-row layout uses a few thousand), exactly as if every row trained.
 *
 * Why it is exact: the rows outside the trained set are never an input or a
 * target. Their embedding rows get no gradient (zero stays zero, even under
 * weight decay) and, if their head rows start equal, they get equal gradients
 * and equal AdamW updates forever: they are one tied row. So the compact head
 * keeps one "rest" row standing for all N of them, its logit offset by log(N)
 * (the full softmax), its gradient divided by N (each tied row's own) and
 * counted N times in the gradient norm.
 *
 * Pure: no I/O, no ONNX.
 */
import { DimooError } from '../errors.js';

const E = 'E_TRAIN';

export type VocabRanges = ReadonlyArray<readonly [number, number]>;

export interface CompactVocab {
  /** Rows of the full vocabulary that train, ascending; compact row i is full row active[i]. */
  readonly active: Int32Array;
  /** Rows of the full vocabulary. */
  readonly full: number;
  /** Rows of the compact tables: the active ones, then the rest row if any row is left out. */
  readonly size: number;
  /** Compact index of the row standing for the left-out rows (-1: none left out). */
  readonly rest: number;
  /** How many full rows the rest row stands for. */
  readonly tied: number;
  /** Full id -> compact id (-1: left out). */
  readonly toCompact: Int32Array;
}

/** Parses "a:b,c:d" (half-open ranges of row ids, as Python slices). */
export function parseVocabRows(spec: string, where = '--vocab-rows'): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  for (const part of spec.split(',')) {
    const m = /^\s*(\d+)\s*:\s*(\d+)\s*$/.exec(part);
    if (!m)
      throw new DimooError(
        `${where}: "${part}" is not a row range start:end (e.g. 0:200,126080:126356)`,
        'E_PARAM',
      );
    out.push([Number(m[1]), Number(m[2])]);
  }
  return out;
}

/** The ranges of rows of a [V, D] table that are not all zero. */
export function nonZeroRows(table: Float32Array, V: number, D: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let start = -1;
  for (let r = 0; r <= V; r++) {
    let nz = false;
    if (r < V) {
      for (let j = r * D; j < (r + 1) * D; j++) {
        if (table[j] !== 0) {
          nz = true;
          break;
        }
      }
    }
    if (nz && start < 0) start = r;
    if (!nz && start >= 0) {
      out.push([start, r]);
      start = -1;
    }
  }
  return out;
}

export function compactVocab(ranges: VocabRanges, full: number): CompactVocab {
  const toCompact = new Int32Array(full).fill(-1);
  const ids: number[] = [];
  for (const [a, b] of ranges) {
    if (!Number.isSafeInteger(a) || !Number.isSafeInteger(b) || a < 0 || b > full || a >= b)
      throw new DimooError(
        `vocabulary rows ${a}:${b}: not a non-empty range inside [0, ${full})`,
        'E_PARAM',
      );
    for (let r = a; r < b; r++) {
      if (toCompact[r] !== -1)
        throw new DimooError(`vocabulary rows: row ${r} is in two ranges`, 'E_PARAM');
      toCompact[r] = 0;
    }
  }
  for (let r = 0; r < full; r++) if (toCompact[r] === 0) ids.push(r);
  const active = Int32Array.from(ids);
  active.forEach((id, i) => (toCompact[id] = i));
  const tied = full - active.length;
  return {
    active,
    full,
    size: active.length + (tied > 0 ? 1 : 0),
    rest: tied > 0 ? active.length : -1,
    tied,
    toCompact,
  };
}

/** The constant the training graph adds to the compact logits (log N on the rest row). */
export function logitOffset(cv: CompactVocab): Float32Array {
  const o = new Float32Array(cv.size);
  if (cv.rest >= 0) o[cv.rest] = Math.log(cv.tied);
  return o;
}

/** Maps a full-vocabulary id to its compact row; `what` names the id in the error. */
export function toCompactId(cv: CompactVocab, id: number, what: string): number {
  const c = cv.toCompact[id];
  if (c === undefined || c < 0)
    throw new DimooError(
      `${what} = ${id} is outside the trained vocabulary rows (--vocab-rows): a left-out row can be neither read nor learned`,
      E,
    );
  return c;
}

/**
 * The compact [size, D] table of a full [V, D] one. `kind` says what the
 * left-out rows must be for the compact training to be exact: 'zero'
 * (embedding) or 'tied' (head: all equal; the rest row takes their value).
 */
export function compactTable(
  cv: CompactVocab,
  table: Float32Array,
  D: number,
  kind: 'zero' | 'tied',
  name: string,
): Float32Array {
  if (table.length !== cv.full * D)
    throw new DimooError(`${name}: ${table.length} values, expected ${cv.full} x ${D}`, E);
  const out = new Float32Array(cv.size * D);
  cv.active.forEach((id, i) => out.set(table.subarray(id * D, (id + 1) * D), i * D));
  let first = -1;
  for (let r = 0; r < cv.full; r++) {
    if (cv.toCompact[r]! >= 0) continue;
    const row = table.subarray(r * D, (r + 1) * D);
    if (first < 0) {
      first = r;
      if (kind === 'tied') out.set(row, cv.rest * D);
    }
    const ref = kind === 'zero' ? undefined : table.subarray(first * D, (first + 1) * D);
    for (let j = 0; j < D; j++) {
      if (row[j] !== (ref ? ref[j] : 0))
        throw new DimooError(
          kind === 'zero'
            ? `${name}: row ${r} is left out of the trained vocabulary rows but not zero (it would never be trained: include it, or zero it)`
            : `${name}: rows ${first} and ${r} are left out of the trained vocabulary rows but differ (left-out head rows must be equal to train as one)`,
          E,
        );
    }
  }
  return out;
}

/**
 * The full [V, D] table of a compact one. Left-out rows: zero ('zero'), the
 * rest row ('tied'), or the rest row / N ('share': a gradient, each tied row's part).
 */
export function expandTable(
  cv: CompactVocab,
  compact: Float32Array,
  D: number,
  kind: 'zero' | 'tied' | 'share',
): Float32Array {
  const out = new Float32Array(cv.full * D);
  if (cv.rest >= 0 && kind !== 'zero') {
    const rest = compact.slice(cv.rest * D, (cv.rest + 1) * D);
    if (kind === 'share') for (let j = 0; j < D; j++) rest[j] = rest[j]! / cv.tied;
    for (let r = 0; r < cv.full; r++) if (cv.toCompact[r]! < 0) out.set(rest, r * D);
  }
  cv.active.forEach((id, i) => out.set(compact.subarray(i * D, (i + 1) * D), id * D));
  return out;
}
