/**
 * Scoring rules of the shapes evaluation: a picture's detected facts against
 * what a prompt asked for (text-to-image), against the expected scene after
 * an edit or a painting job, and an answer against the exact answer. Pure.
 */
import { relationOf, normalizeAnswer, type ImageRequest } from './language.js';
import type { ObjectFacts, SceneFacts } from './world.js';

export const T2I_ATTRIBUTES = [
  'shape',
  'color',
  'size',
  'position',
  'count',
  'background',
  'relation',
] as const;
export type T2iAttribute = (typeof T2I_ATTRIBUTES)[number];

export interface T2iScore {
  /** Every requested attribute right. */
  pass: boolean;
  /** Per requested attribute (absent = not requested): right for every object. */
  attributes: Partial<Record<T2iAttribute, boolean>>;
}

function permutations(n: number, k: number): number[][] {
  // Ordered choices of k distinct indices out of n (n, k <= 3 here, or a few more on noisy pictures).
  if (k === 0) return [[]];
  const out: number[][] = [];
  for (const rest of permutations(n, k - 1)) {
    for (let i = 0; i < n; i++) if (!rest.includes(i)) out.push([...rest, i]);
  }
  return out;
}

/** Text-to-image: the best matching of requested to detected objects decides each attribute. */
export function scoreT2i(req: ImageRequest, det: SceneFacts): T2iScore {
  const objs = det.objects;
  const k = Math.min(req.objects.length, objs.length);
  type Verdict = {
    shape: boolean;
    color: boolean;
    size: boolean;
    position: boolean;
    relation: boolean;
  };
  let best: { total: number; v: Verdict } | undefined;
  // Only the first k requested objects can be matched; missing ones fail every attribute.
  const candidates = objs.length > 6 ? [[...Array(k).keys()]] : permutations(objs.length, k);
  for (const perm of candidates) {
    const v: Verdict = { shape: true, color: true, size: true, position: true, relation: true };
    let total = 0;
    req.objects.forEach((r, i) => {
      const o: ObjectFacts | undefined = i < perm.length ? objs[perm[i]!] : undefined;
      const checks: Array<[keyof Verdict, boolean | null]> = [
        ['shape', o ? o.shape === r.shape : false],
        ['color', o ? o.color === r.color : false],
        ['size', r.size === null ? null : o ? o.size === r.size : false],
        ['position', r.cell === null ? null : o ? o.cell === r.cell : false],
      ];
      for (const [name, ok] of checks) {
        if (ok === null) continue;
        if (ok) total++;
        else v[name] = false;
      }
    });
    if (req.relation) {
      const a = perm[0] !== undefined ? objs[perm[0]] : undefined;
      const b = perm[1] !== undefined ? objs[perm[1]] : undefined;
      v.relation = !!(a && b && relationOf(a, b).includes(req.relation));
      if (v.relation) total++;
    }
    if (!best || total > best.total) best = { total, v };
  }
  const v = best!.v;
  const attributes: T2iScore['attributes'] = {
    shape: v.shape,
    color: v.color,
    count: objs.length === req.count,
  };
  if (req.objects.some((o) => o.size !== null)) attributes.size = v.size;
  if (req.objects.some((o) => o.cell !== null)) attributes.position = v.position;
  if (req.background !== null) attributes.background = det.background === req.background;
  if (req.relation !== null) attributes.relation = v.relation;
  return { pass: Object.values(attributes).every((x) => x), attributes };
}

function key(o: ObjectFacts): string {
  return `${o.cell}:${o.size}:${o.color}:${o.shape}`;
}

export interface ChangeScore {
  /** What had to change did (new/changed objects present, removed ones gone, background as asked). */
  changed: boolean;
  /** Everything else as before (kept objects present, nothing extra, background kept unless asked). */
  rest: boolean;
  pass: boolean;
}

/**
 * Edits and painting: the picture `det` should show `after`, made from
 * `before`. Objects are compared by all their facts (cell, size, color, shape).
 */
export function scoreChange(before: SceneFacts, after: SceneFacts, det: SceneFacts): ChangeScore {
  const b = new Set(before.objects.map(key));
  const a = new Set(after.objects.map(key));
  const d = det.objects.map(key);
  const ds = new Set(d);
  const bgAsked = before.background !== after.background;
  const added = [...a].filter((x) => !b.has(x));
  const removed = [...b].filter((x) => !a.has(x));
  const kept = [...a].filter((x) => b.has(x));
  const changed =
    added.every((x) => ds.has(x)) &&
    removed.every((x) => !ds.has(x)) &&
    (!bgAsked || det.background === after.background);
  const rest =
    kept.every((x) => ds.has(x)) &&
    d.length === a.size &&
    (bgAsked || det.background === before.background);
  return { changed, rest, pass: changed && rest };
}

/** Understanding: exact answer after the tokenizer's word split (decode joins words with one space). */
export function scoreAnswer(expected: string, got: string): boolean {
  return normalizeAnswer(got) === normalizeAnswer(expected);
}
