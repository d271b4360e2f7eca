/**
 * A small, explicit ONNX graph builder.
 *
 * Every op the project emits goes through a typed method here, so the op set
 * stays small and known (each one has a well-defined derivative, which a later
 * reverse-mode pass can rely on). Weights are either inline initializers or
 * external data pointing straight into .safetensors files (ORT memory-maps
 * them; nothing is copied at build time).
 */
import { AttributeType, ModelProto, OnnxDataType, type DType } from './proto.js';

export type { DType } from './proto.js';

/** A symbolic tensor in the graph under construction. */
export interface Value {
  readonly name: string;
}

export type Dim = number | string;

export type AttrValue = number | number[] | string | { float: number } | { floats: number[] };

interface NodeSpec {
  op_type: string;
  domain?: string;
  input: string[];
  output: string[];
  name: string;
  attribute: Record<string, unknown>[];
}

export interface ExternalRef {
  /** Path of the data file, relative to the directory the .onnx file is saved in. */
  location: string;
  /** Absolute byte offset of the tensor data in that file. */
  offset: number;
  length: number;
}

const OPSET = 18;

function attr(name: string, v: AttrValue): Record<string, unknown> {
  if (typeof v === 'number') {
    if (!Number.isInteger(v)) throw new Error(`attribute ${name}: use {float} for non-integers`);
    return { name, type: AttributeType.INT, i: v };
  }
  if (typeof v === 'string')
    return { name, type: AttributeType.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return { name, type: AttributeType.INTS, ints: v };
  if ('float' in v) return { name, type: AttributeType.FLOAT, f: v.float };
  return { name, type: AttributeType.FLOATS, floats: v.floats };
}

function valueInfo(name: string, dtype: DType, shape: readonly Dim[]) {
  return {
    name,
    type: {
      tensor_type: {
        elem_type: OnnxDataType[dtype],
        shape: {
          dim: shape.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d })),
        },
      },
    },
  };
}

function bytesOf(data: ArrayBufferView): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

export class GraphBuilder {
  private readonly nodes: NodeSpec[] = [];
  private readonly inits: Record<string, unknown>[] = [];
  private readonly inputs: ReturnType<typeof valueInfo>[] = [];
  private readonly outputs: ReturnType<typeof valueInfo>[] = [];
  private readonly usedNames = new Set<string>();
  private counter = 0;
  private readonly constCache = new Map<string, Value>();
  private usesMsDomain = false;

  constructor(readonly graphName = 'dimoo') {}

  /** A new unique name (not yet claimed). */
  private fresh(hint: string): string {
    let n = `${hint}_${this.counter++}`;
    while (this.usedNames.has(n)) n = `${hint}_${this.counter++}`;
    return n;
  }

  private claim(name: string): string {
    if (this.usedNames.has(name)) throw new Error(`graph value name used twice: ${name}`);
    this.usedNames.add(name);
    return name;
  }

  // ---- graph interface -------------------------------------------------

  input(name: string, dtype: DType, shape: readonly Dim[]): Value {
    this.inputs.push(valueInfo(this.claim(name), dtype, shape));
    return { name };
  }

  /** Marks `v` as a graph output named `name` (an Identity is inserted when names differ). */
  output(v: Value, name: string, dtype: DType, shape: readonly Dim[]): void {
    if (v.name !== name) {
      this.claim(name);
      this.nodes.push({
        op_type: 'Identity',
        input: [v.name],
        output: [name],
        name: `out_${name}`,
        attribute: [],
      });
    }
    this.outputs.push(valueInfo(name, dtype, shape));
  }

  /** A weight stored inline in the model. */
  initializer(name: string, dtype: DType, dims: readonly number[], data: ArrayBufferView): Value {
    this.inits.push({
      name: this.claim(name),
      data_type: OnnxDataType[dtype],
      dims,
      raw_data: bytesOf(data),
    });
    return { name };
  }

  /** A weight whose bytes stay in a file beside the model (e.g. inside a .safetensors shard). */
  external(name: string, dtype: DType, dims: readonly number[], ref: ExternalRef): Value {
    this.inits.push({
      name: this.claim(name),
      data_type: OnnxDataType[dtype],
      dims,
      data_location: 1,
      external_data: [
        { key: 'location', value: ref.location },
        { key: 'offset', value: String(ref.offset) },
        { key: 'length', value: String(ref.length) },
      ],
    });
    return { name };
  }

  /** Small constant tensors, deduplicated. */
  constI64(values: readonly number[], dims: readonly number[] = [values.length]): Value {
    const key = `i64:${dims.join('x')}:${values.join(',')}`;
    let v = this.constCache.get(key);
    if (!v) {
      v = this.initializer(
        this.fresh('c_i64'),
        'int64',
        dims,
        BigInt64Array.from(values, (x) => BigInt(x)),
      );
      this.constCache.set(key, v);
    }
    return v;
  }

  constF32(
    values: readonly number[] | Float32Array,
    dims: readonly number[] = [values.length],
  ): Value {
    const arr = values instanceof Float32Array ? values : Float32Array.from(values);
    if (arr.length <= 16) {
      const key = `f32:${dims.join('x')}:${Array.from(arr).join(',')}`;
      let v = this.constCache.get(key);
      if (!v) {
        v = this.initializer(this.fresh('c_f32'), 'float32', dims, arr);
        this.constCache.set(key, v);
      }
      return v;
    }
    return this.initializer(this.fresh('c_f32'), 'float32', dims, arr);
  }

  scalarF32(x: number): Value {
    return this.constF32([x], []);
  }

  /** A float64 scalar constant, deduplicated. */
  scalarF64(x: number): Value {
    const key = `f64::${x}`;
    let v = this.constCache.get(key);
    if (!v) {
      v = this.initializer(this.fresh('c_f64'), 'float64', [], Float64Array.of(x));
      this.constCache.set(key, v);
    }
    return v;
  }

  // ---- ops -------------------------------------------------------------

  private node(
    op: string,
    inputs: (Value | null)[],
    attrs: Record<string, AttrValue> = {},
    nOut = 1,
    domain?: string,
  ): Value[] {
    const outs = Array.from({ length: nOut }, () => this.claim(this.fresh(op.toLowerCase())));
    this.nodes.push({
      op_type: op,
      domain,
      input: inputs.map((v) => (v ? v.name : '')),
      output: outs,
      name: this.fresh(`n_${op}`),
      attribute: Object.entries(attrs).map(([k, v]) => attr(k, v)),
    });
    if (domain === 'com.microsoft') this.usesMsDomain = true;
    return outs.map((name) => ({ name }));
  }

  private one(op: string, inputs: (Value | null)[], attrs: Record<string, AttrValue> = {}): Value {
    return this.node(op, inputs, attrs)[0]!;
  }

  /**
   * Any ONNX op by name, for graph layers (such as the gradient builder) that need
   * ops this class has no typed method for. `null` inputs are omitted optional ones.
   */
  op(
    op: string,
    inputs: (Value | null)[],
    attrs: Record<string, AttrValue> = {},
    nOut = 1,
    domain?: string,
  ): Value[] {
    return this.node(op, inputs, attrs, nOut, domain);
  }

  add(a: Value, b: Value): Value {
    return this.one('Add', [a, b]);
  }
  sub(a: Value, b: Value): Value {
    return this.one('Sub', [a, b]);
  }
  mul(a: Value, b: Value): Value {
    return this.one('Mul', [a, b]);
  }
  div(a: Value, b: Value): Value {
    return this.one('Div', [a, b]);
  }
  neg(a: Value): Value {
    return this.one('Neg', [a]);
  }
  sqrt(a: Value): Value {
    return this.one('Sqrt', [a]);
  }
  reciprocal(a: Value): Value {
    return this.one('Reciprocal', [a]);
  }
  exp(a: Value): Value {
    return this.one('Exp', [a]);
  }
  log(a: Value): Value {
    return this.one('Log', [a]);
  }
  sigmoid(a: Value): Value {
    return this.one('Sigmoid', [a]);
  }
  cos(a: Value): Value {
    return this.one('Cos', [a]);
  }
  sin(a: Value): Value {
    return this.one('Sin', [a]);
  }
  matmul(a: Value, b: Value): Value {
    return this.one('MatMul', [a, b]);
  }
  /** Gemm with B transposed: a @ b^T (+ c). Lets [out, in] PyTorch weights be used without a transpose. */
  gemmTransB(a: Value, b: Value, c?: Value): Value {
    return this.one('Gemm', c ? [a, b, c] : [a, b], { transB: 1 });
  }
  cast(a: Value, to: DType): Value {
    return this.one('Cast', [a], { to: OnnxDataType[to] });
  }
  identity(a: Value): Value {
    return this.one('Identity', [a]);
  }

  reshape(x: Value, shape: readonly number[] | Value): Value {
    return this.one('Reshape', [x, Array.isArray(shape) ? this.constI64(shape) : (shape as Value)]);
  }
  transpose(x: Value, perm: number[]): Value {
    return this.one('Transpose', [x], { perm });
  }
  concat(xs: Value[], axis: number): Value {
    return this.one('Concat', xs, { axis });
  }
  unsqueeze(x: Value, axes: number[]): Value {
    return this.one('Unsqueeze', [x, this.constI64(axes)]);
  }
  squeeze(x: Value, axes: number[]): Value {
    return this.one('Squeeze', [x, this.constI64(axes)]);
  }
  shape(x: Value, start?: number, end?: number): Value {
    const a: Record<string, AttrValue> = {};
    if (start !== undefined) a.start = start;
    if (end !== undefined) a.end = end;
    return this.one('Shape', [x], a);
  }
  expand(x: Value, shape: Value): Value {
    return this.one('Expand', [x, shape]);
  }
  slice(
    x: Value,
    starts: number[] | Value,
    ends: number[] | Value,
    axes: number[],
    steps?: number[],
  ): Value {
    const s = Array.isArray(starts) ? this.constI64(starts) : starts;
    const e = Array.isArray(ends) ? this.constI64(ends) : ends;
    const ins = [x, s, e, this.constI64(axes)];
    if (steps) ins.push(this.constI64(steps));
    return this.one('Slice', ins);
  }
  gather(x: Value, indices: Value, axis = 0): Value {
    return this.one('Gather', [x, indices], { axis });
  }
  /** Writes `updates` into `data` at `indices` (last index dim addresses leading dims of data). */
  scatterND(data: Value, indices: Value, updates: Value): Value {
    return this.one('ScatterND', [data, indices, updates]);
  }
  where(cond: Value, a: Value, b: Value): Value {
    return this.one('Where', [cond, a, b]);
  }
  equal(a: Value, b: Value): Value {
    return this.one('Equal', [a, b]);
  }
  softmax(x: Value, axis: number): Value {
    return this.one('Softmax', [x], { axis });
  }
  reduceMean(x: Value, axes: number[], keepdims = true): Value {
    return this.one('ReduceMean', [x, this.constI64(axes)], { keepdims: keepdims ? 1 : 0 });
  }
  reduceMax(x: Value, axes: number[], keepdims = true): Value {
    return this.one('ReduceMax', [x, this.constI64(axes)], { keepdims: keepdims ? 1 : 0 });
  }
  reduceSum(x: Value, axes: number[], keepdims = true): Value {
    return this.one('ReduceSum', [x, this.constI64(axes)], { keepdims: keepdims ? 1 : 0 });
  }
  reduceLogSumExp(x: Value, axes: number[], keepdims = true): Value {
    return this.one('ReduceLogSumExp', [x, this.constI64(axes)], { keepdims: keepdims ? 1 : 0 });
  }
  argMax(x: Value, axis: number, keepdims = false): Value {
    return this.one('ArgMax', [x], { axis, keepdims: keepdims ? 1 : 0, select_last_index: 0 });
  }
  argMin(x: Value, axis: number, keepdims = false): Value {
    return this.one('ArgMin', [x], { axis, keepdims: keepdims ? 1 : 0, select_last_index: 0 });
  }
  clip(x: Value, min: number, max: number): Value {
    return this.one('Clip', [x, this.scalarF32(min), this.scalarF32(max)]);
  }
  /** 2-D convolution, NCHW, weights [out, in, kh, kw]. */
  conv(
    x: Value,
    w: Value,
    b: Value | null,
    opts: { strides?: number[]; pads?: number[] } = {},
  ): Value {
    const a: Record<string, AttrValue> = {};
    if (opts.strides) a.strides = opts.strides;
    if (opts.pads) a.pads = opts.pads;
    return this.one('Conv', b ? [x, w, b] : [x, w], a);
  }
  /**
   * InstanceNormalization over every axis after the second: x [N, C, ...] normalised per (n, c),
   * then * scale[c] + bias[c]. GroupNorm is this on x reshaped to [N, groups, -1].
   */
  instanceNorm(x: Value, scale: Value, bias: Value, eps: number): Value {
    return this.one('InstanceNormalization', [x, scale, bias], { epsilon: { float: eps } });
  }
  /** Constant zero padding; pads = [x1_begin, x2_begin, ..., x1_end, x2_end, ...]. */
  pad(x: Value, pads: number[]): Value {
    return this.one('Pad', [x, this.constI64(pads)], { mode: 'constant' });
  }
  /** Nearest-neighbour upsampling by integer factors (PyTorch F.interpolate(mode='nearest') semantics). */
  resizeNearest(x: Value, scales: number[]): Value {
    return this.one('Resize', [x, null, this.constF32(scales)], {
      mode: 'nearest',
      nearest_mode: 'floor',
      coordinate_transformation_mode: 'asymmetric',
    });
  }
  /** ORT contrib op: y = A @ dequant(B) with B block-quantized ([N, n_blocks, blob] uint8). */
  matMulNBits(
    a: Value,
    b: Value,
    scales: Value,
    zeroPoints: Value | null,
    opts: { K: number; N: number; bits: number; blockSize: number; accuracyLevel?: number },
  ): Value {
    return this.node(
      'MatMulNBits',
      zeroPoints ? [a, b, scales, zeroPoints] : [a, b, scales],
      {
        K: opts.K,
        N: opts.N,
        bits: opts.bits,
        block_size: opts.blockSize,
        accuracy_level: opts.accuracyLevel ?? 0,
      },
      1,
      'com.microsoft',
    )[0]!;
  }

  /**
   * ORT contrib op: y = A @ dequant(B) (+ bias) with A float quantized to uint8 on the fly
   * (one scale and zero point for the whole tensor) and B int8 [K, N] with a scale per
   * column (b_scale [N]); MLAS's integer GEMM (VNNI), B prepacked at load.
   */
  dynamicQuantizeMatMul(
    a: Value,
    b: Value,
    bScale: Value,
    bZeroPoint: Value | null = null,
    bias: Value | null = null,
  ): Value {
    const ins = [a, b, bScale, bZeroPoint, bias];
    while (ins.length > 3 && ins[ins.length - 1] === null) ins.pop();
    return this.node('DynamicQuantizeMatMul', ins, {}, 1, 'com.microsoft')[0]!;
  }

  /**
   * ORT contrib op: y = (A - a_zp) * a_scale @ (B - b_zp) * b_scale (+ bias) for 8-bit A and
   * B; the scales multiply the int32 accumulators in the GEMM's output stage.
   */
  matMulIntegerToFloat(
    a: Value,
    b: Value,
    aScale: Value,
    bScale: Value,
    aZeroPoint: Value | null,
    bZeroPoint: Value | null = null,
    bias: Value | null = null,
  ): Value {
    const ins = [a, b, aScale, bScale, aZeroPoint, bZeroPoint, bias];
    while (ins.length > 4 && ins[ins.length - 1] === null) ins.pop();
    return this.node('MatMulIntegerToFloat', ins, {}, 1, 'com.microsoft')[0]!;
  }

  /** ONNX MatMulInteger: int32 (A - a_zp) @ (B - b_zp). */
  matMulInteger(
    a: Value,
    b: Value,
    aZeroPoint: Value | null = null,
    bZeroPoint: Value | null = null,
  ): Value {
    const ins = [a, b, aZeroPoint, bZeroPoint];
    while (ins.length > 2 && ins[ins.length - 1] === null) ins.pop();
    return this.one('MatMulInteger', ins);
  }

  /** ONNX QuantizeLinear: saturate(round(x / scale) + zero_point); per-axis when scale is 1-D. */
  quantizeLinear(x: Value, scale: Value, zeroPoint: Value | null, axis = 1): Value {
    return this.one('QuantizeLinear', zeroPoint ? [x, scale, zeroPoint] : [x, scale], { axis });
  }

  abs(a: Value): Value {
    return this.one('Abs', [a]);
  }
  reduceMin(x: Value, axes: number[], keepdims = true): Value {
    return this.one('ReduceMin', [x, this.constI64(axes)], { keepdims: keepdims ? 1 : 0 });
  }

  /**
   * ORT contrib op: rows `indices` of a table quantized in blocks along its last axis
   * (data [N, K] uint8 with the implicit zero point 128 at 8 bits; scales [N, K / blockSize]).
   */
  gatherBlockQuantized(
    data: Value,
    indices: Value,
    scales: Value,
    opts: { blockSize: number; bits: number },
  ): Value {
    return this.node(
      'GatherBlockQuantized',
      [data, indices, scales],
      { gather_axis: 0, quantize_axis: 1, block_size: opts.blockSize, bits: opts.bits },
      1,
      'com.microsoft',
    )[0]!;
  }

  // ---- serialization ---------------------------------------------------

  toBytes(docString = ''): Uint8Array {
    const opset = [{ domain: '', version: OPSET }];
    if (this.usesMsDomain) opset.push({ domain: 'com.microsoft', version: 1 });
    const model = {
      ir_version: 8,
      producer_name: 'dimoo',
      producer_version: '0.1.0',
      doc_string: docString,
      opset_import: opset,
      graph: {
        name: this.graphName,
        node: this.nodes,
        initializer: this.inits,
        input: this.inputs,
        output: this.outputs,
      },
    };
    const err = ModelProto.verify(model);
    if (err) throw new Error(`internal: invalid ONNX model: ${err}`);
    return ModelProto.encode(ModelProto.fromObject(model)).finish();
  }
}
