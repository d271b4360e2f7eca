/**
 * Does the caption's place move the model's picture? For one object named
 * at each of the nine places, the probability that a cell is not background,
 * every cell masked, one forward pass: the place-averaged map says where the
 * model puts objects whatever the caption says (it learns that early); what
 * each place's map adds to it, inside the object's cells against outside, is
 * the binding (docs/shapes.md, the seventh run: ~0 after 5 000 mixed steps,
 * 0.1-0.5 after a few hundred single-object ones). A measure of what the
 * model knows, free of sampling noise, where `dimoo eval` counts only exact
 * codes.
 */
import type { Dimoo } from '../pipelines/dimoo.js';
import { buildTextToImage, gridCellPositions, textToImagePrompt } from '../pipelines/prompts.js';
import { softmaxProbF32 } from '../samplers/maskgit.js';
import { Prng } from '../samplers/prng.js';
import { cellsUnder } from './eval.js';
import { describeScene } from './language.js';
import { renderScene } from './render.js';
import {
  CANVAS,
  CELLS,
  placeObject,
  type Background,
  type Color,
  type Shape,
  type Size,
} from './world.js';
import { DimooError } from '../errors.js';

export interface BindingOptions {
  shape?: Shape;
  color?: Color;
  size?: Size;
  background?: Background;
}

export interface BindingReport {
  shape: Shape;
  color: Color;
  size: Size;
  background: Background;
  /** Mean over places of (inside - outside) of the map minus the place-averaged map. */
  binding: number;
  /** The same without subtracting the place-averaged map. */
  insideMinusOutside: number;
  /** Per place (CELLS order): the caption and its map of P(not background), row-major. */
  places: Array<{ place: string; caption: string; map: number[] }>;
}

/**
 * The binding score of maps (one per place) against the places' object masks:
 * mean over places of mean(map - avg) inside the mask minus outside it.
 * Identical maps score 0; a map that is 1 exactly on its object scores high.
 */
export function bindingScore(
  maps: readonly (readonly number[])[],
  masks: readonly ArrayLike<number>[],
): { binding: number; insideMinusOutside: number } {
  if (maps.length === 0 || maps.length !== masks.length)
    throw new DimooError(`binding: ${maps.length} maps for ${masks.length} masks`, 'E_PARAM');
  const n = maps[0]!.length;
  const avg = Array.from(
    { length: n },
    (_, k) => maps.reduce((s, m) => s + m[k]!, 0) / maps.length,
  );
  let binding = 0;
  let raw = 0;
  maps.forEach((m, c) => {
    const mask = masks[c]!;
    if (m.length !== n || mask.length !== n)
      throw new DimooError(
        `binding: map ${c} has ${m.length} cells, mask ${mask.length}, not ${n}`,
        'E_PARAM',
      );
    const sums = { in: 0, out: 0, rawIn: 0, rawOut: 0, nIn: 0, nOut: 0 };
    for (let k = 0; k < n; k++) {
      if (mask[k]) {
        sums.in += m[k]! - avg[k]!;
        sums.rawIn += m[k]!;
        sums.nIn++;
      } else {
        sums.out += m[k]! - avg[k]!;
        sums.rawOut += m[k]!;
        sums.nOut++;
      }
    }
    if (sums.nIn === 0 || sums.nOut === 0)
      throw new DimooError(`binding: mask ${c} covers ${sums.nIn} of ${n} cells`, 'E_PARAM');
    binding += sums.in / sums.nIn - sums.out / sums.nOut;
    raw += sums.rawIn / sums.nIn - sums.rawOut / sums.nOut;
  });
  return { binding: binding / maps.length, insideMinusOutside: raw / maps.length };
}

/** The binding of one object kind over the nine places (18 forward passes' worth: 9 captions, 1 background). */
export async function placeBinding(d: Dimoo, o: BindingOptions = {}): Promise<BindingReport> {
  const shape = o.shape ?? 'square';
  const color = o.color ?? 'red';
  const size = o.size ?? 'small';
  const background = o.background ?? 'white';
  if (CANVAS % d.vqScale !== 0)
    throw new DimooError(
      `the shapes canvas is not a multiple of the VQ scale ${d.vqScale}`,
      'E_PARAM',
    );
  const gh = CANVAS / d.vqScale;
  const gw = gh;
  // The background's code: what the VQ-VAE makes of an empty canvas.
  const empty = renderScene({ background, objects: [] });
  const bg = (await d.encodeImage({ rgb: empty }, { crop: 'none' })).codes[0]!;
  const t = d.special;
  const maps: number[][] = [];
  const masks: Uint8Array[] = [];
  const places: BindingReport['places'] = [];
  for (let cell = 0; cell < CELLS.length; cell++) {
    const obj = placeObject(new Prng(0), [], { shape, color, size, cell });
    if (!obj) throw new DimooError(`a ${size} object does not fit at ${CELLS[cell]}`, 'E_STATE');
    const caption = describeScene({ background, objects: [obj] });
    const p = textToImagePrompt(caption);
    const lay = buildTextToImage(
      {
        promptIds: await d.tokenizer.encode(p.prompt),
        uncondPromptIds: await d.tokenizer.encode(p.uncondPrompt),
        gridH: gh,
        gridW: gw,
      },
      t,
    );
    const rows = gridCellPositions(lay.codeStart, gh, gw);
    const out = await d.model.forward({ ids: lay.sequence, imageRows: rows });
    const V = out.imageLogits.length / rows.length;
    const map = Array.from(rows, (_, k) => 1 - softmaxProbF32(out.imageLogits, k * V, V, bg));
    maps.push(map);
    masks.push(cellsUnder(obj, CANVAS, CANVAS, d.vqScale));
    places.push({ place: CELLS[cell]!, caption, map });
  }
  return { shape, color, size, background, ...bindingScore(maps, masks), places };
}
