/**
 * Safetensors dtype table and fast float conversions (bf16 / f16 <-> f32).
 * All conversions assume a little-endian host, which every Node target is.
 */

export const DTYPE_SIZES = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  F64: 8,
  I64: 8,
  U64: 8,
} as const;

export type Dtype = keyof typeof DTYPE_SIZES;

export const DTYPES: readonly Dtype[] = Object.keys(DTYPE_SIZES) as Dtype[];

export function isDtype(s: unknown): s is Dtype {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_SIZES, s);
}

export function dtypeSize(d: Dtype): number {
  return DTYPE_SIZES[d];
}

export function isFloatDtype(d: Dtype): boolean {
  return d === 'F16' || d === 'BF16' || d === 'F32' || d === 'F64';
}

export function isIntDtype(d: Dtype): boolean {
  return !isFloatDtype(d) && d !== 'BOOL';
}

// Shared scratch for scalar bit reinterpretation.
const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

function u32View(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

function allocOrCheck(n: number, dst: Float32Array | undefined, what: string): Float32Array {
  if (!dst) return new Float32Array(n);
  if (dst.length < n)
    throw new RangeError(`${what}: destination holds ${dst.length} < ${n} values`);
  return dst;
}

/** bf16 is the top half of an f32, so widening is a shift. */
export function bf16ToF32(src: Uint16Array, dst?: Float32Array): Float32Array {
  const n = src.length;
  const out = allocOrCheck(n, dst, 'bf16ToF32');
  const o = u32View(out);
  for (let i = 0; i < n; i++) o[i] = src[i]! << 16;
  return out;
}

/** Round-to-nearest-even on the dropped 16 bits; NaN -> canonical quiet NaN, as torch does. */
export function f32BitsToBf16(bits: number): number {
  bits >>>= 0;
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) & 0x8000) | 0x7fc0;
  const bias = 0x7fff + ((bits >>> 16) & 1);
  return ((bits + bias) >>> 16) & 0xffff;
}

export function f32ToBf16Scalar(x: number): number {
  scratchF32[0] = x;
  return f32BitsToBf16(scratchU32[0]!);
}

export function f32ToBf16(src: Float32Array, dst?: Uint16Array): Uint16Array {
  const n = src.length;
  const out = dst ?? new Uint16Array(n);
  if (out.length < n) throw new RangeError(`f32ToBf16: destination holds ${out.length} < ${n}`);
  const s = u32View(src);
  for (let i = 0; i < n; i++) {
    const bits = s[i]!;
    if ((bits & 0x7fffffff) > 0x7f800000) {
      out[i] = ((bits >>> 16) & 0x8000) | 0x7fc0;
    } else {
      out[i] = (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
    }
  }
  return out;
}

// f16 -> f32 via a 64K-entry table: one lookup per value beats bit fiddling in JS.
let f16Table: Float32Array | undefined;

function f16BitsToF32Slow(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const man = h & 0x3ff;
  if (exp === 0) return sign * man * 2 ** -24;
  if (exp === 0x1f) return man ? NaN : sign * Infinity;
  return sign * (1 + man / 1024) * 2 ** (exp - 15);
}

function getF16Table(): Float32Array {
  if (!f16Table) {
    f16Table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) f16Table[h] = f16BitsToF32Slow(h);
  }
  return f16Table;
}

export function f16BitsToF32(h: number): number {
  return getF16Table()[h & 0xffff]!;
}

export function f16ToF32(src: Uint16Array, dst?: Float32Array): Float32Array {
  const n = src.length;
  const out = allocOrCheck(n, dst, 'f16ToF32');
  const t = getF16Table();
  for (let i = 0; i < n; i++) out[i] = t[src[i]!]!;
  return out;
}

/** IEEE f32 bits -> f16 bits, round-to-nearest-even, overflow -> inf, subnormals kept. */
export function f32BitsToF16(bits: number): number {
  bits >>>= 0;
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  let man = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (man ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal (or underflow to zero): shift the implicit-1 mantissa right.
    if (e < -10) return sign;
    man |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = man & ((1 << shift) - 1);
    let h = man >>> shift;
    if (rest > half || (rest === half && h & 1)) h++;
    return sign | h; // a carry into bit 10 correctly yields the smallest normal
  }
  let h = (e << 10) | (man >>> 13);
  const rest = man & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && h & 1)) h++; // carry may round up to inf: correct
  return sign | h;
}

export function f32ToF16Scalar(x: number): number {
  scratchF32[0] = x;
  return f32BitsToF16(scratchU32[0]!);
}

export function f32ToF16(src: Float32Array, dst?: Uint16Array): Uint16Array {
  const n = src.length;
  const out = dst ?? new Uint16Array(n);
  if (out.length < n) throw new RangeError(`f32ToF16: destination holds ${out.length} < ${n}`);
  const s = u32View(src);
  for (let i = 0; i < n; i++) out[i] = f32BitsToF16(s[i]!);
  return out;
}
