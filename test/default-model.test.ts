/**
 * The model used when none is named, and a checkpoint's own request defaults
 * (generation_config.json): resolution order, the error without any model,
 * the CLI and the library loading through it, defaults reaching requests,
 * and the shapes starting checkpoint (zero unused vocabulary rows, its
 * defaults, a short answer block in training layouts).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  DEFAULT_MODEL_ENV,
  findDefaultModel,
  isCompleteCheckpoint,
  resolveModel,
  shippedModelDir,
} from '../src/checkpoint/default-model.js';
import {
  parseGenerationDefaults,
  readGenerationDefaults,
  writeGenerationDefaults,
} from '../src/checkpoint/generation-config.js';
import { openCheckpoint } from '../src/checkpoint/folder.js';
import { readTensorFloat32 } from '../src/checkpoint/safetensors.js';
import { Dimoo } from '../src/pipelines/dimoo.js';
import { DEFAULTS } from '../src/pipelines/validate.js';
import {
  SHAPES_ANSWER_BLOCK,
  shapesVocabulary,
  writeShapesCheckpoint,
} from '../src/shapes/model.js';
import {
  layoutItem,
  layoutLength,
  type RecipeChoices,
  type TokenizedItem,
} from '../src/training/recipe.js';
import { resolveSpecialTokens } from '../src/checkpoint/special-tokens.js';
import { TextTokenizer } from '../src/models/tokenizer.js';
import { goldenCheckpointDir } from './helpers/golden.js';

let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-default-model-'));
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function cli(args: string[], env: Record<string, string>) {
  const r = spawnSync(process.execPath, ['bin/dimoo.js', ...args], {
    encoding: 'utf8',
    env: { ...process.env, DIMOO_DEBUG: '', ...env },
    timeout: 120_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A copy of the golden tiny checkpoint (its files are small) that a test may change. */
function goldenCopy(name: string): string {
  const dir = path.join(tmp, name);
  fs.cpSync(goldenCheckpointDir(), dir, { recursive: true });
  return dir;
}

test('resolution: a given model first, then $DIMOO_MODEL, then the shipped model, else a clear error', () => {
  const empty = path.join(tmp, 'no-shipped');
  fs.mkdirSync(empty, { recursive: true });
  assert.equal(
    resolveModel('given', { [DEFAULT_MODEL_ENV]: '/env/model' }, '--model', empty),
    'given',
  );
  assert.equal(
    resolveModel(undefined, { [DEFAULT_MODEL_ENV]: '/env/model' }, '--model', empty),
    '/env/model',
  );
  assert.deepEqual(findDefaultModel({ [DEFAULT_MODEL_ENV]: '/env/model' }, empty), {
    dir: '/env/model',
    source: 'env',
  });
  // An empty variable counts as unset.
  assert.equal(findDefaultModel({ [DEFAULT_MODEL_ENV]: ' ' }, empty), undefined);
  assert.throws(
    () => resolveModel(undefined, {}, '--model', empty),
    (e: Error) =>
      e.message.includes('--model') &&
      e.message.includes(DEFAULT_MODEL_ENV) &&
      e.message.includes(empty),
  );
  // A complete checkpoint in the shipped place is the default.
  const golden = goldenCheckpointDir();
  assert.equal(isCompleteCheckpoint(golden), true);
  assert.equal(isCompleteCheckpoint(empty), false);
  assert.deepEqual(findDefaultModel({}, golden), { dir: golden, source: 'shipped' });
  assert.equal(resolveModel(undefined, {}, '--model', golden), golden);
  // The shipped place is the package's models/shapes.
  assert.equal(shippedModelDir(), path.resolve('models', 'shapes'));
});

test('CLI commands without --model load $DIMOO_MODEL (and name it when it is wrong)', () => {
  const bad = cli(['generate', '--prompt', 'x', '--json'], {
    [DEFAULT_MODEL_ENV]: '/no/such/model-dir',
  });
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /\/no\/such\/model-dir/);
  const grid = path.join(tmp, 'grid.json');
  fs.writeFileSync(grid, JSON.stringify({ height: 32, width: 32, codes: [1, 2, 3, 4] }));
  const ok = cli(
    [
      'understand',
      '--prompt',
      'what is it?',
      '--image-tokens',
      grid,
      '--gen-length',
      '8',
      '--json',
    ],
    {
      [DEFAULT_MODEL_ENV]: goldenCheckpointDir(),
    },
  );
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(JSON.parse(ok.stdout).ids.length, 8);
});

test('generation_config.json: the dimoo section is parsed, checked, merged; absent means the original defaults', () => {
  assert.deepEqual(parseGenerationDefaults({ bos_token_id: 1 }, 'g.json'), {});
  assert.deepEqual(
    parseGenerationDefaults(
      { dimoo: { text_to_image: { width: 128, height: 64 }, understanding: { gen_length: 32 } } },
      'g.json',
    ),
    { textToImage: { width: 128, height: 64 }, understanding: { genLength: 32 } },
  );
  for (const [bad, word] of [
    [{ dimoo: { painting: {} } }, 'painting'],
    [{ dimoo: { understanding: { length: 3 } } }, 'length'],
    [{ dimoo: { understanding: { gen_length: 0 } } }, 'gen_length'],
    [{ dimoo: { text_to_image: { width: '128' } } }, 'width'],
    [{ dimoo: [] }, 'dimoo'],
  ] as const) {
    assert.throws(
      () => parseGenerationDefaults(bad, 'g.json'),
      (e: Error) => e.message.includes('g.json') && e.message.includes(word),
    );
  }
  const file = path.join(tmp, 'generation_config.json');
  fs.writeFileSync(
    file,
    JSON.stringify({ bos_token_id: 7, dimoo: { understanding: { gen_length: 16, steps: 16 } } }),
  );
  writeGenerationDefaults(file, {
    understanding: { genLength: 32 },
    textToImage: { width: 128, height: 128 },
  });
  const json = JSON.parse(fs.readFileSync(file, 'utf8'));
  assert.equal(json.bos_token_id, 7, 'other keys are kept');
  assert.deepEqual(readGenerationDefaults(file), {
    understanding: { genLength: 32, steps: 16 },
    textToImage: { width: 128, height: 128 },
  });
  assert.deepEqual(readGenerationDefaults(path.join(tmp, 'absent.json')), {});
});

test("the library applies a checkpoint's defaults where a request gives none; the golden checkpoint keeps the original's", async () => {
  const golden = await Dimoo.load(goldenCheckpointDir(), { threads: 1 });
  try {
    assert.deepEqual(golden.info().defaults.mmu, {
      genLength: DEFAULTS.mmu.genLength,
      blockLength: DEFAULTS.mmu.blockLength,
      steps: DEFAULTS.mmu.steps,
      cropBudget: DEFAULTS.mmu.cropBudget,
    });
    assert.deepEqual(golden.info().defaults.t2i, {
      width: DEFAULTS.t2i.width,
      height: DEFAULTS.t2i.height,
    });
  } finally {
    await golden.dispose();
  }
  const dir = goldenCopy('with-defaults');
  writeGenerationDefaults(path.join(dir, 'generation_config.json'), {
    textToImage: { width: 64, height: 32 },
    understanding: { genLength: 12, blockLength: 6, steps: 4 },
  });
  const d = await Dimoo.load(dir, { threads: 1 });
  try {
    assert.deepEqual(d.info().defaults.t2i, { width: 64, height: 32 });
    const tokens = { height: 32, width: 32, codes: [5, 6, 7, 8] };
    const a = await d.understand({ question: 'what?', image: { tokens }, earlyStop: false });
    assert.equal(a.ids.length, 12);
    assert.equal(a.stepMs.length, 4);
    // An explicit value still wins.
    const b = await d.understand({
      question: 'what?',
      image: { tokens },
      genLength: 8,
      blockLength: 8,
      steps: 2,
      earlyStop: false,
    });
    assert.equal(b.ids.length, 8);
    const g = await d.generate({ prompt: 'x', timesteps: 1, seed: 0 });
    assert.deepEqual([g.width, g.height], [64, 32]);
  } finally {
    await d.dispose();
  }
});

test('Dimoo.load() without a folder opens $DIMOO_MODEL', async () => {
  const saved = process.env[DEFAULT_MODEL_ENV];
  process.env[DEFAULT_MODEL_ENV] = goldenCheckpointDir();
  try {
    const d = await Dimoo.load(undefined, { threads: 1 });
    assert.equal(path.resolve(d.info().dir), path.resolve(goldenCheckpointDir()));
    await d.dispose();
  } finally {
    if (saved === undefined) delete process.env[DEFAULT_MODEL_ENV];
    else process.env[DEFAULT_MODEL_ENV] = saved;
  }
});

test('shapes init: unused vocabulary rows are zero, used ones are not; its defaults are the canvas and the answer block', async () => {
  const dir = path.join(tmp, 'shapes');
  await writeShapesCheckpoint(dir, {
    seed: 1,
    overrides: { dModel: 16, nHeads: 2, nLayers: 1, mlpHiddenSize: 32 },
  });
  const ck = openCheckpoint(dir);
  const words = shapesVocabulary().length;
  for (const name of ['model.transformer.wte.weight', 'model.transformer.ff_out.weight']) {
    const w = readTensorFloat32(ck.weights.get(name)!);
    const d = 16;
    const rowZero = (r: number): boolean => w.subarray(r * d, (r + 1) * d).every((v) => v === 0);
    // [UNK] and the words, the specials, the image codes (the random VQ has 8192).
    for (const r of [0, words, 126080, 126336, 126355, 126356, 126356 + 8191])
      assert.equal(rowZero(r), false, `${name} row ${r}`);
    for (const r of [words + 1, 5000, 126079]) assert.equal(rowZero(r), true, `${name} row ${r}`);
    const zeroRows = Array.from({ length: w.length / d }, (_, r) => r).filter(rowZero).length;
    assert.equal(zeroRows, 126080 - (words + 1));
  }
  const g = readGenerationDefaults(path.join(dir, 'generation_config.json'));
  assert.deepEqual(g.textToImage, { width: 128, height: 128 });
  assert.equal(g.understanding?.genLength, SHAPES_ANSWER_BLOCK);
  assert.equal(g.understanding?.blockLength, SHAPES_ANSWER_BLOCK);
});

test('training layouts: --answer-block sets the understanding answer + padding length', () => {
  const tok = TextTokenizer.fromFile(path.join(goldenCheckpointDir(), 'tokenizer.json'));
  const ck = openCheckpoint(goldenCheckpointDir());
  const t = resolveSpecialTokens(tok, ck.config, { codebookSize: 8192 });
  const item: TokenizedItem = {
    kind: 'mmu',
    instruction: [1, 2, 3],
    userImage: { gridH: 2, gridW: 2, codes: [1, 2, 3, 4] },
    answer: [7, 8, t.eoa],
  };
  const none: RecipeChoices = { maskPositions: (n) => [n - 1], dropCondition: () => false };
  const image = 2 * 3 + 2;
  for (const block of [8, 48, 1024]) {
    const l = layoutItem(item, none, t, { answerBlock: block });
    assert.equal(l.inputIds.length, 3 + image + 1 + block);
    assert.equal(layoutLength(item, { answerBlock: block }), l.inputIds.length);
  }
  // The original's 1024 is the default.
  assert.equal(layoutItem(item, none, t).inputIds.length, 3 + image + 1 + 1024);
});

test('dimoo train --answer-block N saves checkpoints that answer with N tokens by default; resuming with another N is refused', async () => {
  const data = path.join(tmp, 'mmu.jsonl');
  const rec = {
    system_prompt: 'You are a helpful assistant.',
    user_prompt: 'what color is it?',
    user_image: { height: 32, width: 32, codes: [1, 2, 3, 4] },
    answer_image: '',
    answer_text: 'red',
  };
  fs.writeFileSync(
    data,
    `${JSON.stringify(rec)}\n${JSON.stringify({ ...rec, answer_text: 'blue' })}\n`,
  );
  const out = path.join(tmp, 'run-answer-block');
  const base = [
    'train',
    '--model',
    goldenCheckpointDir(),
    '--data',
    data,
    '--out',
    out,
    '--threads',
    '1',
    '--no-progress',
  ];
  const r = cli([...base, '--steps', '1', '--batch-size', '2', '--answer-block', '16'], {});
  assert.equal(r.code, 0, r.stderr);
  const ck = path.join(out, 'checkpoint-1');
  assert.deepEqual(readGenerationDefaults(path.join(ck, 'generation_config.json')).understanding, {
    genLength: 16,
    blockLength: 16,
    steps: 16,
  });
  const again = cli([...base, '--steps', '2', '--resume', out, '--answer-block', '32'], {});
  assert.notEqual(again.code, 0);
  assert.match(again.stderr, /answerBlock = 16/);
});
