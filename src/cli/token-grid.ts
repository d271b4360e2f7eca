/**
 * Token grid files (`--tokens-out` / `--image-tokens`): `{"height","width","codes"}`
 * with PIXEL sizes, as in TokenGrid. Reading validates everything so a broken
 * file is one clear error naming the file, never a crash mid-generation.
 */
import * as fs from 'node:fs';
import { DimooError } from '../errors.js';
import type { TokenGrid } from '../pipelines/types.js';
import { atomicWriteFileSync } from '../util/atomic-write.js';
import { checkTokenGrid, DIMOO_GRID } from '../pipelines/token-grid.js';

/** File grids are checked before a model is loaded: DiMOO's scale and codebook (the library checks again against the checkpoint's). */
const FILE_GRID = { ...DIMOO_GRID, code: 'E_TOKENS' } as const;

/** Parses the JSON text of a grid file. */
export function parseTokenGrid(text: string, what: string): TokenGrid {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new DimooError(`${what}: not valid JSON (${(e as Error).message})`, 'E_TOKENS');
  }
  return checkTokenGrid(value, what, FILE_GRID);
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
  checkTokenGrid(grid, 'token grid to write', FILE_GRID);
  try {
    atomicWriteFileSync(file, tokenGridJson(grid) + '\n', { fsync: false });
  } catch (e) {
    throw new DimooError(`${file}: cannot write token grid (${(e as Error).message})`, 'E_IO');
  }
}
