import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Prng } from '../src/samplers/prng.js';
import { openCheckpoint } from '../src/checkpoint/folder.js';
import { TextTokenizer } from '../src/models/tokenizer.js';
import { PROMPT_TEMPLATES } from '../src/pipelines/prompts.js';
import { detectScene } from '../src/shapes/checker.js';
import {
  EDIT_KINDS,
  QUESTION_TYPES,
  describeScene,
  normalizeAnswer,
  positionPhrase,
  relationOf,
  sampleCaption,
  sampleEdit,
  sampleQuestion,
} from '../src/shapes/language.js';
import {
  SHAPES_MODEL_SIZES,
  shapesVocabulary,
  writeShapesCheckpoint,
} from '../src/shapes/model.js';
import { renderScene } from '../src/shapes/render.js';
import {
  CELLS,
  cellCol,
  cellRow,
  sampleScene,
  sceneFacts,
  sceneKey,
  type SceneFacts,
} from '../src/shapes/world.js';

const NUM = ['zero', 'one', 'two', 'three'];

test('captions say only what the scene has', () => {
  const forms = new Set<string>();
  for (let i = 0; i < 400; i++) {
    const s = sceneFacts(sampleScene(new Prng(21, i)));
    const c = sampleCaption(new Prng(22, i), s);
    const r = c.request;
    assert.equal(r.count, s.objects.length, c.text);
    if (r.background) assert.equal(r.background, s.background);
    if (r.background) assert.ok(c.text.includes(r.background));
    // every requested object is matched by a distinct scene object
    const used = new Set<number>();
    for (const o of r.objects) {
      const j = s.objects.findIndex(
        (x, k) =>
          !used.has(k) &&
          x.shape === o.shape &&
          x.color === o.color &&
          (o.size === null || x.size === o.size) &&
          (o.cell === null || x.cell === o.cell),
      );
      assert.ok(j >= 0, `${c.text}: ${JSON.stringify(o)}`);
      used.add(j);
      assert.ok(c.text.includes(o.color) && c.text.includes(o.shape), c.text);
      if (o.cell !== null) assert.ok(c.text.includes(CELLS[o.cell]!), c.text);
    }
    if (r.relation) {
      forms.add('relation');
      const is = (x: SceneFacts['objects'][number], o: (typeof r.objects)[number]): boolean =>
        x.shape === o.shape && x.color === o.color && (o.size === null || x.size === o.size);
      const a = s.objects.find((x) => is(x, r.objects[0]!))!;
      const b = s.objects.find((x) => x !== a && is(x, r.objects[1]!))!;
      assert.ok(a && b, c.text);
      assert.ok(relationOf(a, b).includes(r.relation), c.text);
    } else if (new RegExp(`^(${NUM.join('|')}) `).test(c.text)) forms.add('count');
    else forms.add('list');
  }
  assert.deepEqual([...forms].sort(), ['count', 'list', 'relation']);
});

test('edits: the after-scene differs exactly as the prompt says', () => {
  const seen = new Set<string>();
  for (let i = 0; i < 300; i++) {
    const scene = sampleScene(new Prng(31, i));
    const e = sampleEdit(new Prng(32, i), scene);
    assert.ok(e, 'a random edit is always possible');
    seen.add(e.kind);
    const a = sceneFacts(scene);
    const b = sceneFacts(e.after);
    assert.notEqual(sceneKey(a), sceneKey(b), e.prompt);
    switch (e.kind) {
      case 'background':
        assert.equal(e.editType, 'edit_background');
        assert.ok(e.prompt.endsWith(b.background));
        assert.deepEqual(a.objects, b.objects);
        break;
      case 'add':
        assert.equal(e.editType, 'edit_add');
        assert.equal(b.objects.length, a.objects.length + 1);
        break;
      case 'remove':
        assert.equal(e.editType, 'edit_remove');
        assert.equal(b.objects.length, a.objects.length - 1);
        break;
      case 'recolor':
      case 'move': {
        assert.equal(e.editType, 'edit');
        assert.equal(b.objects.length, a.objects.length);
        const changed = a.objects.filter(
          (o) => !b.objects.some((x) => JSON.stringify(x) === JSON.stringify(o)),
        );
        assert.equal(changed.length, 1, e.prompt);
        break;
      }
    }
    // the edited scene renders and reads back exactly too
    assert.equal(sceneKey(detectScene(renderScene(e.after))), sceneKey(e.after));
  }
  assert.deepEqual([...seen].sort(), [...EDIT_KINDS].sort());
});

function countOf(s: SceneFacts, q: string): number {
  if (q === 'How many objects are there?') return s.objects.length;
  const shape = /How many (\w+)s are there\?/.exec(q)![1];
  return s.objects.filter((o) => o.shape === shape).length;
}

test('questions have the right short answers', () => {
  for (let i = 0; i < 300; i++) {
    const s = sceneFacts(sampleScene(new Prng(41, i)));
    for (const type of QUESTION_TYPES) {
      const q = sampleQuestion(new Prng(42, i), s, type);
      assert.equal(q.type, type);
      switch (type) {
        case 'background':
          assert.equal(q.answer, s.background);
          break;
        case 'count':
          assert.equal(q.answer, NUM[countOf(s, q.question)]);
          break;
        case 'shape': {
          const cell = CELLS.findIndex(
            (_, c) => q.question === `What shape is ${positionPhrase(c)}?`,
          );
          const o = s.objects.find((x) => x.cell === cell)!;
          assert.ok(o, q.question);
          assert.equal(
            q.answer,
            `${o.shape === 'circle' || o.shape === 'square' || o.shape === 'triangle' || o.shape === 'diamond' ? 'a' : 'an'} ${o.shape}`,
          );
          break;
        }
        case 'color': {
          const named = s.objects.filter((o) => q.question.includes(o.shape));
          assert.ok(
            named.some((o) => o.color === q.answer),
            q.question,
          );
          break;
        }
        case 'describe':
          assert.equal(q.answer, describeScene(s));
          for (const o of s.objects)
            assert.ok(q.answer.includes(`${o.size} ${o.color} ${o.shape}`));
          break;
      }
    }
  }
  // rows/cols helpers agree with the cell names
  assert.equal(CELLS[cellRow(2) * 3 + cellCol(2)], 'top right');
});

test('shapes checkpoint: loads through the ordinary loader; every world text encodes without [UNK] and decodes back', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-shapes-'));
  try {
    const r = await writeShapesCheckpoint(dir, {
      seed: 1,
      overrides: { dModel: 32, nHeads: 4, nLayers: 1, mlpHiddenSize: 64, ropeTheta: 10000 },
    });
    const ck = openCheckpoint(dir);
    assert.equal(ck.config.embeddingSize, 134548);
    assert.equal(ck.config.ropeTheta, 10000, 'shapes init --rope-theta reaches config.json');
    assert.equal(r.sizes.nLayers, 1);
    assert.ok(fs.existsSync(path.join(dir, 'vqvae', 'config.json')));
    const tok = TextTokenizer.fromFile(path.join(dir, 'tokenizer.json'));
    // specials at their real ids
    for (const [s, id] of [
      ['<|mdm_mask|>', 126336],
      ['<IMAGE>', 126349],
      ['<answer>', 126354],
      ['<end-of-line>', 126084],
      ['<uncondition>', 126351],
    ] as const)
      assert.equal(tok.tokenToId(s), id);
    assert.equal(tok.vocabSize(), 126356);
    const texts = new Set<string>(Object.values(PROMPT_TEMPLATES).slice(0, 3));
    for (let i = 0; i < 300; i++) {
      const scene = sampleScene(new Prng(51, i));
      const s = sceneFacts(scene);
      texts.add(sampleCaption(new Prng(52, i), s).text);
      texts.add(describeScene(s));
      const e = sampleEdit(new Prng(53, i), scene);
      if (e) texts.add(e.prompt);
      for (const t of QUESTION_TYPES) {
        const q = sampleQuestion(new Prng(54, i), s, t);
        texts.add(q.question);
        texts.add(q.answer);
      }
    }
    const vocab = new Set(shapesVocabulary());
    for (const t of texts) {
      const { ids, tokens } = await tok.encodeWithTokens(t, { addSpecialTokens: false });
      assert.ok(!ids.includes(0), `[UNK] in "${t}": ${tokens.join(' ')}`);
      for (const w of tokens) assert.ok(vocab.has(w));
      const back = await tok.decode(ids);
      assert.equal(normalizeAnswer(back), normalizeAnswer(t));
    }
    assert.ok(SHAPES_MODEL_SIZES.dModel === 256 && SHAPES_MODEL_SIZES.nLayers >= 6);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
