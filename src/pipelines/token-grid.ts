/**
 * The one check of a token grid `{"height", "width", "codes"}` (PIXEL sizes,
 * row-major codebook indices), wherever one comes from: a `--image-tokens`
 * file, a server request, or a library call. Callers say which codebook and
 * scale apply (the checkpoint's, or DiMOO's 8192 / 16 before a model is
 * loaded) and which error code a bad grid gets.
 */
import { DimooError, type ErrorCode } from '../errors.js';
import type { TokenGrid } from './types.js';

/** DiMOO's VQ-VAE: 16 px per token side, 8192 codes (a checkpoint's vqvae/config.json may say otherwise). */
export const DIMOO_GRID = Object.freeze({ scale: 16, codebookSize: 8192 });

export interface GridRules {
  /** Pixels per token side. */
  scale: number;
  /** Codes are 0 .. codebookSize - 1. */
  codebookSize: number;
  /** Largest width or height in pixels. */
  maxSide?: number;
  /** Error code of a bad grid (default E_PARAM). */
  code?: ErrorCode;
}

/** Checks `value` is a token grid under `rules`; `what` names it in messages. */
export function checkTokenGrid(
  value: unknown,
  what: string,
  rules: GridRules = DIMOO_GRID,
): TokenGrid {
  const { scale, codebookSize } = rules;
  const fail = (msg: string): never => {
    throw new DimooError(`${what}: ${msg}`, rules.code ?? 'E_PARAM');
  };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    fail('expected an object {"height", "width", "codes"}');
  }
  const v = value as Record<string, unknown>;
  for (const key of ['height', 'width'] as const) {
    const n = v[key];
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < scale || n % scale !== 0) {
      fail(
        `"${key}" must be a pixel size that is a positive multiple of ${scale}, got ${JSON.stringify(n)}`,
      );
    }
    if (rules.maxSide !== undefined && (n as number) > rules.maxSide) {
      fail(`"${key}" is ${n as number}, more than ${rules.maxSide} pixels`);
    }
  }
  const height = v.height as number;
  const width = v.width as number;
  const codes = v.codes;
  if (!Array.isArray(codes) && !ArrayBuffer.isView(codes))
    fail('"codes" must be an array of codebook indices');
  const list = codes as ArrayLike<unknown>;
  const expected = (height / scale) * (width / scale);
  if (list.length !== expected) {
    fail(
      `"codes" has ${list.length} codes but a ${width}x${height} image has ${width / scale}x${height / scale} = ${expected} cells`,
    );
  }
  for (let i = 0; i < list.length; i++) {
    const c = list[i];
    if (typeof c !== 'number' || !Number.isInteger(c) || c < 0 || c >= codebookSize) {
      fail(`codes[${i}] must be an integer in [0, ${codebookSize}), got ${JSON.stringify(c)}`);
    }
  }
  return {
    height,
    width,
    codes: Array.isArray(list) ? (list as number[]) : Array.from(list as ArrayLike<number>),
  };
}
