/**
 * Block quantization in ONNX Runtime's MatMulNBits layout (com.microsoft).
 *
 * A linear weight W [N, K] (PyTorch [out, in]) is cut along K into blocks of
 * `blockSize`; each block gets one float32 scale d and `bits`-bit codes q,
 * stored unsigned with the implicit zero point 2^(bits-1) (MatMulNBits'
 * default when no zero_points input is given): w ~= (q - 2^(bits-1)) * d.
 *
 * Symmetric, full range (as llama.cpp's Q4_0/Q8_0 style): d = m / -2^(bits-1)
 * where m is the block's value of largest magnitude (sign kept), so m maps
 * exactly onto the most negative code and every other value rounds to the
 * nearest of the 2^bits levels.
 *
 * Layout: data [N, K/blockSize, blockSize*bits/8] uint8 (4-bit: element 2i in
 * the low nibble, 2i+1 in the high nibble), scales [N * K/blockSize] float32.
 */
export type QuantBits = 4 | 8;

export interface QuantSpec {
  bits: QuantBits;
  blockSize: number;
}

export interface QuantizedRows {
  /** [N, blocks, blob] codes. */
  data: Uint8Array;
  /** [N * blocks] scales. */
  scales: Float32Array;
}

export function blobBytes(spec: QuantSpec): number {
  return (spec.blockSize * spec.bits) / 8;
}

export function checkQuantSpec(spec: QuantSpec, K: number): void {
  if (spec.bits !== 4 && spec.bits !== 8)
    throw new Error(`quantization bits must be 4 or 8, got ${spec.bits}`);
  const bs = spec.blockSize;
  if (!(bs >= 16 && bs <= 256 && (bs & (bs - 1)) === 0))
    throw new Error(`block size must be a power of two in [16, 256], got ${bs}`);
  if (K % bs !== 0) throw new Error(`K = ${K} is not a multiple of the block size ${bs}`);
}

/**
 * Quantizes rows [N, K] of float32 weights. `out` may supply the destination
 * buffers (e.g. to stream through a reused chunk).
 */
export function quantizeRows(
  w: Float32Array,
  N: number,
  K: number,
  spec: QuantSpec,
  out?: QuantizedRows,
): QuantizedRows {
  checkQuantSpec(spec, K);
  if (w.length < N * K) throw new Error(`quantizeRows: ${w.length} values for [${N}, ${K}]`);
  const bs = spec.blockSize;
  const blocks = K / bs;
  const blob = blobBytes(spec);
  const data = out?.data ?? new Uint8Array(N * blocks * blob);
  const scales = out?.scales ?? new Float32Array(N * blocks);
  const zp = spec.bits === 8 ? 128 : 8;
  const qmax = spec.bits === 8 ? 255 : 15;
  const f32 = Math.fround;
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < blocks; b++) {
      const base = n * K + b * bs;
      let m = 0;
      let am = 0;
      for (let i = 0; i < bs; i++) {
        const v = w[base + i]!;
        const a = Math.abs(v);
        if (a > am) {
          am = a;
          m = v;
        }
      }
      const d = f32(m / -zp);
      const inv = d !== 0 ? 1 / d : 0;
      const si = n * blocks + b;
      scales[si] = d;
      const ob = si * blob;
      if (spec.bits === 8) {
        for (let i = 0; i < bs; i++) {
          let q = Math.round(w[base + i]! * inv) + zp;
          q = q < 0 ? 0 : q > qmax ? qmax : q;
          data[ob + i] = q;
        }
      } else {
        for (let i = 0; i < bs; i += 2) {
          let q0 = Math.round(w[base + i]! * inv) + zp;
          let q1 = Math.round(w[base + i + 1]! * inv) + zp;
          q0 = q0 < 0 ? 0 : q0 > qmax ? qmax : q0;
          q1 = q1 < 0 ? 0 : q1 > qmax ? qmax : q1;
          data[ob + (i >> 1)] = q0 | (q1 << 4);
        }
      }
    }
  }
  return { data, scales };
}

/** Inverse of quantizeRows (for tests and error measurements): [N, K] float32. */
export function dequantizeRows(
  q: QuantizedRows,
  N: number,
  K: number,
  spec: QuantSpec,
): Float32Array {
  checkQuantSpec(spec, K);
  const bs = spec.blockSize;
  const blocks = K / bs;
  const blob = blobBytes(spec);
  const zp = spec.bits === 8 ? 128 : 8;
  const w = new Float32Array(N * K);
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < blocks; b++) {
      const si = n * blocks + b;
      const d = q.scales[si]!;
      const ob = si * blob;
      const base = n * K + b * bs;
      for (let i = 0; i < bs; i++) {
        const code =
          spec.bits === 8 ? q.data[ob + i]! : (q.data[ob + (i >> 1)]! >> ((i & 1) * 4)) & 15;
        w[base + i] = Math.fround((code - zp) * d);
      }
    }
  }
  return w;
}

/**
 * 8-bit weights for ONNX Runtime's integer GEMM (DynamicQuantizeMatMul /
 * MatMulIntegerToFloat, MLAS QGEMM): one float32 scale per output channel
 * (row n of W [N, K]), symmetric full range as the blocks above (the row's
 * largest-magnitude value maps exactly onto -128; no zero point), stored
 * transposed as int8 [K, N] because those ops take B as [K, N].
 */
export interface ChannelQuantized {
  /** [K, N] int8 codes (B of the integer GEMM). */
  data: Int8Array;
  /** [N] scales: w[n, k] ~= data[k, n] * scales[n]. */
  scales: Float32Array;
}

/**
 * Quantizes rows [n0, n0 + rows) of W (given as `w` [rows, K] float32) into
 * columns n0.. of `out` ([K, N] codes, [N] scales).
 */
export function quantizeChannelRows(
  w: Float32Array,
  rows: number,
  K: number,
  n0: number,
  N: number,
  out: ChannelQuantized,
): void {
  if (w.length < rows * K)
    throw new Error(`quantizeChannelRows: ${w.length} values for [${rows}, ${K}]`);
  if (n0 + rows > N || out.data.length < K * N || out.scales.length < N)
    throw new Error(`quantizeChannelRows: rows ${n0}..${n0 + rows} do not fit [${K}, ${N}]`);
  const inv = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let m = 0;
    let am = 0;
    for (let k = 0; k < K; k++) {
      const v = w[r * K + k]!;
      const a = Math.abs(v);
      if (a > am) {
        am = a;
        m = v;
      }
    }
    const d = m !== 0 ? Math.fround(m / -128) : 0;
    out.scales[n0 + r] = d;
    inv[r] = d !== 0 ? 1 / d : 0;
  }
  // k outer: each k writes `rows` adjacent bytes of the transposed output.
  const q = out.data;
  for (let k = 0; k < K; k++) {
    const o = k * N + n0;
    for (let r = 0; r < rows; r++) {
      const v = Math.round(w[r * K + k]! * inv[r]!);
      q[o + r] = v < -128 ? -128 : v > 127 ? 127 : v;
    }
  }
}

/** W [N, K] float32 from channel codes (for tests and error measurements). */
export function dequantizeChannel(q: ChannelQuantized, N: number, K: number): Float32Array {
  const w = new Float32Array(N * K);
  for (let n = 0; n < N; n++) {
    const d = q.scales[n]!;
    for (let k = 0; k < K; k++) w[n * K + k] = Math.fround(q.data[k * N + n]! * d);
  }
  return w;
}
