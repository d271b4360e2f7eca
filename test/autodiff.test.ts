/**
 * Every op's vector-Jacobian product (src/graph/autodiff.ts) against central
 * finite differences of the same ONNX graph's forward.
 *
 * f(x) = sum(op(x) * r) for a random r; the graph returns op(x) and df/dx.
 * Ops ORT runs in float64 on CPU are checked in float64 (step 1e-6, relative
 * error <= 1e-6); the rest (ORT has no float64 kernel: Softmax, Sigmoid, ...,
 * MatMulNBits) in float32 with step 1e-2 and relative error <= 2e-2, which
 * still catches any wrong formula (those are off by O(1)).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as ort from 'onnxruntime-node';
import { GraphBuilder, type Dim, type Value } from '../src/graph/onnx/builder.js';
import { Tape, type FloatType, type TVal } from '../src/graph/autodiff.js';
import { quantizeRows, dequantizeRows } from '../src/checkpoint/quant-blocks.js';

/** Deterministic pseudo-random numbers in [-1, 1). */
function rand(n: number, seed: number): number[] {
  let s = seed >>> 0 || 1;
  return Array.from({ length: n }, () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return (s / 2 ** 32) * 2 - 1;
  });
}

interface Var {
  name: string;
  shape: number[];
  /** Initial values (default: random in [-1, 1) + offset). */
  values?: number[];
  offset?: number;
}

type Build = (t: Tape, vars: TVal[]) => TVal;

const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

async function checkOp(
  label: string,
  vars: Var[],
  build: Build,
  dtype: FloatType,
  extraFeeds: Record<string, ort.Tensor> = {},
  step?: { h: number; tol: number },
): Promise<void> {
  const g = new GraphBuilder('fd');
  const t = new Tape(g, dtype);
  const xs = vars.map((v) => t.input(v.name, dtype, v.shape, true));
  const y = build(t, xs);
  const yShape = y.shape as number[];
  const r = g.input('r', dtype, yShape as Dim[]);
  g.output(y, 'y', dtype, yShape);
  const grads = t.gradients(y, xs, r as Value);
  grads.forEach((gr, i) => {
    assert.ok(gr, `${label}: no gradient for ${vars[i]!.name}`);
    g.output(gr, `grad_${i}`, dtype, vars[i]!.shape);
  });
  const session = await ort.InferenceSession.create(g.toBytes());
  const Arr = dtype === 'float64' ? Float64Array : Float32Array;
  const vals = vars.map(
    (v, i) => v.values ?? rand(numel(v.shape), 17 + i * 101).map((x) => x + (v.offset ?? 0)),
  );
  const rv = rand(yShape.length === 0 ? 1 : numel(yShape), 999);
  const feeds = (vv: number[][]): Record<string, ort.Tensor> => {
    const f: Record<string, ort.Tensor> = {
      ...extraFeeds,
      r: new ort.Tensor(dtype, Arr.from(rv), yShape),
    };
    vars.forEach((v, i) => (f[v.name] = new ort.Tensor(dtype, Arr.from(vv[i]!), v.shape)));
    return f;
  };
  const f = async (vv: number[][]): Promise<number> => {
    const out = await session.run(feeds(vv), ['y']);
    const yd = out.y!.data as Float32Array | Float64Array;
    let s = 0;
    for (let i = 0; i < yd.length; i++) s += yd[i]! * rv[i]!;
    return s;
  };
  const out = await session.run(feeds(vals));
  const h = step?.h ?? (dtype === 'float64' ? 1e-6 : 1e-2);
  const tol = step?.tol ?? (dtype === 'float64' ? 1e-6 : 2e-2);
  for (let i = 0; i < vars.length; i++) {
    const analytic = out[`grad_${i}`]!.data as Float32Array | Float64Array;
    let maxErr = 0;
    let scale = 0;
    for (let j = 0; j < vals[i]!.length; j++) {
      const plus = vals.map((v) => [...v]);
      const minus = vals.map((v) => [...v]);
      plus[i]![j]! += h;
      minus[i]![j]! -= h;
      const fd = ((await f(plus)) - (await f(minus))) / (2 * h);
      maxErr = Math.max(maxErr, Math.abs(fd - analytic[j]!));
      scale = Math.max(scale, Math.abs(fd));
    }
    assert.ok(
      maxErr <= tol * Math.max(1, scale),
      `${label} d/d${vars[i]!.name}: max error ${maxErr} (scale ${scale}, ${dtype})`,
    );
  }
  await session.release();
}

const F64 = 'float64' as const;
const F32 = 'float32' as const;

test('elementwise ops with broadcasting (float64)', async () => {
  const ab = [
    { name: 'a', shape: [2, 3, 4] },
    { name: 'b', shape: [3, 1], offset: 2 },
  ];
  await checkOp('add', ab, (t, [a, b]) => t.add(a!, b!), F64);
  await checkOp('sub', ab, (t, [a, b]) => t.sub(b!, a!), F64);
  await checkOp('mul', ab, (t, [a, b]) => t.mul(a!, b!), F64);
  await checkOp('div', ab, (t, [a, b]) => t.div(a!, b!), F64);
  await checkOp(
    'div scalar-ish',
    [
      { name: 'a', shape: [1], offset: 3 },
      { name: 'b', shape: [2, 3] },
    ],
    (t, [a, b]) => t.div(b!, a!),
    F64,
  );
  const pos = [{ name: 'x', shape: [2, 5], offset: 2 }];
  await checkOp('neg', pos, (t, [x]) => t.neg(x!), F64);
  await checkOp('sqrt', pos, (t, [x]) => t.sqrt(x!), F64);
  await checkOp('reciprocal', pos, (t, [x]) => t.reciprocal(x!), F64);
  await checkOp('pow 2', pos, (t, [x]) => t.pow(x!, 2), F64);
  await checkOp('pow 3', pos, (t, [x]) => t.pow(x!, 3), F64);
  await checkOp('exp', pos, (t, [x]) => t.exp(x!), F64);
  await checkOp('log', pos, (t, [x]) => t.log(x!), F64);
});

test('activations and normalisation (float32: no float64 kernels)', async () => {
  const x = [{ name: 'x', shape: [3, 6] }];
  await checkOp('sigmoid', x, (t, [v]) => t.sigmoid(v!), F32);
  await checkOp('silu', x, (t, [v]) => t.silu(v!), F32);
  await checkOp('softmax', x, (t, [v]) => t.softmax(t.mul(v!, t.scalar(3)), -1), F32);
  await checkOp('logSoftmax', x, (t, [v]) => t.logSoftmax(v!, -1), F32);
});

test('reductions, casts and where (float64)', async () => {
  const x = [{ name: 'x', shape: [2, 3, 4] }];
  await checkOp('reduceSum keep', x, (t, [v]) => t.reduceSum(v!, [-1], true), F64);
  await checkOp('reduceSum drop', x, (t, [v]) => t.reduceSum(v!, [0, 2], false), F64);
  await checkOp('reduceMean keep', x, (t, [v]) => t.reduceMean(v!, [-1], true), F64);
  await checkOp('reduceMean drop', x, (t, [v]) => t.reduceMean(v!, [1], false), F64);
  await checkOp(
    'cast f64 -> f32 -> f64',
    x,
    (t, [v]) =>
      t.cast(t.mul(t.cast(v!, 'float32'), t.wrap(t.g.scalarF32(1.5), [], 'float32')), 'float64'),
    F64,
    {},
    {
      // Linear in x, but rounded to float32 on the way: a large step keeps the rounding small.
      h: 1e-2,
      tol: 1e-4,
    },
  );
  await checkOp(
    'where',
    [
      { name: 'a', shape: [2, 3] },
      { name: 'b', shape: [3] },
    ],
    (t, [a, b]) => {
      const cond = t.g.constI64([1, 0, 1, 0, 0, 1], [2, 3]);
      return t.where(t.g.cast(cond, 'bool'), [2, 3], a!, b!);
    },
    F64,
  );
});

test('matmul (batch broadcast), linear and shape ops (float64)', async () => {
  await checkOp(
    'matmul',
    [
      { name: 'a', shape: [2, 3, 4, 5] },
      { name: 'b', shape: [2, 1, 5, 3] },
    ],
    (t, [a, b]) => t.matmul(a!, b!),
    F64,
  );
  await checkOp(
    'linear + bias',
    [
      { name: 'x', shape: [4, 5] },
      { name: 'w', shape: [3, 5] },
      { name: 'b', shape: [3] },
    ],
    (t, [x, w, b]) => t.linear(x!, w!, b!),
    F64,
  );
  const x = [{ name: 'x', shape: [2, 3, 4] }];
  await checkOp('reshape', x, (t, [v]) => t.reshape(v!, [0, -1], [2, 12]), F64);
  await checkOp('transpose', x, (t, [v]) => t.transpose(v!, [2, 0, 1]), F64);
  await checkOp('unsqueeze', x, (t, [v]) => t.unsqueeze(v!, [1]), F64);
  await checkOp('squeeze', [{ name: 'x', shape: [2, 1, 4] }], (t, [v]) => t.squeeze(v!, [1]), F64);
  await checkOp(
    'expand',
    [{ name: 'x', shape: [3, 1] }],
    (t, [v]) => t.expand(v!, t.g.constI64([2, 3, 4]), [2, 3, 4]),
    F64,
  );
  await checkOp('slice', x, (t, [v]) => t.slice(v!, [1], [3], [-1]), F64);
  await checkOp(
    'concat',
    [
      { name: 'a', shape: [2, 3] },
      { name: 'b', shape: [2, 2] },
    ],
    (t, [a, b]) => t.concat([t.neg(b!), a!], -1),
    F64,
  );
});

test('gather scatter-adds repeated rows (float64)', async () => {
  const g = (t: Tape, [table]: TVal[]): TVal =>
    t.gather(table!, t.g.constI64([2, 0, 2, 3, 2], [5]), [5]);
  await checkOp('gather', [{ name: 'table', shape: [4, 3] }], g, F64);
  await checkOp(
    'gather 2-D ids',
    [{ name: 'table', shape: [5, 2] }],
    (t, [table]) => t.gather(table!, t.g.constI64([4, 4, 1, 0], [2, 2]), [2, 2]),
    F64,
  );
});

test('cross entropy (float32)', async () => {
  const targets = new ort.Tensor('int64', BigInt64Array.from([3n, 0n, 3n]), [3]);
  await checkOp(
    'crossEntropy',
    [{ name: 'x', shape: [3, 5] }],
    (t, [x]) => t.crossEntropy(t.mul(x!, t.scalar(4)), t.g.input('targets', 'int64', [3])),
    F32,
    { targets },
  );
  // The in-order lane sums (PyTorch's float32 summation order) compute the same function.
  for (const laneSum of ['cumsum', 'matmul'] as const) {
    await checkOp(
      `crossEntropy, 2 lanes by ${laneSum}`,
      [{ name: 'x', shape: [3, 5] }],
      (t, [x]) =>
        t.crossEntropy(t.mul(x!, t.scalar(4)), t.g.input('targets', 'int64', [3]), 2, laneSum),
      F32,
      { targets },
    );
  }
});

test('composite RMSNorm and rotate-half RoPE (float64)', async () => {
  await checkOp(
    'rmsnorm',
    [
      { name: 'x', shape: [3, 8] },
      { name: 'w', shape: [8], offset: 1 },
    ],
    (t, [x, w]) => {
      const ms = t.reduceMean(t.mul(x!, x!), [-1]);
      return t.mul(t.mul(x!, t.reciprocal(t.sqrt(t.add(ms, t.scalar(1e-5))))), w!);
    },
    F64,
  );
  await checkOp(
    'rope',
    [{ name: 'x', shape: [2, 3, 4] }],
    (t, [x]) => {
      const cos = t.wrap(
        t.g.initializer('cos', 'float64', [3, 4], Float64Array.from(rand(12, 5))),
        [3, 4],
      );
      const sin = t.wrap(
        t.g.initializer('sin', 'float64', [3, 4], Float64Array.from(rand(12, 6))),
        [3, 4],
      );
      const x1 = t.slice(x!, [0], [2], [-1]);
      const x2 = t.slice(x!, [2], [4], [-1]);
      return t.add(t.mul(x!, cos), t.mul(t.concat([t.neg(x2), x1], -1), sin));
    },
    F64,
  );
});

test('frozen MatMulNBits base: gradient w.r.t. the activation (float32)', async () => {
  for (const bits of [4, 8] as const) {
    const N = 6;
    const K = 32;
    const spec = { bits, blockSize: 16 };
    const q = quantizeRows(Float32Array.from(rand(N * K, 33)), N, K, spec);
    const deq = dequantizeRows(q, N, K, spec);
    await checkOp(
      `matMulNBits ${bits}-bit`,
      [{ name: 'x', shape: [3, K] }],
      (t, [x]) => {
        const data = t.g.initializer('qdata', 'uint8', [N, K / 16, (16 * bits) / 8], q.data);
        const scales = t.g.initializer('qscales', 'float32', [N * (K / 16)], q.scales);
        const w = { data, scales, N, K, bits, blockSize: 16 };
        return t.linearQuantized(x!, w);
      },
      F32,
    );
    // dequantize() is the exact dequantization (checked directly).
    const g = new GraphBuilder('deq');
    const t = new Tape(g);
    const data = g.initializer('qdata', 'uint8', [N, K / 16, (16 * bits) / 8], q.data);
    const scales = g.initializer('qscales', 'float32', [N * (K / 16)], q.scales);
    g.output(t.dequantize({ data, scales, N, K, bits, blockSize: 16 }), 'deq', 'float32', [N, K]);
    const s = await ort.InferenceSession.create(g.toBytes());
    const out = (await s.run({})).deq!.data as Float32Array;
    assert.deepEqual(Array.from(out), Array.from(deq), `${bits}-bit dequantize`);
    await s.release();
  }
});

test('image ops: conv2d (strides, asymmetric pads), nearest 2x, group norm (float32)', async () => {
  // Conv is linear in x and in w, so float32 central differences are accurate there.
  await checkOp(
    'conv2d 3x3 stride 1 pad 1 + bias',
    [
      { name: 'x', shape: [2, 3, 5, 6] },
      { name: 'w', shape: [4, 3, 3, 3] },
      { name: 'b', shape: [4] },
    ],
    (t, [x, w, b]) => t.conv2d(x!, w!, b!),
    F32,
  );
  for (const size of [6, 7]) {
    // Downsample2D: pad right/bottom by one, stride 2 (7 leaves a row the stride skips).
    await checkOp(
      `conv2d 3x3 stride 2 pads (0,0,1,1) on ${size}x${size}`,
      [
        { name: 'x', shape: [2, 2, size, size] },
        { name: 'w', shape: [3, 2, 3, 3] },
        { name: 'b', shape: [3] },
      ],
      (t, [x, w, b]) => t.conv2d(x!, w!, b!, { stride: 2, pads: [0, 0, 1, 1] }),
      F32,
    );
  }
  await checkOp(
    'conv2d 1x1, no bias',
    [
      { name: 'x', shape: [2, 3, 4, 4] },
      { name: 'w', shape: [5, 3, 1, 1] },
    ],
    (t, [x, w]) => t.conv2d(x!, w!, null),
    F32,
  );
  await checkOp(
    'upsample2x',
    [{ name: 'x', shape: [2, 3, 3, 4] }],
    (t, [x]) => t.upsample2x(x!),
    F32,
  );
  await checkOp(
    'groupNormalize (2 groups of 2 channels)',
    [{ name: 'x', shape: [2, 4, 3, 3], offset: 0.5 }],
    (t, [x]) => t.groupNormalize(x!, 2, 1e-6),
    F32,
    {},
    // Normalisation divides by a std of ~0.6: a smaller step keeps the curvature error down.
    { h: 3e-3, tol: 3e-2 },
  );
});

test('stopGradient passes the value and blocks the gradient (float64)', async () => {
  // d/dx of x * sg(x) is sg(x) = x, not 2x (what the finite difference of the value would say).
  const g = new GraphBuilder('sg');
  const t = new Tape(g, F64);
  const x = t.input('x', F64, [3], true);
  const y = t.reduceSum(t.mul(x, t.stopGradient(x)), [0], false);
  const [gx] = t.gradients(y, [x]);
  g.output(gx!, 'gx', F64, [3]);
  const s = await ort.InferenceSession.create(g.toBytes());
  const out = await s.run({ x: new ort.Tensor(F64, Float64Array.of(1, -2, 3), [3]) });
  assert.deepEqual(Array.from(out.gx!.data as Float64Array), [1, -2, 3]);
  await s.release();
});

test('frozen MatMulNBits base: the backward rebuilds the weight in row chunks, same gradient', async () => {
  // 7 rows of K = 32 float32 are 896 bytes: chunks of 256 bytes give 4 pieces (2, 2, 2, 1 rows).
  const N = 7;
  const K = 32;
  const M = 3;
  const spec = { bits: 4 as const, blockSize: 16 };
  const q = quantizeRows(Float32Array.from(rand(N * K, 41)), N, K, spec);
  const deq = dequantizeRows(q, N, K, spec);
  const x = Float32Array.from(rand(M * K, 42));
  const gy = Float32Array.from(rand(M * N, 43));
  const gradFor = async (chunkBytes: number | undefined): Promise<Float32Array> => {
    const g = new GraphBuilder('chunks');
    const t = new Tape(g);
    const xi = t.input('x', 'float32', [M, K], true);
    const data = g.initializer('qdata', 'uint8', [N, K / 16, 8], q.data);
    const scales = g.initializer('qscales', 'float32', [N * (K / 16)], q.scales);
    const y = t.linearQuantized(xi, { data, scales, N, K, ...spec }, chunkBytes);
    const r = g.input('r', 'float32', [M, N]);
    g.output(t.gradients(y, [xi], r)[0]!, 'gx', 'float32', [M, K]);
    const s = await ort.InferenceSession.create(g.toBytes());
    const out = (
      await s.run({
        x: new ort.Tensor('float32', x, [M, K]),
        r: new ort.Tensor('float32', gy, [M, N]),
      })
    ).gx!.data as Float32Array;
    await s.release();
    return out;
  };
  const whole = await gradFor(undefined);
  const chunked = await gradFor(256);
  for (let m = 0; m < M; m++) {
    for (let k = 0; k < K; k++) {
      let want = 0;
      for (let n = 0; n < N; n++) want += gy[m * N + n]! * deq[n * K + k]!;
      assert.ok(
        Math.abs(chunked[m * K + k]! - want) <= 1e-5 * (1 + Math.abs(want)),
        `chunked gx[${m}, ${k}] = ${chunked[m * K + k]}, want ${want}`,
      );
      assert.ok(
        Math.abs(whole[m * K + k]! - want) <= 1e-5 * (1 + Math.abs(want)),
        `whole gx[${m}, ${k}] = ${whole[m * K + k]}, want ${want}`,
      );
    }
  }
});
