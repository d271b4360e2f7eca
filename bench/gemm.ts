/**
 * The machine's own limit: GFLOP/s of ONNX Runtime's CPU matmul kernels on a
 * large GEMM, fp32 (MatMul against a constant weight, as the transformer's
 * linears run) and block-quantized (MatMulNBits, int8 and int4, accuracy
 * level 4 = int8 activations, the `nbits` path), and the integer GEMM of
 * `qgemm` checkpoints (int8 weights per output channel, uint8 activations
 * with a scale per row, MatMulIntegerToFloat; or one per tensor,
 * DynamicQuantizeMatMul).
 */
import * as ort from 'onnxruntime-node';
import { GraphBuilder } from '../src/graph/onnx/builder.js';
import { quantizeChannelRows, quantizeRows } from '../src/checkpoint/quant-blocks.js';
import { emitIntegerGemm } from '../src/graph/transformer.js';
import { int8GemmSaturates } from '../src/models/device.js';
import { DEFAULT_BLOCK_SIZE } from '../src/tools/quantize.js';

/** int8/int4: MatMulNBits blocks; int8_qgemm: integer GEMM, per-row activation scales; int8_qgemm_tensor: DynamicQuantizeMatMul. */
export type GemmKind = 'fp32' | 'int8' | 'int4' | 'int8_qgemm' | 'int8_qgemm_tensor';

export interface GemmResult {
  kind: GemmKind;
  /** Weights repacked by the kernel at load (false: used in place, as quantized checkpoints run). */
  prepack: boolean;
  threads: number;
  M: number;
  K: number;
  N: number;
  /** Best-of-N wall time of one run, ms. */
  ms: number;
  gflops: number;
}

function pseudoRandom(n: number, seed: number, scale: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    a[i] = ((s >>> 0) / 4294967296 - 0.5) * scale;
  }
  return a;
}

export function gemmGraph(kind: GemmKind, K: number, N: number, blockSize?: number): Uint8Array {
  const g = new GraphBuilder('gemm');
  const a = g.input('a', 'float32', ['M', K]);
  // [N, K] like a PyTorch linear weight.
  const w = pseudoRandom(N * K, 12345, 0.1);
  let y;
  if (kind === 'fp32') {
    // Stored [K, N] so MatMul needs no transpose.
    const t = new Float32Array(K * N);
    for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) t[k * N + n] = w[n * K + k]!;
    y = g.matmul(a, g.initializer('w', 'float32', [K, N], t));
  } else if (kind === 'int8_qgemm' || kind === 'int8_qgemm_tensor') {
    const q = { data: new Int8Array(K * N), scales: new Float32Array(N) };
    quantizeChannelRows(w, N, K, 0, N, q);
    const b = g.initializer('w_i8', 'int8', [K, N], q.data);
    const sc = g.initializer('w_scales', 'float32', [N], q.scales);
    // The levels inference uses on this CPU (7-bit activations where the kernel saturates).
    y = emitIntegerGemm(
      g,
      a,
      b,
      sc,
      kind === 'int8_qgemm' ? 'row' : 'tensor',
      false,
      int8GemmSaturates() ? 63 : 127,
    );
  } else {
    const bits = kind === 'int8' ? 8 : 4;
    blockSize ??= DEFAULT_BLOCK_SIZE[bits];
    const q = quantizeRows(w, N, K, { bits, blockSize });
    const blocks = K / blockSize;
    const b = g.initializer('w_q', 'uint8', [N, blocks, (blockSize * bits) / 8], q.data);
    const sc = g.initializer('w_scales', 'float32', [N * blocks], q.scales);
    y = g.matMulNBits(a, b, sc, null, { K, N, bits, blockSize, accuracyLevel: 4 });
  }
  g.output(y, 'y', 'float32', ['M', N]);
  return g.toBytes();
}

export async function measureGemm(
  kind: GemmKind,
  threads: number,
  opts: {
    M?: number;
    K?: number;
    N?: number;
    repeats?: number;
    minMs?: number;
    blockSize?: number;
    prepack?: boolean;
  } = {},
): Promise<GemmResult> {
  const M = opts.M ?? 1024;
  const K = opts.K ?? 4096;
  const N = opts.N ?? 4096;
  const session = await ort.InferenceSession.create(gemmGraph(kind, K, N, opts.blockSize), {
    graphOptimizationLevel: 'all',
    executionProviders: ['cpu'],
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    // Prepacked (the kernel's best) unless asked otherwise; quantized checkpoints run unpacked (see device.ts).
    ...(opts.prepack === false ? { extra: { session: { disable_prepacking: '1' } } } : {}),
  });
  try {
    const a = new ort.Tensor('float32', pseudoRandom(M * K, 777, 2), [M, K]);
    await session.run({ a }); // warm-up (prepacking, arena)
    let best = Infinity;
    const t0 = performance.now();
    for (let i = 0; i < (opts.repeats ?? 5) || performance.now() - t0 < (opts.minMs ?? 0); i++) {
      const t = performance.now();
      await session.run({ a });
      best = Math.min(best, performance.now() - t);
    }
    return {
      kind,
      prepack: opts.prepack !== false,
      threads,
      M,
      K,
      N,
      ms: best,
      gflops: (2 * M * K * N) / (best * 1e6),
    };
  } finally {
    await session.release();
  }
}

/**
 * Several kernels and row counts measured in one process, interleaved (round
 * r runs every kernel once), so that their ratios see the same machine load.
 */
export async function measureGemmSet(
  kinds: GemmKind[],
  threads: number,
  opts: { Ms: number[]; K?: number; N?: number; rounds?: number },
): Promise<GemmResult[]> {
  const K = opts.K ?? 4096;
  const N = opts.N ?? 4096;
  const sessions = new Map<GemmKind, ort.InferenceSession>();
  try {
    for (const kind of kinds) {
      sessions.set(
        kind,
        await ort.InferenceSession.create(gemmGraph(kind, K, N), {
          graphOptimizationLevel: 'all',
          executionProviders: ['cpu'],
          intraOpNumThreads: threads,
          interOpNumThreads: 1,
          executionMode: 'sequential',
        }),
      );
    }
    const out: GemmResult[] = [];
    for (const M of opts.Ms) {
      const a = new ort.Tensor('float32', pseudoRandom(M * K, 777, 2), [M, K]);
      const best = new Map<GemmKind, number>();
      for (const s of sessions.values()) await s.run({ a }); // warm-up (prepacking, arena)
      for (let r = 0; r < (opts.rounds ?? 5); r++) {
        for (const [kind, s] of sessions) {
          const t = performance.now();
          await s.run({ a });
          best.set(kind, Math.min(best.get(kind) ?? Infinity, performance.now() - t));
        }
      }
      for (const kind of kinds) {
        const ms = best.get(kind)!;
        out.push({
          kind,
          prepack: true,
          threads,
          M,
          K,
          N,
          ms,
          gflops: (2 * M * K * N) / (ms * 1e6),
        });
      }
    }
    return out;
  } finally {
    for (const s of sessions.values()) await s.release();
  }
}
