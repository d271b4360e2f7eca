/**
 * The shapes VQ-VAE's codebook as a dictionary of the world's token cells.
 *
 * Without jitter the world has few distinct 16x16 cells: 873 in 5 000 scenes
 * as in 20 000, since objects stand on the token grid (~7 800 before). Their
 * T x T block means (thumbnails, 3 * T * T values in [0, 1]) are one-to-one
 * with the cells at T = 4, and fit an 8192-row codebook. A
 * learnt codebook merged colours (a red and an orange object got the same
 * codes: no decoder can undo that); with this one every colour keeps its own
 * codes, the encoder learns to output the thumbnail of its cell (a regression
 * target), and the decoder learns to redraw the cell from it.
 *
 * A thumbnail's values are ordered (channel, block row, block column), the
 * order of the training graph's own thumbnail (graph/vq-train.ts).
 */
import type { Image8 } from '../image/image.js';

/** Thumbnail of the cell at token (row, col): block means of pixels / 255. */
export function cellThumbnail(
  img: Image8,
  cell: number,
  T: number,
  row: number,
  col: number,
  out: Float32Array | number[],
  at = 0,
): void {
  const b = cell / T;
  const C = img.data.length / (img.width * img.height);
  for (let c = 0; c < C; c++)
    for (let by = 0; by < T; by++)
      for (let bx = 0; bx < T; bx++) {
        let s = 0;
        for (let y = 0; y < b; y++) {
          const py = row * cell + by * b + y;
          for (let x = 0; x < b; x++)
            s += img.data[(py * img.width + col * cell + bx * b + x) * C + c]!;
        }
        out[at + (c * T + by) * T + bx] = s / (b * b * 255);
      }
}

export interface ThumbnailCodebook {
  /** [K, 3 * T * T] rows: the thumbnails, most frequent first, then far-away fillers. */
  codebook: Float32Array;
  /** Rows that hold a thumbnail (the others are fillers no cell is ever nearest to). */
  used: number;
  /** Distinct thumbnails seen (more than K: the rarest were left out). */
  distinct: number;
}

/** Value of the filler rows: far outside [0, 1], so no encoder output near a picture picks them. */
export const FILLER = 8;

/**
 * The codebook of the distinct cell thumbnails in `pictures` (rounded to 1/255
 * to merge float noise), the K most frequent ones; ties keep first appearance.
 */
export function thumbnailCodebook(
  pictures: Iterable<Image8>,
  opts: { K: number; T: number; cell: number },
): ThumbnailCodebook {
  const { K, T, cell } = opts;
  if (!Number.isInteger(cell / T))
    throw new Error(`thumbnail size ${T} does not divide the ${cell}-pixel cell`);
  const D = 3 * T * T;
  const seen = new Map<string, { v: Float32Array; n: number; first: number }>();
  const v = new Float32Array(D);
  for (const img of pictures) {
    const rows = img.height / cell;
    const cols = img.width / cell;
    for (let r = 0; r < rows; r++)
      for (let c = 0; c < cols; c++) {
        cellThumbnail(img, cell, T, r, c, v);
        const key = Array.from(v, (x) => Math.round(x * 255)).join(',');
        const e = seen.get(key);
        if (e) e.n++;
        else seen.set(key, { v: v.slice(), n: 1, first: seen.size });
      }
  }
  const all = [...seen.values()].sort((a, b) => b.n - a.n || a.first - b.first);
  const used = Math.min(K, all.length);
  const codebook = new Float32Array(K * D).fill(FILLER);
  for (let k = 0; k < used; k++) codebook.set(all[k]!.v, k * D);
  return { codebook, used, distinct: all.length };
}
