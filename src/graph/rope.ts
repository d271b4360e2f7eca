/**
 * Rotary position tables, computed on the host in float32 exactly as the
 * original does (inv_freq = 1 / theta^(2j/dim), angle = pos * inv_freq, both
 * rounded to float32), then duplicated over the two halves (rotate-half RoPE).
 * Host-side tables let any absolute position be used, also beyond
 * max_sequence_length, and let ML-Cache queries sit at their true positions.
 */
export function ropeInvFreq(headDim: number, theta: number): Float32Array {
  const half = headDim / 2;
  const inv = new Float32Array(half);
  for (let j = 0; j < half; j++) {
    const exponent = Math.fround((2 * j) / headDim);
    inv[j] = Math.fround(1 / Math.fround(Math.pow(theta, exponent)));
  }
  return inv;
}

/** Fills cos/sin [positions.length, headDim] (row-major). */
export function ropeTables(
  positions: ArrayLike<number>,
  invFreq: Float32Array,
  cos = new Float32Array(positions.length * invFreq.length * 2),
  sin = new Float32Array(positions.length * invFreq.length * 2),
): { cos: Float32Array; sin: Float32Array } {
  const half = invFreq.length;
  const hd = half * 2;
  for (let r = 0; r < positions.length; r++) {
    const p = positions[r]!;
    const base = r * hd;
    for (let j = 0; j < half; j++) {
      const angle = Math.fround(p * invFreq[j]!);
      const c = Math.cos(angle);
      const s = Math.sin(angle);
      cos[base + j] = c;
      cos[base + half + j] = c;
      sin[base + j] = s;
      sin[base + half + j] = s;
    }
  }
  return { cos, sin };
}
