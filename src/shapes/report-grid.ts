/**
 * The evaluation's picture: one row of tiles per task (wrapping after
 * `columns` items), each item framed green when it passed and red when it
 * failed. Image tasks show input (gray frame) then output; understanding
 * shows the picture asked about; text-to-image the output alone.
 */
import type { Image8 } from '../image/image.js';
import type { RgbImage } from '../pipelines/types.js';
import type { EvalItem } from './eval.js';

const FRAME = 4;
const GAP = 6;
const PASS: readonly number[] = [0, 190, 60];
const FAIL: readonly number[] = [225, 20, 20];
const NEUTRAL: readonly number[] = [150, 150, 150];
const PAPER: readonly number[] = [40, 40, 40];

function tilesOf(it: EvalItem): Array<{ img: RgbImage; frame: readonly number[] }> {
  const mark = it.pass ? PASS : FAIL;
  if (it.task === 'mmu') return it.input ? [{ img: it.input, frame: mark }] : [];
  const out: Array<{ img: RgbImage; frame: readonly number[] }> = [];
  if (it.input) out.push({ img: it.input, frame: NEUTRAL });
  if (it.output) out.push({ img: it.output, frame: mark });
  return out;
}

export function evalGridImage(items: readonly EvalItem[], columns = 8): Image8 {
  const tasks = [...new Set(items.map((x) => x.task))];
  // One row per task chunk of `columns` items; tiles share the largest picture size.
  const rows: EvalItem[][] = [];
  for (const t of tasks) {
    const list = items.filter((x) => x.task === t);
    for (let i = 0; i < list.length; i += columns) rows.push(list.slice(i, i + columns));
  }
  let side = 1;
  for (const it of items)
    for (const { img } of tilesOf(it)) side = Math.max(side, img.width, img.height);
  const tile = side + 2 * FRAME;
  const rowWidth = (row: EvalItem[]): number =>
    row.reduce((w, it) => w + tilesOf(it).length * tile + GAP, GAP);
  const width = Math.max(tile + 2 * GAP, ...rows.map(rowWidth));
  const height = GAP + rows.length * (tile + GAP);
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) data.set(PAPER, i * 3);
  const fill = (x0: number, y0: number, w: number, h: number, c: readonly number[]): void => {
    for (let y = y0; y < y0 + h; y++)
      for (let x = x0; x < x0 + w; x++) data.set(c, (y * width + x) * 3);
  };
  rows.forEach((row, r) => {
    let x = GAP;
    const y = GAP + r * (tile + GAP);
    for (const it of row) {
      for (const { img, frame } of tilesOf(it)) {
        fill(x, y, tile, tile, frame);
        for (let yy = 0; yy < img.height; yy++) {
          const src = img.data.subarray(yy * img.width * 3, (yy + 1) * img.width * 3);
          data.set(src, ((y + FRAME + yy) * width + x + FRAME) * 3);
        }
        x += tile;
      }
      x += GAP;
    }
  });
  return { data, width, height, channels: 3 };
}
