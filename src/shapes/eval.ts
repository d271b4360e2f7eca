/**
 * The shapes evaluation: held-out prompts and pictures of the world, run
 * through any loaded checkpoint (any settings: caches, quantized folders,
 * devices), the outputs read back by the rule-based checker.
 *
 * Tasks:
 *   t2i      caption -> picture; every requested attribute right, and per attribute
 *   edit     picture + instruction -> picture; the change happened, nothing else changed
 *   inpaint  an object's token cells masked, caption of the scene with that object
 *            recolored or reshaped -> the masked region follows the prompt, the rest unchanged
 *   retouch  empty token cells masked, caption of the scene with a new object there
 *            -> the new object appears, the rest unchanged
 *   mmu      picture + question -> exact short answer, per question type
 *
 * Items come from the same held-out rule the generator uses (world.isHeldOut
 * with the same fraction), so a model trained on the generator's train split
 * never saw these scenes. Input pictures are encoded with the checkpoint's own
 * VQ-VAE at their size (128x128 -> 8x8 tokens at 16x); painting masks are the
 * token cells (of the checkpoint's VQ scale) under the object's box.
 */
import * as path from 'node:path';
import { DimooError } from '../errors.js';
import { TextTokenizer } from '../models/tokenizer.js';
import type {
  DimooApi,
  ImageSamplingParams,
  RgbImage,
  RunOptions,
  TokenGrid,
  UnderstandParams,
} from '../pipelines/types.js';
import { Prng } from '../samplers/prng.js';
import { detectScene } from './checker.js';
import {
  EDIT_KINDS,
  QUESTION_TYPES,
  describeScene,
  sampleCaption,
  sampleEdit,
  sampleQuestion,
  type ImageRequest,
  type QuestionType,
} from './language.js';
import { renderScene } from './render.js';
import { T2I_ATTRIBUTES, scoreAnswer, scoreChange, scoreT2i, type T2iAttribute } from './score.js';
import {
  CANVAS,
  COLORS,
  SHAPES,
  SIZES,
  isHeldOut,
  objectBox,
  placeObject,
  sampleScene,
  sceneFacts,
  sortObjects,
  type Scene,
  type SceneFacts,
  type ShapeObject,
} from './world.js';

/** Longest checkpoint answer length eval uses as is. */
const SHORT_ANSWER_MAX = 256;

export const EVAL_TASKS = ['t2i', 'edit', 'inpaint', 'retouch', 'mmu', 'probe'] as const;
export type EvalTask = (typeof EVAL_TASKS)[number];
/**
 * What an evaluation runs unless told: every task but the probe, which
 * measures what the model knows rather than what it draws.
 */
export const DEFAULT_EVAL_TASKS: readonly EvalTask[] = EVAL_TASKS.filter((t) => t !== 'probe');

/** Cells of one probe item read right / asked, by kind. */
export interface ProbeCells {
  /** Every cell masked: the caption alone. */
  full: { background: [number, number]; object: [number, number] };
  /** A seeded random half of the cells masked: the caption and the other half. */
  half: { background: [number, number]; object: [number, number] };
}

export interface EvalOptions {
  /** Items per task (default 20). */
  limit?: number;
  tasks?: readonly EvalTask[];
  /** Seed of the item draw (default 0) and of sampling (item i uses seed + i). */
  seed?: number;
  /** Held-out fraction the generator used (default 0.1). */
  holdout?: number;
  /** Image sampling (timesteps, cfg, temperature, ML-Cache); the library's defaults otherwise. */
  image?: Omit<ImageSamplingParams, 'seed'>;
  /**
   * Image guidance scale of the edits (the library's default otherwise). A
   * model trained with the original recipe never sees a prompt with its text
   * but not its picture (the condition drop removes both), so its
   * image-unconditional branch is out of its training: 0 turns it off.
   */
  cfgImg?: number;
  /** Understanding settings (answer length, steps, caches). */
  mmu?: Omit<UnderstandParams, 'question' | 'image'>;
  /** Called after every item. */
  onItem?: (item: EvalItem, done: number, total: number) => void;
  signal?: AbortSignal;
}

export interface EvalItem {
  task: EvalTask;
  /** Sub-kind: object count (t2i), edit kind, question type. */
  kind: string;
  prompt: string;
  expected: string;
  /** What the checker read (pictures) or the answer (mmu). */
  got: string;
  pass: boolean;
  /** t2i: per requested attribute; edits/painting: changed / rest; probe: full / half. */
  checks: Record<string, boolean>;
  /** probe: masked cells whose greedy code is the true one. */
  cells?: ProbeCells;
  /** Input picture (edit, painting, mmu) and output picture (image tasks), for the grid. */
  input?: RgbImage;
  output?: RgbImage;
  ms: number;
}

export interface Rate {
  n: number;
  pass: number;
  rate: number;
}

export interface EvalReport {
  model: string;
  settings: {
    limit: number;
    seed: number;
    holdout: number;
    tasks: EvalTask[];
    image: Record<string, unknown>;
    mmu: Record<string, unknown>;
  };
  t2i?: {
    all: Rate;
    byAttribute: Partial<Record<T2iAttribute, Rate>>;
    byObjects: Record<string, Rate>;
  };
  edit?: { all: Rate; changed: Rate; rest: Rate; byKind: Record<string, Rate> };
  inpaint?: { all: Rate; changed: Rate; rest: Rate };
  retouch?: { all: Rate; changed: Rate; rest: Rate };
  mmu?: { all: Rate; byType: Record<string, Rate> };
  /**
   * probe: share of masked cells whose greedy code is the true one ("object"
   * = cells that are not the picture's most common code, its background).
   */
  probe?: {
    all: Rate;
    full: { background: Rate; object: Rate };
    half: { background: Rate; object: Rate };
  };
  items: EvalItem[];
  totalMs: number;
}

interface PlannedItem {
  task: EvalTask;
  kind: string;
  prompt: string;
  scene: Scene;
  /** t2i */
  request?: ImageRequest;
  /** edit / painting: expected scene after */
  after?: Scene;
  editType?: string;
  /** painting: the object whose box's token cells are regenerated */
  region?: ShapeObject;
  /** mmu */
  question?: string;
  answer?: string;
  questionType?: QuestionType;
}

/** Token cells (row-major, cells of `scale` px) of a width x height picture overlapped by an object's box. */
export function cellsUnder(
  o: ShapeObject,
  width: number,
  height: number,
  scale: number,
): Uint8Array {
  const gw = width / scale;
  const gh = height / scale;
  const cells = new Uint8Array(gw * gh);
  const b = objectBox(o);
  const c0 = Math.max(0, Math.floor(b.x0 / scale));
  const c1 = Math.min(gw - 1, Math.ceil(b.x1 / scale) - 1);
  const r0 = Math.max(0, Math.floor(b.y0 / scale));
  const r1 = Math.min(gh - 1, Math.ceil(b.y1 / scale) - 1);
  for (let r = r0; r <= r1; r++) for (let c = c0; c <= c1; c++) cells[r * gw + c] = 1;
  return cells;
}

/** Scenes of the held-out split, drawn from a stream of their own per task. */
function heldOutScenes(seed: number, holdout: number, label: number): () => Scene {
  let i = 0;
  return () => {
    for (let tries = 0; tries < 1_000_000; tries++) {
      const s = sampleScene(new Prng(seed, 0x5e7a1 ^ label, i++));
      if (isHeldOut(s, holdout)) return s;
    }
    throw new DimooError(`no held-out scene found with holdout ${holdout}`, 'E_PARAM');
  };
}

/** The items of one task (pure: a function of seed, holdout and limit). */
export function planItems(
  task: EvalTask,
  limit: number,
  seed: number,
  holdout: number,
): PlannedItem[] {
  if (holdout <= 0)
    throw new DimooError('the evaluation needs a held-out share above 0', 'E_PARAM');
  const label = EVAL_TASKS.indexOf(task) + 1;
  const next = heldOutScenes(seed, holdout, label);
  const out: PlannedItem[] = [];
  for (let i = 0; out.length < limit; i++) {
    const prng = new Prng(seed, 0x5e7a1 ^ (label << 8), i);
    if (i > limit * 50) throw new DimooError(`could not plan ${limit} ${task} items`, 'E_STATE');
    switch (task) {
      case 't2i':
      case 'probe': {
        // Cycle object counts so 1, 2 and 3-object prompts all get items.
        const want = (out.length % 3) + 1;
        let scene = next();
        while (scene.objects.length !== want) scene = next();
        const c = sampleCaption(prng, sceneFacts(scene));
        out.push({
          task,
          kind: `${want} object${want > 1 ? 's' : ''}`,
          prompt: c.text,
          scene,
          request: c.request,
        });
        break;
      }
      case 'edit': {
        const scene = next();
        const kind = EDIT_KINDS[out.length % EDIT_KINDS.length]!;
        const e = sampleEdit(prng, scene, kind);
        if (!e) continue;
        out.push({ task, kind, prompt: e.prompt, scene, after: e.after, editType: e.editType });
        break;
      }
      case 'inpaint': {
        const scene = next();
        const j = prng.randint(0, scene.objects.length);
        const o = scene.objects[j]!;
        const changed: ShapeObject =
          prng.uniform() < 0.5
            ? {
                ...o,
                color: pick(
                  prng,
                  COLORS.filter((c) => c !== o.color),
                ),
              }
            : {
                ...o,
                shape: pick(
                  prng,
                  SHAPES.filter((s) => s !== o.shape),
                ),
              };
        const after: Scene = {
          background: scene.background,
          objects: sortObjects(scene.objects.map((x, k) => (k === j ? changed : x))),
        };
        out.push({
          task,
          kind: changed.color !== o.color ? 'recolor' : 'reshape',
          prompt: describeScene(sceneFacts(after)),
          scene,
          after,
          region: o,
        });
        break;
      }
      case 'retouch': {
        const scene = next();
        if (scene.objects.length >= 3) continue;
        const o = placeObject(prng, scene.objects, {
          shape: pick(prng, SHAPES),
          color: pick(prng, COLORS),
          size: pick(prng, SIZES),
          cell: prng.randint(0, 9),
        });
        if (!o) continue;
        const after: Scene = {
          background: scene.background,
          objects: sortObjects([...scene.objects, o]),
        };
        out.push({
          task,
          kind: 'add',
          prompt: describeScene(sceneFacts(after)),
          scene,
          after,
          region: o,
        });
        break;
      }
      case 'mmu': {
        const scene = next();
        const type = QUESTION_TYPES[out.length % QUESTION_TYPES.length]!;
        const q = sampleQuestion(prng, sceneFacts(scene), type);
        out.push({
          task,
          kind: type,
          prompt: q.question,
          scene,
          question: q.question,
          answer: q.answer,
          questionType: type,
        });
        break;
      }
    }
  }
  return out;
}

function pick<T>(prng: Prng, list: readonly T[]): T {
  return list[prng.randint(0, list.length)]!;
}

function factsText(s: SceneFacts): string {
  return s.objects.length > 0 ? describeScene(s) : `no object on a ${s.background} background`;
}

function rate(items: readonly { pass: boolean }[]): Rate {
  const pass = items.filter((x) => x.pass).length;
  return { n: items.length, pass, rate: items.length ? pass / items.length : 0 };
}

function rateOf(items: readonly EvalItem[], check: string): Rate {
  const sel = items.filter((x) => check in x.checks);
  return rate(sel.map((x) => ({ pass: x.checks[check]! })));
}

function groupRates(items: readonly EvalItem[]): Record<string, Rate> {
  const out: Record<string, Rate> = {};
  for (const k of [...new Set(items.map((x) => x.kind))])
    out[k] = rate(items.filter((x) => x.kind === k));
  return out;
}

/** Answer ids up to the first end-of-answer / end-of-text token, decoded. */
async function cutAnswer(tok: TextTokenizer, ids: number[]): Promise<string> {
  const stops = new Set(
    [tok.tokenToId('</answer>'), tok.tokenToId('<|endoftext|>')].filter(
      (x): x is number => x !== undefined,
    ),
  );
  const end = ids.findIndex((id) => stops.has(id));
  return tok.decode(end >= 0 ? ids.slice(0, end) : ids, { skipSpecialTokens: true });
}

function cellsText(cells: Uint8Array): string {
  return `${cells.reduce((a, b) => a + b, 0)} cells`;
}

/** Runs the evaluation on a loaded model. */
export async function runShapesEval(api: DimooApi, o: EvalOptions = {}): Promise<EvalReport> {
  const limit = o.limit ?? 20;
  const seed = o.seed ?? 0;
  const holdout = o.holdout ?? 0.1;
  const tasks = [...(o.tasks ?? DEFAULT_EVAL_TASKS)];
  if (!Number.isSafeInteger(limit) || limit < 1)
    throw new DimooError(`limit must be a positive integer, got ${limit}`, 'E_PARAM');
  for (const t of tasks)
    if (!EVAL_TASKS.includes(t))
      throw new DimooError(`unknown eval task "${t}" (known: ${EVAL_TASKS.join(', ')})`, 'E_PARAM');
  const info = api.info();
  if (!info.hasVq)
    throw new DimooError(
      `${info.dir} has no VQ-VAE (vqvae/): the evaluation draws and reads pictures`,
      'E_PARAM',
    );
  if (CANVAS % info.vqScale !== 0) {
    throw new DimooError(
      `the shapes canvas (${CANVAS} px) is not a multiple of ${info.dir}'s VQ scale ${info.vqScale}`,
      'E_PARAM',
    );
  }
  const tok = TextTokenizer.fromFile(path.join(info.dir, 'tokenizer.json'));
  const plans = tasks.flatMap((t) => planItems(t, limit, seed, holdout));
  const run: RunOptions = o.signal ? { signal: o.signal } : {};
  const image = o.image ?? {};
  const t0 = performance.now();
  const items: EvalItem[] = [];
  const encode = async (s: Scene): Promise<{ rgb: RgbImage; grid: TokenGrid }> => {
    const img = renderScene(s);
    const rgb = { data: img.data, width: img.width, height: img.height };
    return { rgb, grid: await api.encodeImage({ rgb }, { crop: 'none' }) };
  };
  // The world's answers are a few words: a checkpoint that names a short answer
  // length (its generation_config.json) is asked with it; the original's
  // 1024-token default would only cost time, so other models get 48.
  const md = info.defaults.mmu;
  const mmuDefaults =
    md.genLength <= SHORT_ANSWER_MAX
      ? { genLength: md.genLength, blockLength: md.blockLength, steps: md.steps }
      : { genLength: 48, blockLength: 16, steps: 48 };
  for (let i = 0; i < plans.length; i++) {
    const p = plans[i]!;
    const started = performance.now();
    const sampling = { ...image, seed: seed + i };
    let item: Omit<EvalItem, 'ms'>;
    if (p.task === 't2i') {
      const r = await api.generate(
        { prompt: p.prompt, width: CANVAS, height: CANVAS, ...sampling },
        run,
      );
      const det = detectScene(r.image!);
      const s = scoreT2i(p.request!, det);
      item = {
        task: p.task,
        kind: p.kind,
        prompt: p.prompt,
        expected: factsText(sceneFacts(p.scene)),
        got: factsText(det),
        pass: s.pass,
        checks: s.attributes as Record<string, boolean>,
        output: r.image!,
      };
    } else if (p.task === 'probe') {
      const { rgb, grid } = await encode(p.scene);
      const cells = await probeCells(api, p.prompt, grid, seed + i, run);
      const f = cells.full;
      const h = cells.half;
      const right = (x: [number, number]): boolean => x[0] === x[1];
      const frac = (x: [number, number]): string => `${x[0]}/${x[1]}`;
      item = {
        task: p.task,
        kind: p.kind,
        prompt: p.prompt,
        expected: factsText(sceneFacts(p.scene)),
        got:
          `all masked: object cells ${frac(f.object)}, background ${frac(f.background)}; ` +
          `half masked: object cells ${frac(h.object)}, background ${frac(h.background)}`,
        pass: right(f.object) && right(f.background),
        checks: {
          full: right(f.object) && right(f.background),
          half: right(h.object) && right(h.background),
        },
        cells,
        input: rgb,
      };
    } else if (p.task === 'mmu') {
      const { rgb, grid } = await encode(p.scene);
      const r = await api.understand(
        { ...mmuDefaults, ...o.mmu, question: p.question!, image: { tokens: grid } },
        run,
      );
      const got = await cutAnswer(tok, r.ids);
      const pass = scoreAnswer(p.answer!, got);
      item = {
        task: p.task,
        kind: p.kind,
        prompt: p.prompt,
        expected: p.answer!,
        got,
        pass,
        checks: { exact: pass },
        input: rgb,
      };
    } else {
      const { rgb, grid } = await encode(p.scene);
      const cells = p.region ? cellsUnder(p.region, CANVAS, CANVAS, info.vqScale) : undefined;
      const r =
        p.task === 'edit'
          ? await api.edit(
              {
                prompt: p.prompt,
                editType: p.editType as 'edit',
                image: { tokens: grid },
                ...sampling,
                ...(o.cfgImg !== undefined && { cfgImg: o.cfgImg }),
              },
              run,
            )
          : p.task === 'inpaint'
            ? await api.inpaint(
                {
                  prompt: p.prompt,
                  image: { tokens: grid },
                  mask: { kind: 'cells', cells: cells! },
                  ...sampling,
                },
                run,
              )
            : await api.retouch(
                {
                  prompt: p.prompt,
                  image: { tokens: grid },
                  mask: { kind: 'cells', cells: cells! },
                  ...sampling,
                },
                run,
              );
      const det = detectScene(r.image!);
      const s = scoreChange(sceneFacts(p.scene), sceneFacts(p.after!), det);
      item = {
        task: p.task,
        kind: p.kind,
        prompt: cells ? `${p.prompt} [${cellsText(cells)}]` : p.prompt,
        expected: factsText(sceneFacts(p.after!)),
        got: factsText(det),
        pass: s.pass,
        checks: { changed: s.changed, rest: s.rest },
        input: rgb,
        output: r.image!,
      };
    }
    const done: EvalItem = { ...item, ms: performance.now() - started };
    items.push(done);
    o.onItem?.(done, i + 1, plans.length);
  }
  const of = (t: EvalTask): EvalItem[] => items.filter((x) => x.task === t);
  const report: EvalReport = {
    model: info.dir,
    settings: {
      limit,
      seed,
      holdout,
      tasks,
      image: { ...image },
      mmu: { ...mmuDefaults, ...o.mmu },
    },
    items,
    totalMs: performance.now() - t0,
  };
  if (tasks.includes('t2i')) {
    const it = of('t2i');
    const byAttribute: Partial<Record<T2iAttribute, Rate>> = {};
    for (const a of T2I_ATTRIBUTES) {
      const r = rateOf(it, a);
      if (r.n > 0) byAttribute[a] = r;
    }
    report.t2i = { all: rate(it), byAttribute, byObjects: groupRates(it) };
  }
  if (tasks.includes('edit')) {
    const it = of('edit');
    report.edit = {
      all: rate(it),
      changed: rateOf(it, 'changed'),
      rest: rateOf(it, 'rest'),
      byKind: groupRates(it),
    };
  }
  for (const t of ['inpaint', 'retouch'] as const) {
    if (!tasks.includes(t)) continue;
    const it = of(t);
    report[t] = { all: rate(it), changed: rateOf(it, 'changed'), rest: rateOf(it, 'rest') };
  }
  if (tasks.includes('mmu')) {
    const it = of('mmu');
    report.mmu = { all: rate(it), byType: groupRates(it) };
  }
  if (tasks.includes('probe')) {
    const it = of('probe');
    const sum = (pick: (c: ProbeCells) => [number, number]): Rate => {
      let pass = 0;
      let n = 0;
      for (const x of it) {
        const [a, b] = pick(x.cells!);
        pass += a;
        n += b;
      }
      return { n, pass, rate: n ? pass / n : 0 };
    };
    report.probe = {
      all: rate(it),
      full: { background: sum((c) => c.full.background), object: sum((c) => c.full.object) },
      half: { background: sum((c) => c.half.background), object: sum((c) => c.half.object) },
    };
  }
  return report;
}

/** The most common code of a grid (the background of a shapes picture); the lowest on ties. */
function mostCommon(codes: readonly number[]): number {
  const count = new Map<number, number>();
  let best = codes[0]!;
  for (const c of codes) {
    const n = (count.get(c) ?? 0) + 1;
    count.set(c, n);
    const b = count.get(best)!;
    if (n > b || (n === b && c < best)) best = c;
  }
  return best;
}

/**
 * What the model knows of a caption's picture, without sampling noise: one
 * greedy pass (one MaskGIT step at temperature 0, no guidance) over the
 * grid with every cell masked, and one with a seeded random half masked (the
 * other half given, through inpainting); each masked cell's code is compared
 * with the true one. The contexts are those the recipe trains.
 */
async function probeCells(
  api: DimooApi,
  prompt: string,
  grid: TokenGrid,
  seed: number,
  run: RunOptions,
): Promise<ProbeCells> {
  const truth = grid.codes;
  const bg = mostCommon(truth);
  const greedy = { timesteps: 1, temperature: 0, cfgScale: 0, seed };
  const tally = (
    got: readonly number[],
    masked: (k: number) => boolean,
  ): { background: [number, number]; object: [number, number] } => {
    const out = { background: [0, 0] as [number, number], object: [0, 0] as [number, number] };
    truth.forEach((c, k) => {
      if (!masked(k)) return;
      const t = c === bg ? out.background : out.object;
      t[1]++;
      if (got[k] === c) t[0]++;
    });
    return out;
  };
  const full = await api.generate(
    { prompt, width: grid.width, height: grid.height, ...greedy },
    run,
  );
  const prng = new Prng(seed, 0x9b0e);
  const half = new Uint8Array(truth.length).map(() => (prng.uniform() < 0.5 ? 1 : 0));
  if (!half.includes(1)) half[prng.randint(0, half.length)] = 1;
  const part = await api.inpaint(
    { prompt, image: { tokens: grid }, mask: { kind: 'cells', cells: half }, ...greedy },
    run,
  );
  return { full: tally(full.codes, () => true), half: tally(part.codes, (k) => half[k] === 1) };
}
