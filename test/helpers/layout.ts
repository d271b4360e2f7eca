/**
 * Reading the original's recorded sequences back (golden `final_sequence`s):
 * the grid codes a finished run left at the cell positions. The engine never
 * needs this (it keeps the grid itself); the golden layout tests do.
 */
import { DEFAULT_SPECIAL_TOKENS, type SpecialTokens } from '../../src/checkpoint/special-tokens.js';
import { gridCellPositions } from '../../src/pipelines/prompts.js';

/** Codes per cell from a sequence, -1 where the mask id still is; throws on any other token. */
export function readGridCodes(
  x: ArrayLike<number>,
  codeStart: number,
  h: number,
  w: number,
  t: Pick<SpecialTokens, 'mask' | 'imageOffset' | 'codebookSize'> = DEFAULT_SPECIAL_TOKENS,
): Int32Array {
  return gridCellPositions(codeStart, h, w).map((p) => {
    const id = x[p];
    if (id === t.mask) return -1;
    if (id === undefined || id < t.imageOffset || id >= t.imageOffset + t.codebookSize)
      throw new Error(`position ${p} holds ${id}, which is neither the mask nor an image token`);
    return id - t.imageOffset;
  });
}
