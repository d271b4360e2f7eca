/**
 * Option value parsers for commander. They throw DimooError naming the flag, so
 * a bad value reads "--height must be a multiple of 16, got 65" and nothing more.
 */
import { DimooError } from '../errors.js';

function bad(flag: string, what: string, raw: string): never {
  throw new DimooError(`${flag} must be ${what}, got "${raw}"`, 'E_PARAM');
}

/** Strict decimal number syntax: Number('') is 0 and Number('0x10') is 16, neither wanted. */
const NUMBER_RE = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;
const INT_RE = /^[+-]?\d+$/;

export interface IntRule {
  min?: number;
  max?: number;
  multipleOf?: number;
}

export function parseIntValue(flag: string, raw: string, rule: IntRule = {}): number {
  const s = raw.trim();
  if (!INT_RE.test(s)) bad(flag, 'an integer', raw);
  const v = Number(s);
  if (!Number.isSafeInteger(v)) bad(flag, 'an integer of reasonable size', raw);
  if (rule.min !== undefined && v < rule.min) {
    bad(
      flag,
      rule.max !== undefined
        ? `an integer in [${rule.min}, ${rule.max}]`
        : `an integer >= ${rule.min}`,
      raw,
    );
  }
  if (rule.max !== undefined && v > rule.max) {
    bad(
      flag,
      rule.min !== undefined
        ? `an integer in [${rule.min}, ${rule.max}]`
        : `an integer <= ${rule.max}`,
      raw,
    );
  }
  if (rule.multipleOf !== undefined && v % rule.multipleOf !== 0) {
    bad(flag, `a multiple of ${rule.multipleOf}`, raw);
  }
  return v;
}

export interface NumberRule {
  min?: number;
  max?: number;
  /** Exclude the bounds themselves. */
  minExclusive?: boolean;
  maxExclusive?: boolean;
}

function rangeText(r: NumberRule): string {
  if (r.min !== undefined && r.max !== undefined) {
    return `a number in ${r.minExclusive ? '(' : '['}${r.min}, ${r.max}${r.maxExclusive ? ')' : ']'}`;
  }
  if (r.min !== undefined) return `a number ${r.minExclusive ? '>' : '>='} ${r.min}`;
  if (r.max !== undefined) return `a number ${r.maxExclusive ? '<' : '<='} ${r.max}`;
  return 'a finite number';
}

export function parseNumberValue(flag: string, raw: string, rule: NumberRule = {}): number {
  const s = raw.trim();
  if (!NUMBER_RE.test(s)) bad(flag, rangeText(rule), raw);
  const v = Number(s);
  if (!Number.isFinite(v)) bad(flag, rangeText(rule), raw);
  if (rule.min !== undefined && (rule.minExclusive ? v <= rule.min : v < rule.min)) {
    bad(flag, rangeText(rule), raw);
  }
  if (rule.max !== undefined && (rule.maxExclusive ? v >= rule.max : v > rule.max)) {
    bad(flag, rangeText(rule), raw);
  }
  return v;
}

export function parseChoice<T extends string>(flag: string, raw: string, choices: readonly T[]): T {
  if ((choices as readonly string[]).includes(raw)) return raw as T;
  throw new DimooError(`${flag} must be one of ${choices.join(', ')}; got "${raw}"`, 'E_PARAM');
}

/** Commander argParser factories (commander passes the raw string and the previous value). */
export const intOpt =
  (flag: string, rule: IntRule = {}) =>
  (raw: string): number =>
    parseIntValue(flag, raw, rule);

export const numOpt =
  (flag: string, rule: NumberRule = {}) =>
  (raw: string): number =>
    parseNumberValue(flag, raw, rule);

export const choiceOpt =
  <T extends string>(flag: string, choices: readonly T[]) =>
  (raw: string): T =>
    parseChoice(flag, raw, choices);

export interface Rect {
  x: number;
  y: number;
  width: number;
  height: number;
}

/** "x,y,w,h" in pixels; x, y >= 0, w, h >= 1. */
export function parseRect(flag: string, raw: string): Rect {
  const parts = raw.split(',').map((p) => p.trim());
  if (parts.length !== 4 || parts.some((p) => !/^\d+$/.test(p))) {
    bad(flag, 'x,y,w,h (four non-negative integers, in pixels)', raw);
  }
  const [x, y, width, height] = parts.map(Number) as [number, number, number, number];
  if (width < 1 || height < 1) bad(flag, 'x,y,w,h with a width and height of at least 1', raw);
  return { x, y, width, height };
}

/** Repeatable --rect: commander hands us the list built so far. */
export const rectListOpt =
  (flag: string) =>
  (raw: string, prev: Rect[] | undefined): Rect[] => [...(prev ?? []), parseRect(flag, raw)];
