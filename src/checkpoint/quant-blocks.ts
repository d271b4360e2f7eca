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
  if (spec.bits !== 4 && spec.bits !== 8) throw new Error(`quantization bits must be 4 or 8, got ${spec.bits}`);
  const bs = spec.blockSize;
  if (!(bs >= 16 && bs <= 256 && (bs & (bs - 1)) === 0)) throw new Error(`block size must be a power of two in [16, 256], got ${bs}`);
  if (K % bs !== 0) throw new Error(`K = ${K} is not a multiple of the block size ${bs}`);
}

/**
 * Quantizes rows [N, K] of float32 weights. `out` may supply the destination
 * buffers (e.g. to stream through a reused chunk).
 */
export function quantizeRows(w: Float32Array, N: number, K: number, spec: QuantSpec, out?: QuantizedRows): QuantizedRows {
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
export function dequantizeRows(q: QuantizedRows, N: number, K: number, spec: QuantSpec): Float32Array {
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
        const code = spec.bits === 8 ? q.data[ob + i]! : (q.data[ob + (i >> 1)]! >> ((i & 1) * 4)) & 15;
        w[base + i] = Math.fround((code - zp) * d);
      }
    }
  }
  return w;
}
