/**
 * Token grid files (`--tokens-out` / `--image-tokens`): `{"height","width","codes"}`
 * with PIXEL sizes, as in TokenGrid. Reading validates everything so a broken
 * file is one clear error naming the file, never a crash mid-generation.
 */
import * as fs from 'node:fs';
import { DimooError } from '../errors.js';
import type { TokenGrid } from '../pipelines/types.js';
import { atomicWriteFileSync } from '../util/atomic-write.js';
import { CODEBOOK_SIZE, VQ_SCALE } from './defaults.js';

/** Checks a parsed value is a token grid; `what` names it in messages. */
export function validateTokenGrid(value: unknown, what: string, scale = VQ_SCALE): TokenGrid {
  const fail = (msg: string): never => {
    throw new DimooError(`${what}: ${msg}`, 'E_TOKENS');
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
  }
  const height = v.height as number;
  const width = v.width as number;
  const codes = v.codes;
  if (!Array.isArray(codes)) fail('"codes" must be an array of codebook indices');
  const list = codes as unknown[];
  const expected = (height / scale) * (width / scale);
  if (list.length !== expected) {
    fail(
      `"codes" has ${list.length} entries but a ${width}x${height} image has ${width / scale}x${height / scale} = ${expected} cells`,
    );
  }
  for (let i = 0; i < list.length; i++) {
    const c = list[i];
    if (typeof c !== 'number' || !Number.isInteger(c) || c < 0 || c >= CODEBOOK_SIZE) {
      fail(`codes[${i}] must be an integer in [0, ${CODEBOOK_SIZE}), got ${JSON.stringify(c)}`);
    }
  }
  return { height, width, codes: list as number[] };
}

/** Parses the JSON text of a grid file. */
export function parseTokenGrid(text: string, what: string): TokenGrid {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new DimooError(`${what}: not valid JSON (${(e as Error).message})`, 'E_TOKENS');
  }
  return validateTokenGrid(value, what);
}

export function readTokenGridFile(file: string): TokenGrid {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const why =
      err.code === 'ENOENT' ? 'no such file' : err.code === 'EISDIR' ? 'is a folder' : err.message;
    throw new DimooError(`${file}: cannot read token grid (${why})`, 'E_TOKENS');
  }
  return parseTokenGrid(text, file);
}

/** One line of JSON: codes can be a million entries, so no pretty-printing. */
export function tokenGridJson(grid: TokenGrid): string {
  return JSON.stringify({ height: grid.height, width: grid.width, codes: grid.codes });
}

/** Writes the grid atomically, so an interrupted run never leaves a truncated file. */
export function writeTokenGridFile(file: string, grid: TokenGrid): void {
  validateTokenGrid(grid, 'token grid to write');
  try {
    atomicWriteFileSync(file, tokenGridJson(grid) + '\n', { fsync: false });
  } catch (e) {
    throw new DimooError(`${file}: cannot write token grid (${(e as Error).message})`, 'E_IO');
  }
}
