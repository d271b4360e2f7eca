/**
 * The shapes data set generator and `dimoo eval`: records in the original's
 * training format that agree with their pictures, the held-out split, token
 * grids through a checkpoint's VQ-VAE, the scoring rules, the evaluation
 * pipeline with a perfect (oracle) model and end to end on a random checkpoint.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runDimoo } from './helpers/cli.js';
import { readImage } from '../src/image/io.js';
import { checkTokenGrid } from '../src/pipelines/token-grid.js';
import { TextTokenizer } from '../src/models/tokenizer.js';
import type { DimooApi, ImageResult, RgbImage, UnderstandResult } from '../src/pipelines/types.js';
import { Prng } from '../src/samplers/prng.js';
import { detectScene } from '../src/shapes/checker.js';
import { generateDataset, type ShapesRecord } from '../src/shapes/dataset.js';
import {
  DEFAULT_EVAL_TASKS,
  EVAL_TASKS,
  cellsUnder,
  planItems,
  runShapesEval,
  type EvalReport,
} from '../src/shapes/eval.js';
import { formatEvalReport } from '../src/cli/commands/shapes.js';
import { bindingScore } from '../src/shapes/binding.js';
import { sampleCaption, sampleEdit, sampleQuestion } from '../src/shapes/language.js';
import { writeShapesCheckpoint } from '../src/shapes/model.js';
import { renderScene } from '../src/shapes/render.js';
import { scoreAnswer, scoreChange, scoreT2i } from '../src/shapes/score.js';
import { isHeldOut, sampleScene, sceneFacts, sceneKey } from '../src/shapes/world.js';
import { resolveTaskDefaults } from '../src/pipelines/validate.js';

let tmp: string;
let ckpt: string;
before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-shapes-eval-'));
  ckpt = path.join(tmp, 'ckpt');
  await writeShapesCheckpoint(ckpt, {
    seed: 3,
    overrides: { dModel: 32, nHeads: 4, nLayers: 1, mlpHiddenSize: 64 },
  });
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** What a test double of the library says about itself: the tiny checkpoint, 16x VQ, library defaults. */
function fakeInfo(name: string): ReturnType<DimooApi['info']> {
  return {
    dir: ckpt,
    name,
    hasVq: true,
    vqScale: 16,
    codebookSize: 8192,
    device: 'cpu',
    defaults: resolveTaskDefaults({}),
  };
}

const cli = (args: string[]) => runDimoo(args);

function readJsonl(file: string): ShapesRecord[] {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as ShapesRecord);
}

test('data set: original item format, pictures agree with records, held-out split by scene, deterministic', async () => {
  const out = path.join(tmp, 'ds');
  const s = await generateDataset({ out, count: 60, seed: 9, holdout: 0.2 });
  assert.equal(s.scenes, 60);
  const train = readJsonl(path.join(out, 'train.jsonl'));
  const held = readJsonl(path.join(out, 'heldout.jsonl'));
  assert.equal(train.length + held.length, 60 * 4);
  assert.ok(held.length > 0 && train.length > held.length);
  const tasks = new Set<string>();
  for (const [split, recs] of [
    ['train', train],
    ['heldout', held],
  ] as const) {
    for (const r of recs) {
      tasks.add(r.task);
      for (const k of [
        'system_prompt',
        'user_prompt',
        'user_image',
        'answer_image',
        'answer_text',
      ] as const)
        assert.equal(typeof r[k], 'string', `${r.id}.${k}`);
      const shown: string[] = [];
      if (r.task === 't2i') {
        assert.equal(r.user_image, '');
        assert.equal(r.answer_text, '');
        assert.equal(r.system_prompt, 'Generate an image according to the text prompt.');
        const det = detectScene(await readImage(path.join(out, r.answer_image)));
        assert.equal(sceneKey(det), sceneKey(r.shapes.scene));
        assert.ok(scoreT2i(r.shapes.request!, det).pass, r.user_prompt);
        shown.push(sceneKey(det));
      } else if (r.task === 'edit') {
        assert.ok(['edit', 'edit_add', 'edit_remove', 'edit_background'].includes(r.edit_type!));
        assert.match(r.system_prompt, /editing instruction/);
        const before = detectScene(await readImage(path.join(out, r.user_image)));
        const afterPic = detectScene(await readImage(path.join(out, r.answer_image)));
        assert.equal(sceneKey(before), sceneKey(r.shapes.scene));
        assert.equal(sceneKey(afterPic), sceneKey(r.shapes.after!));
        shown.push(sceneKey(before), sceneKey(afterPic));
      } else {
        assert.equal(r.answer_image, '');
        assert.ok(r.answer_text.length > 0);
        const det = detectScene(await readImage(path.join(out, r.user_image)));
        assert.equal(sceneKey(det), sceneKey(r.shapes.scene));
        shown.push(sceneKey(det));
      }
      const anyHeld = [r.shapes.scene, ...(r.shapes.after ? [r.shapes.after] : [])].some((x) =>
        isHeldOut(x, 0.2),
      );
      assert.equal(anyHeld, split === 'heldout', `${r.id} in ${split}`);
    }
  }
  assert.deepEqual([...tasks].sort(), ['edit', 'mmu', 't2i']);
  const manifest = JSON.parse(fs.readFileSync(path.join(out, 'dataset.json'), 'utf8')) as {
    records: unknown;
    images: string;
  };
  assert.deepEqual(manifest.records, s.records);
  assert.equal(manifest.images, 'png');
  // same seed, same data
  const again = path.join(tmp, 'ds-again');
  await generateDataset({ out: again, count: 60, seed: 9, holdout: 0.2 });
  assert.equal(
    fs.readFileSync(path.join(again, 'train.jsonl'), 'utf8'),
    fs.readFileSync(path.join(out, 'train.jsonl'), 'utf8'),
  );
  assert.deepEqual(
    fs.readFileSync(path.join(again, 'images', 's000007.png')),
    fs.readFileSync(path.join(out, 'images', 's000007.png')),
  );
  // a non-empty folder is refused, and nothing is left behind
  await assert.rejects(generateDataset({ out, count: 2, seed: 1 }), /not an empty folder/);
  assert.deepEqual(
    fs.readdirSync(tmp).filter((f) => f.includes('.tmp-')),
    [],
  );
});

test('dimoo shapes generate --model writes token grids through the VQ-VAE', () => {
  const out = path.join(tmp, 'ds-tok');
  const r = cli([
    'shapes',
    'generate',
    '--out',
    out,
    '--count',
    '4',
    '--seed',
    '2',
    '--model',
    ckpt,
    '--threads',
    '1',
    '--json',
  ]);
  assert.equal(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout) as { encoded: boolean; scenes: number };
  assert.equal(summary.encoded, true);
  const recs = [
    ...readJsonl(path.join(out, 'train.jsonl')),
    ...readJsonl(path.join(out, 'heldout.jsonl')),
  ];
  assert.equal(recs.length, 16);
  for (const rec of recs) {
    for (const f of [rec.user_image, rec.answer_image].filter((x) => x !== '')) {
      assert.match(f, /^tokens\/.*\.json$/);
      const g = checkTokenGrid(JSON.parse(fs.readFileSync(path.join(out, f), 'utf8')), f);
      assert.equal(g.width, 128);
      assert.equal(g.codes.length, 64);
    }
  }
  const bad = cli(['shapes', 'generate', '--out', path.join(tmp, 'x'), '--holdout', '2']);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /--holdout/);
});

test('scoring: the world satisfies its own prompts; changes and answers are told apart', () => {
  for (let i = 0; i < 150; i++) {
    const scene = sampleScene(new Prng(61, i));
    const facts = sceneFacts(scene);
    const det = detectScene(renderScene(scene));
    const c = sampleCaption(new Prng(62, i), facts);
    assert.ok(scoreT2i(c.request, det).pass, c.text);
    const e = sampleEdit(new Prng(63, i), scene)!;
    const after = sceneFacts(e.after);
    assert.deepEqual(scoreChange(facts, after, detectScene(renderScene(e.after))), {
      changed: true,
      rest: true,
      pass: true,
    });
    // returning the input unchanged: the change did not happen
    assert.equal(scoreChange(facts, after, det).changed, false, e.prompt);
    const q = sampleQuestion(new Prng(64, i), facts);
    assert.ok(scoreAnswer(q.answer, ` ${q.answer.toUpperCase()} `));
    assert.ok(!scoreAnswer(q.answer, `${q.answer} extra`));
  }
  // a picture of another scene fails the caption on what differs
  const a = sampleScene(new Prng(70, 1));
  const c = sampleCaption(new Prng(71, 1), sceneFacts(a));
  const other = {
    ...sceneFacts(a),
    background: a.background === 'white' ? ('black' as const) : ('white' as const),
  };
  const s = scoreT2i({ ...c.request, background: a.background }, other);
  assert.equal(s.pass, false);
  assert.equal(s.attributes.background, false);
});

test('eval pipeline: a perfect model scores 100% on every task, a copying one fails the changes', async () => {
  const tok = TextTokenizer.fromFile(path.join(ckpt, 'tokenizer.json'));
  const limit = 4;
  const plans = DEFAULT_EVAL_TASKS.flatMap((t) => planItems(t, limit, 5, 0.1));
  for (const p of plans) assert.ok(isHeldOut(p.scene, 0.1));
  const oracle = (copy: boolean, tasks: readonly string[] = DEFAULT_EVAL_TASKS): DimooApi => {
    // The evaluation runs its items in plan order; the oracle walks the same list.
    const mine = plans.filter((p) => tasks.includes(p.task));
    let k = 0;
    const pic = (s: Parameters<typeof renderScene>[0]): RgbImage => {
      const img = renderScene(s);
      return { data: img.data, width: img.width, height: img.height };
    };
    const image = (): ImageResult => {
      const p = mine[k++]!;
      return {
        width: 128,
        height: 128,
        gridH: 8,
        gridW: 8,
        codes: [],
        promptIds: [],
        codeStart: 0,
        stepMs: [],
        image: pic(copy && p.after ? p.scene : (p.after ?? p.scene)),
      };
    };
    return {
      generate: async () => image(),
      edit: async () => image(),
      inpaint: async () => image(),
      retouch: async () => image(),
      outpaint: async () => image(),
      understand: async (q): Promise<UnderstandResult> => {
        const p = mine[k++]!;
        assert.equal(q.question, p.question);
        const ids = [
          ...(await tok.encode(p.answer!, { addSpecialTokens: false })),
          tok.tokenToId('</answer>')!,
          1,
          2,
        ];
        return { text: '', ids, promptIds: [], codeStart: 0, stepMs: [] };
      },
      encodeImage: async () => ({ width: 128, height: 128, codes: new Array<number>(64).fill(0) }),
      decodeTokens: async () => pic(plans[0]!.scene),
      info: () => fakeInfo('oracle'),
      dispose: async () => {},
    };
  };
  const rep = await runShapesEval(oracle(false), { limit, seed: 5 });
  assert.equal(rep.items.length, limit * DEFAULT_EVAL_TASKS.length);
  assert.ok(!DEFAULT_EVAL_TASKS.includes('probe') && EVAL_TASKS.includes('probe'));
  for (const it of rep.items)
    assert.ok(it.pass, `${it.task} ${it.prompt}: expected ${it.expected}, got ${it.got}`);
  assert.equal(rep.t2i!.all.rate, 1);
  assert.equal(rep.mmu!.all.rate, 1);
  assert.equal(rep.edit!.all.rate, 1);
  const copy = await runShapesEval(oracle(true, ['edit', 'inpaint', 'retouch']), {
    limit,
    seed: 5,
    tasks: ['edit', 'inpaint', 'retouch'],
  });
  assert.equal(copy.edit!.changed.rate, 0);
  assert.equal(copy.retouch!.changed.rate, 0);
  assert.equal(copy.inpaint!.changed.rate, 0);
  assert.equal(copy.retouch!.rest.rate, 0, 'an extra object is missing, so the count is off');
  // cfgImg reaches every edit when given, and is left to the library otherwise.
  for (const cfgImg of [0, undefined]) {
    const seen: unknown[] = [];
    const base = oracle(false, ['edit']);
    const spy: DimooApi = {
      ...base,
      edit: async (p, r) => {
        seen.push(p.cfgImg);
        return base.edit(p, r);
      },
    };
    await runShapesEval(spy, {
      limit,
      seed: 5,
      tasks: ['edit'],
      ...(cfgImg !== undefined && { cfgImg }),
    });
    assert.deepEqual(seen, new Array(limit).fill(cfgImg));
  }
});

test('eval probe: one greedy unguided pass, all cells masked and a random half masked, cells counted by kind', async () => {
  const limit = 3;
  // A grid of background code 5 with object codes 7..10 in a block.
  const truth = new Array<number>(64).fill(5);
  for (const k of [9, 10, 17, 18]) truth[k] = 6 + (k % 4);
  const fake = (answer: 'truth' | 'background') => {
    const seen: Array<Record<string, unknown>> = [];
    const result = (codes: number[]): ImageResult => ({
      width: 128,
      height: 128,
      gridH: 8,
      gridW: 8,
      codes,
      promptIds: [],
      codeStart: 0,
      stepMs: [],
    });
    const api: DimooApi = {
      generate: async (p) => {
        seen.push({ ...p, call: 'generate' });
        return result(answer === 'truth' ? truth : truth.map(() => 5));
      },
      inpaint: async (p) => {
        seen.push({ ...p, call: 'inpaint' });
        const m = p.mask as { kind: 'cells'; cells: Uint8Array };
        assert.equal(m.kind, 'cells');
        assert.deepEqual((p.image as { tokens: { codes: number[] } }).tokens.codes, truth);
        return result(truth.map((c, k) => (m.cells[k] && answer !== 'truth' ? 5 : c)));
      },
      edit: async () => assert.fail('no edit'),
      retouch: async () => assert.fail('no retouch'),
      outpaint: async () => assert.fail('no outpaint'),
      understand: async () => assert.fail('no understand'),
      encodeImage: async () => ({ width: 128, height: 128, codes: truth }),
      decodeTokens: async () => assert.fail('no decode'),
      info: () => fakeInfo('fake'),
      dispose: async () => {},
    };
    return { api, seen };
  };
  const good = fake('truth');
  const rep = await runShapesEval(good.api, { limit, seed: 2, tasks: ['probe'] });
  assert.equal(rep.probe!.all.rate, 1);
  assert.equal(rep.probe!.full.object.n, 4 * limit);
  assert.equal(rep.probe!.full.background.n, 60 * limit);
  assert.equal(rep.probe!.half.object.rate, 1);
  for (const p of good.seen) {
    assert.equal(p.timesteps, 1);
    assert.equal(p.temperature, 0);
    assert.equal(p.cfgScale, 0);
  }
  assert.deepEqual(
    good.seen.map((p) => p.call),
    new Array(limit).fill(['generate', 'inpaint']).flat(),
  );
  const bg = await runShapesEval(fake('background').api, { limit, seed: 2, tasks: ['probe'] });
  assert.equal(bg.probe!.all.rate, 0);
  assert.equal(bg.probe!.full.object.pass, 0);
  assert.equal(bg.probe!.full.background.rate, 1);
  assert.equal(bg.probe!.half.object.pass, 0);
  // About half the cells are masked in the second pass, the same half for the same seed.
  const n = bg.probe!.half.background.n + bg.probe!.half.object.n;
  assert.ok(n > 64 * limit * 0.3 && n < 64 * limit * 0.7, `${n} cells masked`);
  assert.deepEqual(
    (await runShapesEval(fake('background').api, { limit, seed: 2, tasks: ['probe'] })).probe,
    bg.probe,
  );
  assert.match(formatEvalReport(bg), /half masked: object cells\s+0\.0%\s+0\/\d+/);
});

test('dimoo eval on a random checkpoint: a well-formed report and grid', async () => {
  const grid = path.join(tmp, 'grid.png');
  const r = cli([
    'eval',
    '--model',
    ckpt,
    '--limit',
    '2',
    '--timesteps',
    '2',
    '--gen-length',
    '16',
    '--threads',
    '1',
    '--grid',
    grid,
    '--json',
  ]);
  assert.equal(r.code, 0, r.stderr);
  const rep = JSON.parse(r.stdout) as {
    items: Array<{ task: string; pass: boolean; prompt: string; got: string }>;
    t2i: { all: { n: number }; byAttribute: Record<string, { n: number; rate: number }> };
    edit: { all: { n: number } };
    inpaint: { all: { n: number } };
    retouch: { all: { n: number } };
    mmu: { all: { n: number }; byType: Record<string, unknown> };
    grid: string;
  };
  assert.equal(rep.items.length, 10);
  for (const t of ['t2i', 'edit', 'inpaint', 'retouch', 'mmu'] as const)
    assert.equal(rep[t].all.n, 2);
  for (const a of Object.values(rep.t2i.byAttribute))
    assert.ok(a.n > 0 && a.rate >= 0 && a.rate <= 1);
  assert.deepEqual(Object.keys(rep.mmu.byType), ['color', 'shape']);
  assert.equal(rep.grid, grid);
  // grid: one row per task, first tile framed by the first item's verdict
  const img = await readImage(grid);
  assert.equal(img.height, 6 + 5 * (136 + 6));
  const px = [...img.data.subarray((8 * img.width + 8) * 3, (8 * img.width + 8) * 3 + 3)];
  assert.deepEqual(px, rep.items[0]!.pass ? [0, 190, 60] : [225, 20, 20]);
  // the table form of the same report
  const table = formatEvalReport(rep as unknown as EvalReport);
  assert.match(table, /understanding\s+exact answer\s+\d+\.\d%\s+\d\/2/);
  assert.match(table, /text-to-image\s+all requested attributes\s+\d+\.\d%\s+\d\/2/);
  const bad = cli(['eval', '--model', ckpt, '--tasks', 't2i,nope']);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /unknown task "nope"/);
});

test('painting items: the masked token cells cover every changed pixel, and the object stays inside them', () => {
  for (const task of ['inpaint', 'retouch'] as const) {
    for (const p of planItems(task, 12, 8, 0.1)) {
      const before = renderScene(p.scene);
      const afterPic = renderScene(p.after!);
      for (const scale of [16, 8]) {
        const cells = cellsUnder(p.region!, 128, 128, scale);
        const gw = 128 / scale;
        let changed = 0;
        for (let y = 0; y < 128; y++)
          for (let x = 0; x < 128; x++) {
            const i = (y * 128 + x) * 3;
            if (
              before.data[i] === afterPic.data[i] &&
              before.data[i + 1] === afterPic.data[i + 1] &&
              before.data[i + 2] === afterPic.data[i + 2]
            )
              continue;
            changed++;
            assert.equal(
              cells[Math.floor(y / scale) * gw + Math.floor(x / scale)],
              1,
              `${task} ${p.prompt}: pixel ${x},${y} outside the mask`,
            );
          }
        assert.ok(changed > 100, `${task}: the change is visible`);
        // no more than the box's cells: at most ceil(extent/scale)+1 per side
        const side = Math.ceil(p.region!.extent / scale) + 1;
        assert.ok(cells.reduce((a, b) => a + b, 0) <= side * side);
      }
    }
  }
});

test('binding score: identical maps score 0, maps on their objects score high', () => {
  const masks = [0, 4, 8].map((cell) => {
    const m = new Uint8Array(64);
    const r0 = Math.floor(cell / 3) * 3;
    const c0 = (cell % 3) * 3;
    for (let r = r0; r < r0 + 2; r++) for (let c = c0; c < c0 + 2; c++) m[r * 8 + c] = 1;
    return m;
  });
  const prior = Array.from({ length: 64 }, (_, k) => (k % 7) / 10);
  const same = bindingScore([prior, prior, prior], masks);
  assert.ok(Math.abs(same.binding) < 1e-12, 'a map the caption does not move');
  assert.ok(same.insideMinusOutside !== 0, 'the raw contrast keeps the prior');
  const bound = bindingScore(
    masks.map((m) => Array.from(m, (x) => x)),
    masks,
  );
  assert.ok(bound.binding > 0.6, `binding ${bound.binding}`);
  assert.ok(Math.abs(bound.insideMinusOutside - 1) < 1e-12);
  assert.throws(() => bindingScore([prior], masks), /1 maps for 3 masks/);
});

test('dimoo shapes binding on a random checkpoint: a report per size, maps in [0, 1]', () => {
  const r = cli(['shapes', 'binding', '--model', ckpt, '--threads', '1', '--maps', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const reps = JSON.parse(r.stdout) as Array<{
    size: string;
    binding: number;
    places: Array<{ place: string; caption: string; map: number[] }>;
  }>;
  assert.deepEqual(
    reps.map((x) => x.size),
    ['small', 'large'],
  );
  for (const rep of reps) {
    assert.ok(Number.isFinite(rep.binding) && Math.abs(rep.binding) < 0.5);
    assert.equal(rep.places.length, 9);
    assert.match(rep.places[0]!.caption, /top left/);
    for (const p of rep.places) {
      assert.equal(p.map.length, 64);
      for (const x of p.map) assert.ok(x >= 0 && x <= 1);
    }
  }
  const bad = cli(['shapes', 'binding', '--model', ckpt, '--shape', 'hexagon']);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /--shape/);
});
