/**
 * Reverse-mode automatic differentiation over graphs built with GraphBuilder.
 *
 * A `Tape` wraps a builder: each differentiable op emits its forward ONNX node
 * and, when an input needs a gradient, records how to emit its
 * vector-Jacobian product. `gradients(y, wrt)` walks the record backwards and
 * appends the backward pass to the same graph as ONNX ops, so forward, loss
 * and backward are one graph that any ORT session (CPU, WebGPU) runs.
 *
 * Shapes are tracked symbolically (numbers, or names for dynamic dims) with
 * static ranks: that is what broadcasting gradients need (which axes to sum).
 * Dynamic sizes are read at run time with Shape where a gradient needs them.
 * A dim that is the literal 1 in an operand and anything else in the result is
 * a broadcast axis; two different names are assumed equal (ONNX broadcasting
 * would reject them otherwise).
 *
 * Frozen quantized bases (MatMulNBits, GatherBlockQuantized) pass gradients
 * to their activations only.
 */
import { GraphBuilder, type AttrValue, type Dim, type DType, type Value } from './onnx/builder.js';

export type FloatType = 'float32' | 'float64';

/** A value on the tape: its graph name, symbolic shape, element type and whether it needs a gradient. */
export interface TVal extends Value {
  readonly shape: readonly Dim[];
  readonly dtype: DType;
  readonly req: boolean;
}

/** Emits the input gradients of one recorded op from its output gradient(s); null = no gradient. */
type Vjp = (gOut: Value) => (Value | null)[];

interface Entry {
  out: TVal;
  ins: TVal[];
  vjp: Vjp;
}

/**
 * Largest float32 piece of a frozen quantized weight the backward rebuilds at
 * once (64 MiB: 4096 rows of d_model 4096; one [4096 x 12288] MLP matrix is 192 MiB,
 * the 8B head 2.1 GiB).
 */
export const DEQUANT_CHUNK_BYTES = 64 * 2 ** 20;

/** Quantized linear weight as MatMulNBits takes it ([N, K/bs, bs*bits/8] uint8 + scales [N*K/bs]). */
export interface QuantWeight {
  data: Value;
  scales: Value;
  N: number;
  K: number;
  bits: 4 | 8;
  blockSize: number;
  accuracyLevel?: number;
}

const isOne = (d: Dim): boolean => d === 1;

/** Broadcast result shape of two (or more) operand shapes, right-aligned. */
export function broadcastShape(...shapes: (readonly Dim[])[]): Dim[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    let d: Dim = 1;
    for (const s of shapes) {
      const k = s.length - rank + i;
      if (k < 0) continue;
      const e = s[k]!;
      if (isOne(d)) d = e;
      else if (!isOne(e) && typeof d === 'number' && typeof e === 'number' && d !== e)
        throw new Error(
          `autodiff: shapes [${shapes.map((x) => x.join(',')).join('] and [')}] do not broadcast`,
        );
      else if (typeof d !== 'number' && typeof e === 'number' && !isOne(e)) d = e;
    }
    out.push(d);
  }
  return out;
}

function normAxis(axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new Error(`autodiff: axis ${axis} out of range for rank ${rank}`);
  return a;
}

export class Tape {
  private readonly entries: Entry[] = [];
  private readonly shapeCache = new Map<string, Value>();

  constructor(
    readonly g: GraphBuilder,
    /** Float type of scalar constants the tape creates (float64 for finite-difference tests). */
    readonly dtype: FloatType = 'float32',
  ) {}

  // ---- leaves ------------------------------------------------------------

  /** A graph input; `req` marks it as a variable gradients can be taken for. */
  input(name: string, dtype: DType, shape: readonly Dim[], req = false): TVal {
    return this.wrap(this.g.input(name, dtype, shape), shape, dtype, req);
  }

  /** Wraps a value the builder made (weights, constants) as a tape value. */
  wrap(v: Value, shape: readonly Dim[], dtype: DType = this.dtype, req = false): TVal {
    return { name: v.name, shape: [...shape], dtype, req };
  }

  scalar(x: number): TVal {
    return this.wrap(this.dtype === 'float64' ? this.g.scalarF64(x) : this.g.scalarF32(x), []);
  }

  /** Scalar constant as a plain builder value (for backward formulas). */
  private k(x: number): Value {
    return this.scalar(x);
  }

  // ---- recording -----------------------------------------------------------

  /** Records an op's output (dtype: that of its first input unless given). */
  private rec(
    v: Value,
    shape: readonly Dim[],
    ins: TVal[],
    vjp: Vjp,
    dtype: DType = ins[0]?.dtype ?? this.dtype,
  ): TVal {
    const req = ins.some((i) => i.req);
    const out: TVal = { name: v.name, shape: [...shape], dtype, req };
    if (req) this.entries.push({ out, ins, vjp });
    return out;
  }

  private shapeOf(x: Value): Value {
    let s = this.shapeCache.get(x.name);
    if (!s) {
      s = this.g.shape(x);
      this.shapeCache.set(x.name, s);
    }
    return s;
  }

  /** Sums a gradient of shape `gShape` down to `target`'s shape (undoes broadcasting). */
  private unbroadcast(grad: Value, gShape: readonly Dim[], target: TVal): Value {
    const t = target.shape;
    const lead = gShape.length - t.length;
    const axes: number[] = [];
    for (let i = 0; i < gShape.length; i++) {
      if (i < lead) axes.push(i);
      else if (isOne(t[i - lead]!) && !isOne(gShape[i]!)) axes.push(i);
    }
    if (axes.length === 0) return grad;
    const summed = this.g.reduceSum(grad, axes, true);
    return t.length === 0
      ? this.g.reshape(summed, [])
      : this.g.reshape(summed, this.shapeOf(target));
  }

  // ---- elementwise ---------------------------------------------------------

  add(a: TVal, b: TVal): TVal {
    const s = broadcastShape(a.shape, b.shape);
    return this.rec(this.g.add(a, b), s, [a, b], (gy) => [
      a.req ? this.unbroadcast(gy, s, a) : null,
      b.req ? this.unbroadcast(gy, s, b) : null,
    ]);
  }

  sub(a: TVal, b: TVal): TVal {
    const s = broadcastShape(a.shape, b.shape);
    return this.rec(this.g.sub(a, b), s, [a, b], (gy) => [
      a.req ? this.unbroadcast(gy, s, a) : null,
      b.req ? this.unbroadcast(this.g.neg(gy), s, b) : null,
    ]);
  }

  mul(a: TVal, b: TVal): TVal {
    const s = broadcastShape(a.shape, b.shape);
    return this.rec(this.g.mul(a, b), s, [a, b], (gy) => [
      a.req ? this.unbroadcast(this.g.mul(gy, b), s, a) : null,
      b.req ? this.unbroadcast(this.g.mul(gy, a), s, b) : null,
    ]);
  }

  div(a: TVal, b: TVal): TVal {
    const s = broadcastShape(a.shape, b.shape);
    const y = this.g.div(a, b);
    return this.rec(y, s, [a, b], (gy) => {
      const ga = this.g.div(gy, b);
      return [
        a.req ? this.unbroadcast(ga, s, a) : null,
        // d(a/b)/db = -(a/b)/b
        b.req ? this.unbroadcast(this.g.neg(this.g.mul(ga, y)), s, b) : null,
      ];
    });
  }

  neg(x: TVal): TVal {
    return this.rec(this.g.neg(x), x.shape, [x], (gy) => [this.g.neg(gy)]);
  }

  sqrt(x: TVal): TVal {
    const y = this.g.sqrt(x);
    return this.rec(y, x.shape, [x], (gy) => [this.g.div(this.g.mul(gy, this.k(0.5)), y)]);
  }

  reciprocal(x: TVal): TVal {
    const y = this.g.reciprocal(x);
    return this.rec(y, x.shape, [x], (gy) => [this.g.neg(this.g.mul(gy, this.g.mul(y, y)))]);
  }

  /** x ** p for a constant exponent p. */
  pow(x: TVal, p: number): TVal {
    const y = this.g.op('Pow', [x, this.k(p)])[0]!;
    return this.rec(y, x.shape, [x], (gy) => {
      const d =
        p === 2
          ? this.g.mul(x, this.k(2))
          : this.g.mul(this.g.op('Pow', [x, this.k(p - 1)])[0]!, this.k(p));
      return [this.g.mul(gy, d)];
    });
  }

  exp(x: TVal): TVal {
    const y = this.g.exp(x);
    return this.rec(y, x.shape, [x], (gy) => [this.g.mul(gy, y)]);
  }

  log(x: TVal): TVal {
    return this.rec(this.g.log(x), x.shape, [x], (gy) => [this.g.div(gy, x)]);
  }

  sigmoid(x: TVal): TVal {
    const y = this.g.sigmoid(x);
    return this.rec(y, x.shape, [x], (gy) => [
      this.g.mul(gy, this.g.mul(y, this.g.sub(this.k(1), y))),
    ]);
  }

  /** x * sigmoid(x), as the original's F.silu. */
  silu(x: TVal): TVal {
    const s = this.g.sigmoid(x);
    const y = this.g.mul(x, s);
    // d/dx = s * (1 + x * (1 - s))
    return this.rec(y, x.shape, [x], (gy) => [
      this.g.mul(gy, this.g.mul(s, this.g.add(this.k(1), this.g.mul(x, this.g.sub(this.k(1), s))))),
    ]);
  }

  cast(x: TVal, to: DType): TVal {
    const y = this.g.cast(x, to);
    const float = (t: DType): boolean =>
      t === 'float32' || t === 'float64' || t === 'float16' || t === 'bfloat16';
    if (!float(to) || !float(x.dtype))
      return { name: y.name, shape: [...x.shape], dtype: to, req: false };
    return this.rec(y, x.shape, [x], (gy) => [this.g.cast(gy, x.dtype)], to);
  }

  /** Where(cond, a, b); cond carries no gradient. */
  where(cond: Value, condShape: readonly Dim[], a: TVal, b: TVal): TVal {
    const s = broadcastShape(condShape, a.shape, b.shape);
    const z = this.k(0);
    return this.rec(this.g.where(cond, a, b), s, [a, b], (gy) => [
      a.req ? this.unbroadcast(this.g.where(cond, gy, z), s, a) : null,
      b.req ? this.unbroadcast(this.g.where(cond, z, gy), s, b) : null,
    ]);
  }

  // ---- linear algebra ----------------------------------------------------------

  /** MatMul with numpy batch broadcasting; both operands at least 2-D. */
  matmul(a: TVal, b: TVal): TVal {
    if (a.shape.length < 2 || b.shape.length < 2)
      throw new Error('autodiff: matmul operands must be at least 2-D');
    const batch = broadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
    const s = [...batch, a.shape[a.shape.length - 2]!, b.shape[b.shape.length - 1]!];
    const swap = (x: Value, rank: number): Value => {
      const perm = Array.from({ length: rank }, (_, i) => i);
      perm[rank - 2] = rank - 1;
      perm[rank - 1] = rank - 2;
      return this.g.transpose(x, perm);
    };
    return this.rec(this.g.matmul(a, b), s, [a, b], (gy) => {
      const ga = a.req ? this.g.matmul(gy, swap(b, b.shape.length)) : null;
      const gb = b.req ? this.g.matmul(swap(a, a.shape.length), gy) : null;
      const gaShape = [...batch, a.shape[a.shape.length - 2]!, a.shape[a.shape.length - 1]!];
      const gbShape = [...batch, b.shape[b.shape.length - 2]!, b.shape[b.shape.length - 1]!];
      return [ga && this.unbroadcast(ga, gaShape, a), gb && this.unbroadcast(gb, gbShape, b)];
    });
  }

  /** x [M, K] @ w^T for w [N, K] (PyTorch's linear layout), + optional bias [N]. */
  linear(x: TVal, w: TVal, bias?: TVal): TVal {
    if (x.shape.length !== 2 || w.shape.length !== 2)
      throw new Error('autodiff: linear takes x [M, K] and w [N, K]');
    const s = [x.shape[0]!, w.shape[0]!];
    const y = this.g.gemmTransB(x, w, bias);
    const ins = bias ? [x, w, bias] : [x, w];
    return this.rec(y, s, ins, (gy) => [
      x.req ? this.g.matmul(gy, w) : null,
      w.req ? this.g.op('Gemm', [gy, x], { transA: 1 })[0]! : null,
      ...(bias ? [bias.req ? this.g.reduceSum(gy, [0], false) : null] : []),
    ]);
  }

  /**
   * x [M, K] @ dequant(W)^T with W a frozen block-quantized [N, K] weight (MatMulNBits),
   * given whole or as consecutive row pieces (one MatMulNBits per piece, outputs
   * concatenated: ORT's unpacked MatMulNBits dequantizes its whole weight into a
   * transient float buffer, 2.2 GB for the 8B head in one piece). The gradient
   * w.r.t. x multiplies by dequant(W) rebuilt at run time by GatherBlockQuantized,
   * in row chunks of at most `chunkBytes` of float32 (see matmulDequantized).
   */
  linearQuantized(
    x: TVal,
    w: QuantWeight | readonly QuantWeight[],
    chunkBytes = DEQUANT_CHUNK_BYTES,
  ): TVal {
    const pieces = Array.isArray(w) ? (w as readonly QuantWeight[]) : [w as QuantWeight];
    if (pieces.length === 0 || pieces.some((p) => p.K !== pieces[0]!.K))
      throw new Error('autodiff: linearQuantized needs row pieces of one K');
    const outs = pieces.map((p) =>
      this.g.matMulNBits(x, p.data, p.scales, null, {
        K: p.K,
        N: p.N,
        bits: p.bits,
        blockSize: p.blockSize,
        accuracyLevel: p.accuracyLevel ?? 0,
      }),
    );
    const y = outs.length === 1 ? outs[0]! : this.g.concat(outs, -1);
    const N = pieces.reduce((n, p) => n + p.N, 0);
    return this.rec(y, [x.shape[0]!, N], [x], (gy) => [
      this.matmulDequantized(gy, pieces, chunkBytes),
    ]);
  }

  /**
   * gy [M, N] @ dequant(W) [N, K], W rebuilt chunk by chunk of rows. Everything
   * the dequantization reads is offset by an int64 zero computed at run time
   * from the previous partial sum (the first chunk's from gy): the row indices,
   * so ORT cannot run every chunk before the products (at most one chunk's float
   * rows exist at a time), and the shapes that view the MatMulNBits initializers
   * as GatherBlockQuantized wants them, so ORT cannot fold those Reshapes into
   * heap copies of every base weight at load (the run-time Reshape aliases the
   * initializer instead).
   */
  private matmulDequantized(gy: Value, pieces: readonly QuantWeight[], chunkBytes: number): Value {
    let acc: Value | null = null;
    let off = 0;
    for (const w of pieces) {
      const per = Math.max(1, Math.floor(chunkBytes / (4 * w.K)));
      for (let start = 0; start < w.N; start += per) {
        const end = Math.min(w.N, start + per);
        const zero = this.runtimeZero(acc ?? gy);
        const rows = this.g.add(
          this.g.constI64(Array.from({ length: end - start }, (_, i) => start + i)),
          zero,
        );
        const whole = pieces.length === 1 && end - start === w.N;
        const part = this.g.matmul(
          whole ? gy : this.g.slice(gy, [off + start], [off + end], [-1]),
          this.dequantizeRows(w, rows, zero),
        );
        acc = acc ? this.g.add(acc, part) : part;
      }
      off += w.N;
    }
    return acc!;
  }

  /** An int64 scalar 0 that ORT can only know once `v` has been computed. */
  private runtimeZero(v: Value): Value {
    return this.g.reduceSum(this.g.mul(this.g.shape(v), this.g.constI64([0], [])), [0], false);
  }

  /** dequant(W) [N, K] float32 of a MatMulNBits weight. */
  dequantize(w: QuantWeight): Value {
    return this.dequantizeRows(w, this.g.constI64(Array.from({ length: w.N }, (_, i) => i)));
  }

  /** Rows `rows` (int64 [R]) of dequant(W), [R, K] float32; `zero` (see matmulDequantized) keeps the views of W run-time. */
  private dequantizeRows(w: QuantWeight, rows: Value, zero?: Value): Value {
    const blocks = w.K / w.blockSize;
    const dims = (d: number[]): Value =>
      zero ? this.g.add(this.g.constI64(d), zero) : this.g.constI64(d);
    const data = this.g.reshape(w.data, dims([w.N, (w.K * w.bits) / 8]));
    const scales = this.g.reshape(w.scales, dims([w.N, blocks]));
    return this.g.gatherBlockQuantized(data, rows, scales, {
      blockSize: w.blockSize,
      bits: w.bits,
    });
  }

  // ---- shape ops -------------------------------------------------------------

  /**
   * Reshape to `spec` (ONNX semantics: 0 copies the input dim, -1 is inferred);
   * `shape` is the resulting symbolic shape when the caller knows it better.
   */
  reshape(x: TVal, spec: readonly number[], shape?: readonly Dim[]): TVal {
    const s: Dim[] = shape
      ? [...shape]
      : spec.map((d, i) => (d === 0 ? x.shape[i]! : d === -1 ? `${x.name}_r${i}` : d));
    return this.rec(this.g.reshape(x, [...spec]), s, [x], (gy) => [
      this.g.reshape(gy, this.shapeOf(x)),
    ]);
  }

  /** Reshape to a shape computed at run time (`shape`, int64 [rank]) whose symbolic form is `outShape`. */
  reshapeTo(x: TVal, shape: Value, outShape: readonly Dim[]): TVal {
    return this.rec(this.g.reshape(x, shape), outShape, [x], (gy) => [
      this.g.reshape(gy, this.shapeOf(x)),
    ]);
  }

  transpose(x: TVal, perm: number[]): TVal {
    const inv = new Array<number>(perm.length);
    perm.forEach((p, i) => (inv[p] = i));
    return this.rec(
      this.g.transpose(x, perm),
      perm.map((p) => x.shape[p]!),
      [x],
      (gy) => [this.g.transpose(gy, inv)],
    );
  }

  unsqueeze(x: TVal, axes: number[]): TVal {
    const rank = x.shape.length + axes.length;
    const ax = axes.map((a) => normAxis(a, rank)).sort((p, q) => p - q);
    const s: Dim[] = [];
    let j = 0;
    for (let i = 0; i < rank; i++) s.push(ax.includes(i) ? 1 : x.shape[j++]!);
    return this.rec(this.g.unsqueeze(x, axes), s, [x], (gy) => [this.g.squeeze(gy, axes)]);
  }

  squeeze(x: TVal, axes: number[]): TVal {
    const ax = axes.map((a) => normAxis(a, x.shape.length));
    const s = x.shape.filter((_, i) => !ax.includes(i));
    return this.rec(this.g.squeeze(x, axes), s, [x], (gy) => [this.g.unsqueeze(gy, axes)]);
  }

  /** Expand to `shape` (a runtime shape value) whose symbolic form is `outShape`. */
  expand(x: TVal, shape: Value, outShape: readonly Dim[]): TVal {
    const s = broadcastShape(x.shape, outShape);
    return this.rec(this.g.expand(x, shape), s, [x], (gy) => [this.unbroadcast(gy, s, x)]);
  }

  /** Static slice along axes whose sizes are known numbers (the gradient pads with zeros). */
  slice(x: TVal, starts: number[], ends: number[], axes: number[]): TVal {
    const rank = x.shape.length;
    const s = [...x.shape];
    const before = new Array<number>(rank).fill(0);
    const after = new Array<number>(rank).fill(0);
    axes.forEach((a0, i) => {
      const a = normAxis(a0, rank);
      const dim = x.shape[a];
      if (typeof dim !== 'number')
        throw new Error(`autodiff: slice along axis ${a} needs a static size (got ${dim})`);
      const st = Math.max(0, Math.min(dim, starts[i]! < 0 ? starts[i]! + dim : starts[i]!));
      const en = Math.max(st, Math.min(dim, ends[i]! < 0 ? ends[i]! + dim : ends[i]!));
      s[a] = en - st;
      before[a] = st;
      after[a] = dim - en;
    });
    return this.rec(this.g.slice(x, starts, ends, axes), s, [x], (gy) => [
      this.g.pad(gy, [...before, ...after]),
    ]);
  }

  concat(xs: TVal[], axis: number): TVal {
    const rank = xs[0]!.shape.length;
    const a = normAxis(axis, rank);
    const sizes = xs.map((x) => x.shape[a]!);
    const s = [...xs[0]!.shape];
    s[a] = sizes.every((d) => typeof d === 'number')
      ? (sizes as number[]).reduce((p, q) => p + q, 0)
      : `concat_${xs[0]!.name}`;
    return this.rec(this.g.concat(xs, axis), s, xs, (gy) => {
      if (!sizes.every((d) => typeof d === 'number'))
        throw new Error('autodiff: concat gradient needs static sizes along the axis');
      let off = 0;
      return xs.map((x, i) => {
        const n = sizes[i] as number;
        const r = x.req ? this.g.slice(gy, [off], [off + n], [a]) : null;
        off += n;
        return r;
      });
    });
  }

  /** Rows of `table` [V, ...] at integer `idx` (axis 0); the gradient scatter-adds into the table's shape. */
  gather(table: TVal, idx: Value, idxShape: readonly Dim[]): TVal {
    const s = [...idxShape, ...table.shape.slice(1)];
    return this.rec(this.g.gather(table, idx, 0), s, [table], (gy) => {
      const zeros = this.g.expand(this.k(0), this.shapeOf(table));
      return [
        this.g.op('ScatterND', [zeros, this.g.unsqueeze(idx, [-1]), gy], { reduction: 'add' })[0]!,
      ];
    });
  }

  /** Rows of a frozen 8-bit block-quantized table (no gradient). */
  gatherQuantized(
    data: Value,
    idx: Value,
    scales: Value,
    opts: { blockSize: number; bits: number },
    outShape: readonly Dim[],
  ): TVal {
    return this.wrap(this.g.gatherBlockQuantized(data, idx, scales, opts), outShape, 'float32');
  }

  // ---- reductions and normalisations ---------------------------------------------

  private reducedShape(
    x: TVal,
    axes: number[],
    keep: boolean,
  ): { s: Dim[]; ax: number[]; count: number | null } {
    const ax = axes.map((a) => normAxis(a, x.shape.length));
    const s = keep
      ? x.shape.map((d, i) => (ax.includes(i) ? 1 : d))
      : x.shape.filter((_, i) => !ax.includes(i));
    let count: number | null = 1;
    for (const a of ax) {
      const d = x.shape[a]!;
      count = typeof d === 'number' && count !== null ? count * d : null;
    }
    return { s, ax, count };
  }

  reduceSum(x: TVal, axes: number[], keep = true): TVal {
    const { s, ax } = this.reducedShape(x, axes, keep);
    return this.rec(this.g.reduceSum(x, axes, keep), s, [x], (gy) => [
      this.g.expand(keep ? gy : this.g.unsqueeze(gy, ax), this.shapeOf(x)),
    ]);
  }

  reduceMean(x: TVal, axes: number[], keep = true): TVal {
    const { s, ax, count } = this.reducedShape(x, axes, keep);
    if (count === null)
      throw new Error('autodiff: reduceMean gradient needs static sizes along the reduced axes');
    return this.rec(this.g.reduceMean(x, axes, keep), s, [x], (gy) => [
      this.g.expand(
        this.g.div(keep ? gy : this.g.unsqueeze(gy, ax), this.k(count)),
        this.shapeOf(x),
      ),
    ]);
  }

  softmax(x: TVal, axis = -1): TVal {
    const y = this.g.softmax(x, axis);
    return this.rec(y, x.shape, [x], (gy) => {
      const dot = this.g.reduceSum(this.g.mul(gy, y), [axis], true);
      return [this.g.mul(y, this.g.sub(gy, dot))];
    });
  }

  logSoftmax(x: TVal, axis = -1): TVal {
    const y = this.g.op('LogSoftmax', [x], { axis })[0]!;
    return this.rec(y, x.shape, [x], (gy) => {
      const sum = this.g.reduceSum(gy, [axis], true);
      return [this.g.sub(gy, this.g.mul(this.g.exp(y), sum))];
    });
  }

  /**
   * Cross entropy per row of logits [M, V] against integer targets [M] (all valid):
   * logsumexp(row) - row[target], as PyTorch's F.cross_entropy with reduction none.
   * The gradient is g * (softmax(row) - onehot(target)).
   *
   * `lanes` > 0 sums the row's exp(x - max) the way PyTorch's vectorised CPU
   * log_softmax does: `lanes` running float32 sums over the row (element i goes
   * to lane i % lanes), then the lanes. Over ~1e5 mostly tiny terms a float32
   * sum drops what is below half an ulp of the running total, so the order
   * decides a systematic bias (measured on the golden rows: -6e-5 in the mean
   * CE with 8 lanes, the reference's; -3e-5 with 16; -4e-4 with one) that the
   * gradients inherit as a common scale. 0 leaves the sum to LogSoftmax.
   */
  crossEntropy(
    logits: TVal,
    targets: Value,
    lanes = 0,
    laneSum: 'cumsum' | 'matmul' = 'cumsum',
  ): TVal {
    if (logits.shape.length !== 2) throw new Error('autodiff: crossEntropy takes logits [M, V]');
    const V = logits.shape[1]!;
    let logp: Value;
    if (lanes > 0) {
      if (typeof V !== 'number')
        throw new Error('autodiff: crossEntropy lanes need a static vocabulary size');
      const mx = this.g.reduceMax(logits, [-1], true);
      const e = this.g.exp(this.g.sub(logits, mx));
      const width = Math.ceil(V / lanes) * lanes;
      const padded = width === V ? e : this.g.pad(e, [0, 0, 0, width - V]);
      const steps = width / lanes;
      const blocks = this.g.reshape(padded, [0, steps, lanes]);
      // The order must be element after element, in float32 (ReduceSum sums in other orders
      // on CPU and WebGPU). 'cumsum': the last of the running sums (ORT CPU: linear time);
      // 'matmul': a product with ones, which the WebGPU kernel accumulates in order
      // (checked exact), where its CumSum is quadratic.
      const laneSums =
        laneSum === 'cumsum'
          ? this.g.reshape(
              this.g.slice(
                this.g.op('CumSum', [blocks, this.g.constI64([1], [])])[0]!,
                [steps - 1],
                [steps],
                [1],
              ),
              [0, lanes],
            )
          : this.g.reshape(
              this.g.matmul(
                this.g.transpose(blocks, [0, 2, 1]),
                this.g.constF32(new Float32Array(steps).fill(1), [steps, 1]),
              ),
              [0, lanes],
            ); // [M, lanes]
      const lse = this.g.add(mx, this.g.log(this.g.reduceSum(laneSums, [-1], true)));
      logp = this.g.sub(logits, lse);
    } else {
      logp = this.g.op('LogSoftmax', [logits], { axis: -1 })[0]!;
    }
    const t2 = this.g.unsqueeze(targets, [-1]);
    const nll = this.g.neg(
      this.g.squeeze(this.g.op('GatherElements', [logp, t2], { axis: 1 })[0]!, [-1]),
    );
    return this.rec(nll, [logits.shape[0]!], [logits], (gy) => {
      if (typeof V !== 'number')
        throw new Error('autodiff: crossEntropy needs a static vocabulary size');
      const ids = this.g.constI64(
        Array.from({ length: V }, (_, i) => i),
        [1, V],
      );
      const onehot = this.g.cast(this.g.equal(ids, t2), this.dtype);
      return [this.g.mul(this.g.sub(this.g.exp(logp), onehot), this.g.unsqueeze(gy, [-1]))];
    });
  }

  /** Any ONNX op without a gradient (integer maths, masks); wrapped as a constant of the tape. */
  frozen(
    op: string,
    inputs: Value[],
    shape: readonly Dim[],
    dtype: DType,
    attrs: Record<string, AttrValue> = {},
  ): TVal {
    return this.wrap(this.g.op(op, inputs, attrs)[0]!, shape, dtype, false);
  }

  // ---- image ops (NCHW, static spatial sizes) ----------------------------------------

  /** The value itself, cut off from the gradient (torch's .detach()). */
  stopGradient(x: TVal): TVal {
    return this.wrap(this.g.identity(x), x.shape, x.dtype, false);
  }

  /**
   * 2-D convolution of x [B, Ci, H, W] with w [Co, Ci, k, k] (+ bias [Co]),
   * square stride `stride`, zero pads [top, left, bottom, right].
   *  - dx: ConvTranspose of the output gradient with the same weights, strides and pads;
   *    output_padding adds back the rows/columns the forward's stride skipped, so dx has x's size.
   *  - dw: correlation of the padded input with the output gradient: batch and channel axes
   *    swapped, the gradient used as a kernel dilated by the stride; the k x k corner of the
   *    result is the weight gradient (transposed back to [Co, Ci, k, k]).
   *  - db: sum over batch and space.
   */
  conv2d(
    x: TVal,
    w: TVal,
    b: TVal | null,
    opts: { stride?: number; pads?: readonly [number, number, number, number] } = {},
  ): TVal {
    const s = opts.stride ?? 1;
    const [B, Ci, H, W] = x.shape;
    const [Co, wCi, kh, kw] = w.shape;
    if (
      typeof H !== 'number' ||
      typeof W !== 'number' ||
      typeof kh !== 'number' ||
      typeof kw !== 'number'
    )
      throw new Error('autodiff: conv2d needs static spatial sizes and kernel');
    if (wCi !== Ci)
      throw new Error(`autodiff: conv2d input has ${Ci} channels, weight expects ${wCi}`);
    const pd = opts.pads ?? [(kh - 1) / 2, (kw - 1) / 2, (kh - 1) / 2, (kw - 1) / 2];
    const Hp = H + pd[0] + pd[2];
    const Wp = W + pd[1] + pd[3];
    const Ho = Math.floor((Hp - kh) / s) + 1;
    const Wo = Math.floor((Wp - kw) / s) + 1;
    const pads = [pd[0], pd[1], pd[2], pd[3]];
    const y = this.g.op('Conv', b ? [x, w, b] : [x, w], { strides: [s, s], pads })[0]!;
    const ins = b ? [x, w, b] : [x, w];
    return this.rec(y, [B!, Co!, Ho, Wo], ins, (gy) => {
      let dx: Value | null = null;
      if (x.req) {
        if (s === 1 && pd[0] === pd[2] && pd[1] === pd[3] && pd[0] <= kh - 1 && pd[1] <= kw - 1) {
          // Stride 1: a plain convolution of the gradient with the flipped, transposed kernel
          // (ORT's Conv is much faster than its ConvTranspose on CPU).
          const flipped = this.g.slice(w, [-1, -1], [-(2 ** 62), -(2 ** 62)], [2, 3], [-1, -1]);
          const wt = this.g.transpose(flipped, [1, 0, 2, 3]);
          const q0 = kh - 1 - pd[0];
          const q1 = kw - 1 - pd[1];
          dx = this.g.op('Conv', [gy, wt], { pads: [q0, q1, q0, q1] })[0]!;
        } else {
          const opH = H - (s * (Ho - 1) + kh - pd[0] - pd[2]);
          const opW = W - (s * (Wo - 1) + kw - pd[1] - pd[3]);
          dx = this.g.op('ConvTranspose', [gy, w], {
            strides: [s, s],
            pads,
            ...(opH > 0 || opW > 0 ? { output_padding: [opH, opW] } : {}),
          })[0]!;
        }
      }
      let dw: Value | null = null;
      if (w.req) {
        // Per kernel tap: a strided slice of the padded input (a view of what that tap
        // saw) times the output gradient, summed over positions by one batched matmul.
        const xp = pads.some((p) => p > 0)
          ? this.g.pad(x, [0, 0, pd[0], pd[1], 0, 0, pd[2], pd[3]])
          : x;
        const gyf = this.g.reshape(gy, [0, Co as number, Ho * Wo]);
        const parts: Value[] = [];
        for (let i = 0; i < kh; i++)
          for (let j = 0; j < kw; j++) {
            const tap =
              kh === 1 && kw === 1 && s === 1
                ? xp
                : this.g.slice(
                    xp,
                    [i, j],
                    [i + s * (Ho - 1) + 1, j + s * (Wo - 1) + 1],
                    [2, 3],
                    [s, s],
                  );
            const cols = this.g.reshape(tap, [0, Ci as number, Ho * Wo]);
            parts.push(this.g.matmul(gyf, this.g.transpose(cols, [0, 2, 1]))); // [B, Co, Ci]
          }
        const per = parts.length === 1 ? parts[0]! : this.g.concat(parts, 2); // [B, Co, kh*kw*Ci]
        const sum = this.g.reduceSum(per, [0], false);
        dw = this.g.transpose(
          this.g.reshape(sum, [Co as number, kh, kw, Ci as number]),
          [0, 3, 1, 2],
        );
      }
      const db = b && b.req ? this.g.reduceSum(gy, [0, 2, 3], false) : null;
      return b ? [dx, dw, db] : [dx, dw];
    });
  }

  /** Nearest-neighbour 2x upsampling of [B, C, H, W]; the gradient sums each 2x2 block. */
  upsample2x(x: TVal): TVal {
    const [B, C, H, W] = x.shape;
    if (typeof H !== 'number' || typeof W !== 'number')
      throw new Error('autodiff: upsample2x needs static spatial sizes');
    const y = this.g.resizeNearest(x, [1, 1, 2, 2]);
    return this.rec(y, [B!, C!, 2 * H, 2 * W], [x], (gy) => [
      this.g.reduceSum(this.g.reshape(gy, [0, 0, H, 2, W, 2]), [3, 5], false),
    ]);
  }

  /**
   * GroupNorm without its affine part: x [B, C, ...] normalised over each group of
   * C/groups channels and all positions (biased variance, eps inside the root).
   * Own VJP: dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) per group.
   */
  groupNormalize(x: TVal, groups: number, eps: number): TVal {
    const C = x.shape[1];
    if (typeof C !== 'number' || C % groups !== 0)
      throw new Error(`autodiff: groupNormalize: ${groups} groups do not divide ${C} channels`);
    const g = this.g;
    const xs = g.reshape(x, [0, groups, -1]);
    const mean = g.reduceMean(xs, [2], true);
    const d = g.sub(xs, mean);
    const variance = g.reduceMean(g.mul(d, d), [2], true);
    const rstd = g.reciprocal(g.sqrt(g.add(variance, this.k(eps))));
    const xhat = g.mul(d, rstd);
    const y = g.reshape(xhat, this.shapeOf(x));
    return this.rec(y, x.shape, [x], (gy) => {
      const gs = g.reshape(gy, [0, groups, -1]);
      const m1 = g.reduceMean(gs, [2], true);
      const m2 = g.reduceMean(g.mul(gs, xhat), [2], true);
      const dx = g.mul(rstd, g.sub(g.sub(gs, m1), g.mul(xhat, m2)));
      return [g.reshape(dx, this.shapeOf(x))];
    });
  }

  // ---- recomputation ---------------------------------------------------------------

  /**
   * `fn(tape, ins)` with its activations recomputed in the backward pass
   * (gradient checkpointing): the forward runs on a tape that records nothing,
   * so ORT frees its intermediates; the backward runs `fn` again on a nested
   * tape from the first input plus an exact zero made from the incoming
   * gradient's shape (so ORT can neither merge the copy with the forward nor
   * run it before the gradient exists) and differentiates that copy.
   * `ins` holds every value of `fn` that needs a gradient (its activation
   * input first, then trainable weights); frozen values may be captured.
   */
  checkpoint(ins: TVal[], fn: (t: Tape, ins: TVal[]) => TVal): TVal {
    const quiet = new Tape(this.g, this.dtype);
    const y = fn(
      quiet,
      ins.map((v) => quiet.wrap(v, v.shape, v.dtype, false)),
    );
    return this.rec(y, y.shape, ins, (gy) => {
      const sub = new Tape(this.g, this.dtype);
      const zero = this.g.cast(
        this.g.reduceSum(this.g.mul(this.g.shape(gy), this.g.constI64([0], [])), [0], false),
        ins[0]!.dtype,
      );
      const leaves = ins.map((v) => sub.wrap(v, v.shape, v.dtype, v.req));
      const x0 = sub.wrap(this.g.add(ins[0]!, zero), ins[0]!.shape, ins[0]!.dtype, true);
      const y2 = fn(sub, [x0, ...leaves.slice(1)]);
      const grads = sub.gradients(y2, [x0, ...leaves.slice(1)], gy);
      return grads;
    });
  }

  // ---- backward ------------------------------------------------------------------

  /**
   * Appends the backward pass: d(sum(y * seed))/d(w) for each w in `wrt` (seed
   * defaults to ones, i.e. the gradient of y itself when y is a scalar). Returns
   * one gradient per `wrt` entry, or null where y does not depend on it.
   */
  gradients(y: TVal, wrt: TVal[], seed?: Value): (Value | null)[] {
    const grads = new Map<string, Value>();
    const addGrad = (name: string, gv: Value): void => {
      const prev = grads.get(name);
      grads.set(name, prev ? this.g.add(prev, gv) : gv);
    };
    addGrad(y.name, seed ?? this.g.expand(this.k(1), this.shapeOf(y)));
    for (let i = this.entries.length - 1; i >= 0; i--) {
      const e = this.entries[i]!;
      const gy = grads.get(e.out.name);
      if (!gy) continue;
      const gins = e.vjp(gy);
      e.ins.forEach((inp, j) => {
        const gi = gins[j];
        if (inp.req && gi) addGrad(inp.name, gi);
      });
    }
    return wrt.map((w) => grads.get(w.name) ?? null);
  }
}
