/**
 * Seeded, portable pseudo-random numbers for the samplers.
 *
 * Generator: xoshiro128** (Blackman & Vigna), 128-bit state, 32-bit output,
 * period 2^128 - 1. Everything is 32-bit integer arithmetic (`Math.imul`,
 * `>>>`), so a given seed yields the same stream on every machine and every
 * JS engine. The PyTorch reference draws from torch's generators, which we
 * cannot (and do not try to) reproduce: only greedy decoding (temperature 0)
 * is bit-for-bit comparable with the original; with temperature > 0 the
 * contract is "same seed, same output" within this runtime.
 *
 * Seeding: the seed (a non-negative safe integer) and an optional path of
 * stream labels are hashed with a murmur3-style finaliser, then expanded to the
 * four state words with splitmix32. `fork(...labels)` derives an independent
 * stream from the same seed plus more labels without advancing the parent, so
 * e.g. `root.fork(step)` gives a per-step stream that does not depend on how
 * many numbers earlier steps consumed.
 *
 * API:
 *   new Prng(seed, ...stream)   seed: integer in [0, 2^53); stream: uint32 labels
 *   nextUint32()                uniform integer in [0, 2^32)
 *   uniform()                   double in the open interval (0, 1), 52 random bits
 *   gumbel()                    standard Gumbel sample, -log(-log(uniform()))
 *   randint(lo, hi)             uniform integer in [lo, hi), unbiased
 *   fork(...labels)             independent child stream
 */
import { DimooError } from '../errors.js';

/** murmur3 fmix32: a bijective avalanche on 32-bit words. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

function checkLabel(v: number, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new DimooError(`${what} must be an integer in [0, 2^32), got ${v}`, 'E_PARAM');
  }
}

const TWO_POW_32 = 4294967296;
const TWO_POW_52 = 4503599627370496;

export class Prng {
  /** Seed material: [seed lo, seed hi, ...stream labels]. Kept so fork() can extend it. */
  private readonly key: readonly number[];
  private s0 = 0;
  private s1 = 0;
  private s2 = 0;
  private s3 = 0;

  constructor(seed: number, ...stream: number[]) {
    if (!Number.isSafeInteger(seed) || seed < 0) {
      throw new DimooError(`seed must be a non-negative safe integer, got ${seed}`, 'E_PARAM');
    }
    stream.forEach((v, i) => checkLabel(v, `stream label ${i}`));
    this.key = [seed >>> 0, Math.floor(seed / TWO_POW_32) >>> 0, ...stream];
    this.init();
  }

  private init(): void {
    // Hash the key words (length included, so [a] and [a, 0] differ).
    let h = fmix32(this.key.length ^ 0x6a09e667);
    for (const w of this.key) h = fmix32((h ^ fmix32(w + 0x9e3779b9)) + Math.imul(h, 5));
    // splitmix32 expansion of the hash into the 128-bit state.
    let a = h | 0;
    const next = (): number => {
      a = (a + 0x9e3779b9) | 0;
      let t = a ^ (a >>> 16);
      t = Math.imul(t, 0x21f0aaad);
      t ^= t >>> 15;
      t = Math.imul(t, 0x735a2d97);
      return (t ^ (t >>> 15)) >>> 0;
    };
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next();
    // The all-zero state is xoshiro's one fixed point.
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1;
  }

  /** Set the raw state (testing against the published reference sequence). */
  static fromState(s0: number, s1: number, s2: number, s3: number): Prng {
    const p = new Prng(0);
    p.s0 = s0 >>> 0;
    p.s1 = s1 >>> 0;
    p.s2 = s2 >>> 0;
    p.s3 = s3 >>> 0;
    if ((p.s0 | p.s1 | p.s2 | p.s3) === 0)
      throw new DimooError('xoshiro128** state must not be all zero', 'E_PARAM');
    return p;
  }

  /** An independent stream for the same seed extended by `labels`; this generator is not advanced. */
  fork(...labels: number[]): Prng {
    labels.forEach((v, i) => checkLabel(v, `fork label ${i}`));
    const child = Object.create(Prng.prototype) as Prng;
    (child as unknown as { key: readonly number[] }).key = [...this.key, ...labels];
    child.init();
    return child;
  }

  /** Next 32-bit output of xoshiro128**, as an unsigned integer. */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5) >>> 0, 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 = (this.s2 ^ this.s0) >>> 0;
    this.s3 = (this.s3 ^ this.s1) >>> 0;
    this.s1 = (this.s1 ^ this.s2) >>> 0;
    this.s0 = (this.s0 ^ this.s3) >>> 0;
    this.s2 = (this.s2 ^ t) >>> 0;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /**
   * Uniform double in (0, 1): 52 random bits placed at the centre of their
   * bucket, so the result is never 0 (log stays finite) and never 1.
   */
  uniform(): number {
    const hi = this.nextUint32() >>> 6; // 26 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo + 0.5) / TWO_POW_52;
  }

  /** Standard Gumbel(0, 1) sample. */
  gumbel(): number {
    return -Math.log(-Math.log(this.uniform()));
  }

  /**
   * Shuffles `list` in place (Fisher-Yates from the end: one randint(0, i + 1)
   * per position i = n-1 .. 1) and returns it.
   */
  shuffle<T>(list: T[]): T[] {
    for (let i = list.length - 1; i > 0; i--) {
      const j = this.randint(0, i + 1);
      const t = list[i]!;
      list[i] = list[j]!;
      list[j] = t;
    }
    return list;
  }

  /** Uniform integer in [lo, hi) (hi - lo <= 2^32), by rejection so it is unbiased. */
  randint(lo: number, hi: number): number {
    if (
      !Number.isSafeInteger(lo) ||
      !Number.isSafeInteger(hi) ||
      hi <= lo ||
      hi - lo > TWO_POW_32
    ) {
      throw new DimooError(
        `randint range must be integers with 0 < hi - lo <= 2^32, got [${lo}, ${hi})`,
        'E_PARAM',
      );
    }
    const n = hi - lo;
    // Largest multiple of n that fits in 2^32; draws at or above it are rejected.
    const limit = TWO_POW_32 - (TWO_POW_32 % n);
    for (;;) {
      const r = this.nextUint32();
      if (r < limit) return lo + (r % n);
    }
  }
}
