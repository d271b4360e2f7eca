/**
 * Words of the shapes world: captions (from templates, with variety), edit
 * instructions with the edit type the original's prompts use, and questions
 * with short exact answers. Each carries a machine-readable account of what
 * it asks for, which the evaluation checks pictures and answers against.
 * Pure; randomness from the caller's Prng.
 */
import { DimooError } from '../errors.js';
import type { Prng } from '../samplers/prng.js';
import {
  BACKGROUNDS,
  CELLS,
  COLORS,
  SHAPES,
  SIZES,
  cellCol,
  cellRow,
  placeObject,
  sortObjects,
  type Background,
  type Color,
  type ObjectFacts,
  type Scene,
  type SceneFacts,
  type Shape,
  type ShapeObject,
  type Size,
} from './world.js';

const NUMBER_WORDS = ['zero', 'one', 'two', 'three'] as const;

/** "in the top left", "at the top", "on the left", "in the center", ... */
export function positionPhrase(cell: number): string {
  const name = CELLS[cell]!;
  if (name === 'top' || name === 'bottom') return `at the ${name}`;
  if (name === 'left' || name === 'right') return `on the ${name}`;
  return `in the ${name}`;
}

function plural(shape: Shape): string {
  return `${shape}s`;
}

function article(nextWord: string): string {
  return /^[aeiou]/.test(nextWord) ? 'an' : 'a';
}

function pick<T>(prng: Prng, list: readonly T[]): T {
  return list[prng.randint(0, list.length)]!;
}

function withArticle(words: string[]): string {
  return `${article(words[0]!)} ${words.join(' ')}`;
}

// ---------------------------------------------------------------- captions

/** What a caption asks for of one object; null = not said. */
export interface ObjectRequest {
  shape: Shape;
  color: Color;
  size: Size | null;
  cell: number | null;
}

export type Relation = 'left of' | 'right of' | 'above' | 'below';

/** What a text-to-image prompt asks for: the checker verifies each part. */
export interface ImageRequest {
  background: Background | null;
  /** Exactly this many objects. */
  count: number;
  objects: ObjectRequest[];
  /** objects[0] stands in this relation to objects[1]. */
  relation: Relation | null;
}

export interface Caption {
  text: string;
  request: ImageRequest;
}

function objectWords(o: ObjectFacts, size: boolean): string[] {
  return [...(size ? [o.size] : []), o.color, o.shape];
}

function joinList(parts: string[]): string {
  if (parts.length <= 1) return parts.join('');
  return `${parts.slice(0, -1).join(', ')} and ${parts.at(-1)!}`;
}

function backgroundPhrase(bg: Background, prng?: Prng): string {
  return prng && prng.uniform() < 0.3 ? `on ${bg}` : `on a ${bg} background`;
}

/**
 * The one canonical description (every attribute, objects in cell order):
 * the answer to "Describe the image." and the prompt of painting tasks.
 */
export function describeScene(s: SceneFacts): string {
  const parts = sortObjects(s.objects as ShapeObject[]).map(
    (o) => `${withArticle(objectWords(o, true))} ${positionPhrase(o.cell)}`,
  );
  return `${joinList(parts)} ${backgroundPhrase(s.background)}`;
}

export function fullRequest(s: SceneFacts): ImageRequest {
  return {
    background: s.background,
    count: s.objects.length,
    objects: sortObjects(s.objects as ShapeObject[]).map((o) => ({
      shape: o.shape,
      color: o.color,
      size: o.size,
      cell: o.cell,
    })),
    relation: null,
  };
}

/** The relation of a to b that a caption may state, or null when none holds cleanly. */
export function relationOf(a: ObjectFacts, b: ObjectFacts): Relation[] {
  const out: Relation[] = [];
  if (cellCol(a.cell) < cellCol(b.cell)) out.push('left of');
  if (cellCol(a.cell) > cellCol(b.cell)) out.push('right of');
  if (cellRow(a.cell) < cellRow(b.cell)) out.push('above');
  if (cellRow(a.cell) > cellRow(b.cell)) out.push('below');
  return out;
}

const RELATION_WORDS: Readonly<Record<Relation, string>> = {
  'left of': 'to the left of',
  'right of': 'to the right of',
  above: 'above',
  below: 'below',
};

/**
 * A caption with some variety: the list form (sizes and positions usually
 * said), the count form for identical objects ("two small blue squares"),
 * the relation form for two objects ("a green triangle to the left of a
 * yellow diamond"); the background is usually said.
 */
export function sampleCaption(prng: Prng, s: SceneFacts): Caption {
  const objs = sortObjects(s.objects as ShapeObject[]);
  const n = objs.length;
  if (n === 0) throw new DimooError('a caption needs at least one object', 'E_PARAM');
  const sayBg = prng.uniform() < 0.85;
  const bg = sayBg ? ` ${backgroundPhrase(s.background, prng)}` : '';
  const background = sayBg ? s.background : null;
  const same = objs.every(
    (o) => o.shape === objs[0]!.shape && o.color === objs[0]!.color && o.size === objs[0]!.size,
  );
  const form = prng.uniform();
  if (n >= 2 && same && form < 0.6) {
    const o = objs[0]!;
    const saySize = prng.uniform() < 0.8;
    const words = [NUMBER_WORDS[n]!, ...(saySize ? [o.size] : []), o.color, plural(o.shape)];
    return {
      text: `${words.join(' ')}${bg}`,
      request: {
        background,
        count: n,
        objects: objs.map((x) => ({
          shape: x.shape,
          color: x.color,
          size: saySize ? x.size : null,
          cell: null,
        })),
        relation: null,
      },
    };
  }
  if (n === 2 && form < 0.45 && !same) {
    const order = prng.uniform() < 0.5 ? [objs[0]!, objs[1]!] : [objs[1]!, objs[0]!];
    const rels = relationOf(order[0]!, order[1]!);
    if (rels.length > 0) {
      const rel = pick(prng, rels);
      const [a, b] = order as [ShapeObject, ShapeObject];
      // Both objects must stay distinguishable by what is said.
      const saySize = prng.uniform() < 0.5 || (a.shape === b.shape && a.color === b.color);
      return {
        text: `${withArticle(objectWords(a, saySize))} ${RELATION_WORDS[rel]} ${withArticle(objectWords(b, saySize))}${bg}`,
        request: {
          background,
          count: 2,
          objects: [a, b].map((x) => ({
            shape: x.shape,
            color: x.color,
            size: saySize ? x.size : null,
            cell: null,
          })),
          relation: rel,
        },
      };
    }
  }
  const saySize = prng.uniform() < 0.8;
  const sayPos = prng.uniform() < 0.8;
  const parts = objs.map(
    (o) => `${withArticle(objectWords(o, saySize))}${sayPos ? ` ${positionPhrase(o.cell)}` : ''}`,
  );
  const lead = prng.uniform() < 0.15 ? pick(prng, ['an image of ', 'a picture of ']) : '';
  return {
    text: `${lead}${joinList(parts)}${bg}`,
    request: {
      background,
      count: n,
      objects: objs.map((o) => ({
        shape: o.shape,
        color: o.color,
        size: saySize ? o.size : null,
        cell: sayPos ? o.cell : null,
      })),
      relation: null,
    },
  };
}

// ---------------------------------------------------------------- references

/** The shortest unique way to name object i: "circle", "red circle", "small red circle", "circle in the top left". */
export function referTo(s: SceneFacts, i: number): string {
  const o = s.objects[i]!;
  const others = s.objects.filter((_, j) => j !== i);
  if (!others.some((x) => x.shape === o.shape)) return o.shape;
  if (!others.some((x) => x.shape === o.shape && x.color === o.color))
    return `${o.color} ${o.shape}`;
  if (!others.some((x) => x.shape === o.shape && x.color === o.color && x.size === o.size))
    return `${o.size} ${o.color} ${o.shape}`;
  return `${o.shape} ${positionPhrase(o.cell)}`;
}

// ---------------------------------------------------------------- edits

export type EditKind = 'recolor' | 'move' | 'add' | 'remove' | 'background';
export const EDIT_KINDS: readonly EditKind[] = ['recolor', 'move', 'add', 'remove', 'background'];

/** The original's edit_type for each kind (all select its image-editing system prompt). */
export const EDIT_TYPE_OF: Readonly<
  Record<EditKind, 'edit' | 'edit_add' | 'edit_remove' | 'edit_background'>
> = {
  recolor: 'edit',
  move: 'edit',
  add: 'edit_add',
  remove: 'edit_remove',
  background: 'edit_background',
};

export interface Edit {
  kind: EditKind;
  editType: (typeof EDIT_TYPE_OF)[EditKind];
  prompt: string;
  /** The scene after the edit (same pixel geometry for everything not edited). */
  after: Scene;
}

function others<T>(list: readonly T[], not: T): T[] {
  return list.filter((x) => x !== not);
}

/** One edit of the scene, of the given kind (or a random kind that applies); null if that kind cannot apply. */
export function sampleEdit(prng: Prng, s: Scene, kind?: EditKind): Edit | null {
  if (kind) return editOfKind(prng, s, kind);
  // Some kinds cannot apply (nothing to move to, no room to add); background always can.
  for (const k of prng.shuffle([...EDIT_KINDS])) {
    const e = editOfKind(prng, s, k);
    if (e) return e;
  }
  return null;
}

function editOfKind(prng: Prng, s: Scene, k: EditKind): Edit | null {
  const objs = s.objects;
  const make = (prompt: string, after: Scene): Edit => ({
    kind: k,
    editType: EDIT_TYPE_OF[k],
    prompt,
    after: { background: after.background, objects: sortObjects(after.objects) },
  });
  switch (k) {
    case 'background': {
      const bg = pick(prng, others(BACKGROUNDS, s.background));
      const prompt =
        prng.uniform() < 0.7 ? `change the background to ${bg}` : `make the background ${bg}`;
      return make(prompt, { background: bg, objects: objs });
    }
    case 'recolor': {
      const i = prng.randint(0, objs.length);
      const color = pick(prng, others(COLORS, objs[i]!.color));
      const ref = referTo(s, i);
      const prompt = pick(prng, [
        `make the ${ref} ${color}`,
        `change the color of the ${ref} to ${color}`,
        `turn the ${ref} ${color}`,
      ]);
      return make(prompt, {
        background: s.background,
        objects: objs.map((o, j) => (j === i ? { ...o, color } : o)),
      });
    }
    case 'remove': {
      if (objs.length < 2) return null;
      const i = prng.randint(0, objs.length);
      const prompt = `${prng.uniform() < 0.8 ? 'remove' : 'delete'} the ${referTo(s, i)}`;
      return make(prompt, { background: s.background, objects: objs.filter((_, j) => j !== i) });
    }
    case 'move': {
      const i = prng.randint(0, objs.length);
      const rest = objs.filter((_, j) => j !== i);
      const o = objs[i]!;
      for (const cell of prng.shuffle([...CELLS.keys()])) {
        if (cell === o.cell) continue;
        const moved = placeObject(prng, rest, {
          shape: o.shape,
          color: o.color,
          size: o.size,
          cell,
        });
        if (!moved) continue;
        const where = CELLS[cell] === 'center' ? 'the center' : `the ${CELLS[cell]}`;
        return make(`move the ${referTo(s, i)} to ${where}`, {
          background: s.background,
          objects: [...rest, moved],
        });
      }
      return null;
    }
    case 'add': {
      if (objs.length >= 3) return null;
      for (let tries = 0; tries < 40; tries++) {
        const spec = {
          shape: pick(prng, SHAPES),
          color: pick(prng, COLORS),
          size: pick(prng, SIZES),
          cell: prng.randint(0, 9),
        };
        const o = placeObject(prng, objs, spec);
        if (!o) continue;
        return make(`add ${withArticle(objectWords(o, true))} ${positionPhrase(o.cell)}`, {
          background: s.background,
          objects: [...objs, o],
        });
      }
      return null;
    }
  }
}

// ---------------------------------------------------------------- questions

export type QuestionType = 'color' | 'shape' | 'count' | 'background' | 'describe';
export const QUESTION_TYPES: readonly QuestionType[] = [
  'color',
  'shape',
  'count',
  'background',
  'describe',
];

export interface Question {
  type: QuestionType;
  question: string;
  answer: string;
}

/** A question about the scene with its exact short answer. */
export function sampleQuestion(prng: Prng, s: SceneFacts, type?: QuestionType): Question {
  const t = type ?? pick(prng, QUESTION_TYPES);
  const objs = s.objects;
  switch (t) {
    case 'color': {
      const i = prng.randint(0, objs.length);
      return { type: t, question: `What color is the ${referTo(s, i)}?`, answer: objs[i]!.color };
    }
    case 'shape': {
      const o = pick(prng, objs);
      return {
        type: t,
        question: `What shape is ${positionPhrase(o.cell)}?`,
        answer: `${article(o.shape)} ${o.shape}`,
      };
    }
    case 'count': {
      if (prng.uniform() < 0.3) {
        return {
          type: t,
          question: 'How many objects are there?',
          answer: NUMBER_WORDS[objs.length]!,
        };
      }
      // Mostly shapes that are present, sometimes one that is not ("zero").
      const shape = prng.uniform() < 0.8 ? pick(prng, objs).shape : pick(prng, SHAPES);
      const n = objs.filter((o) => o.shape === shape).length;
      return {
        type: t,
        question: `How many ${plural(shape)} are there?`,
        answer: NUMBER_WORDS[n]!,
      };
    }
    case 'background':
      return { type: t, question: 'What color is the background?', answer: s.background };
    case 'describe':
      return { type: t, question: 'Describe the image.', answer: describeScene(s) };
  }
}

/** Token-level form of an answer: the tokenizer's word split, joined by one space (decode's output). */
export function normalizeAnswer(text: string): string {
  return (text.match(/\w+|[^\w\s]+/g) ?? []).join(' ').toLowerCase();
}

/** Every word the world's prompts and answers can use (for the tokenizer; tests check coverage). */
export const WORLD_WORDS: readonly string[] = [
  ...SHAPES,
  ...SHAPES.map(plural),
  ...COLORS,
  ...BACKGROUNDS,
  ...SIZES,
  ...NUMBER_WORDS,
  ...'a an the in at on of to and top bottom left right center above below background image picture'.split(
    ' ',
  ),
  ...'make change color turn move add remove delete What shape is are How many objects there Describe'.split(
    ' ',
  ),
  ...[',', '.', '?'],
];
