import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TextTokenizer } from '../src/models/tokenizer.js';
import { loadLladaConfig } from '../src/checkpoint/config.js';
import { loadVqConfig } from '../src/checkpoint/vq-config.js';
import { resolveSpecialTokens } from '../src/checkpoint/special-tokens.js';
import { DimooError } from '../src/errors.js';
import {
  collate,
  loadTrainingData,
  type DataContext,
  type PixelGrid,
} from '../src/training/data.js';
import { learningRate } from '../src/training/schedule.js';
import {
  LENGTH_GROUP_BATCHES,
  TRAIN_DEFAULTS,
  TrainLoop,
  groupByLength,
  type AdamWSettings,
  type StepEngine,
} from '../src/training/loop.js';
import type { Batch } from '../src/training/data.js';
import { Prng } from '../src/samplers/prng.js';
import { goldenCheckpointDir, readGoldenJson } from './helpers/golden.js';

const dir = goldenCheckpointDir();
const tok = TextTokenizer.fromFile(path.join(dir, 'tokenizer.json'));
const config = loadLladaConfig(path.join(dir, 'config.json'));
const vq = loadVqConfig(path.join(dir, 'vqvae'));
const T = resolveSpecialTokens(tok, config, { codebookSize: vq.numVqEmbeddings });

function ctx(maxLen = 4096): DataContext {
  return {
    tokens: T,
    vocabSize: config.embeddingSize,
    vqScale: vq.scaleFactor,
    tokenizer: tok,
    maxLen,
    resolveImage: async (value: unknown, where: string, base: string): Promise<PixelGrid> => {
      if (typeof value === 'string') {
        const f = path.resolve(base, value);
        if (!fs.existsSync(f)) throw new DimooError(`${where}: ${f}: no such file`, 'E_TOKENS');
        return JSON.parse(fs.readFileSync(f, 'utf8')) as PixelGrid;
      }
      if (typeof value === 'object' && value !== null) return value as PixelGrid;
      throw new DimooError(`${where}: not a grid`, 'E_TOKENS');
    },
  };
}

interface GoldenTrain {
  items: Array<{
    system_prompt: string;
    user_prompt: string;
    answer_text: string;
    grids: { user_image?: PixelGrid; answer_image?: PixelGrid };
  }>;
  processed: Array<{ input_ids: number[]; labels: number[] }>;
}
const golden = readGoldenJson<GoldenTrain>('train_t2i_i2i_padded.json');

function tmpdir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-train-'));
}

function writeJsonl(file: string, lines: unknown[]): void {
  fs.writeFileSync(
    file,
    lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n',
  );
}

test('data: processed and item records (inline grids and grid files) load in file order', async () => {
  const d = tmpdir();
  fs.writeFileSync(path.join(d, 'ans.json'), JSON.stringify(golden.items[0]!.grids.answer_image));
  const it = golden.items;
  const file = path.join(d, 'data.jsonl');
  writeJsonl(file, [
    golden.processed[0],
    {
      system_prompt: it[0]!.system_prompt,
      user_prompt: it[0]!.user_prompt,
      answer_image: 'ans.json',
    },
    '',
    {
      system_prompt: it[2]!.system_prompt,
      user_prompt: it[2]!.user_prompt,
      user_image: it[2]!.grids.user_image,
      answer_image: '',
      answer_text: it[2]!.answer_text,
    },
  ]);
  const { records, skipped } = await loadTrainingData(file, ctx());
  assert.equal(skipped.length, 0);
  assert.deepEqual(
    records.map((r) => [r.kind, r.where]),
    [
      ['processed', `${file}:1`],
      ['item', `${file}:2`],
      ['item', `${file}:4`],
    ],
  );
  assert.equal(records[1]!.kind === 'item' && records[1]!.item.kind, 't2i');
  assert.equal(records[2]!.kind === 'item' && records[2]!.item.kind, 'mmu');
});

test('data: a bad line names file and line and stops; --skip-bad counts it', async () => {
  const d = tmpdir();
  const p = golden.processed[0]!;
  const cases: Array<[unknown, RegExp]> = [
    ['{not json', /not valid JSON/],
    [[1, 2], /expected a JSON object/],
    [
      { input_ids: [...p.input_ids.slice(0, -1), 999999], labels: p.labels },
      /input_ids\[42\] = 999999 is outside the vocabulary \[0, 134548\)/,
    ],
    [
      { input_ids: p.input_ids, labels: p.labels.slice(1) },
      /"labels" has 42 entries but "input_ids" has 43/,
    ],
    [{ input_ids: p.input_ids, labels: p.labels.map(() => -100) }, /no position is learned/],
    [
      { input_ids: p.input_ids, labels: p.labels.map((l, i) => (i === 0 ? 5 : l)) },
      /labels\[0\] = 5 but input_ids\[0\] = 126080 is not the mask token 126336/,
    ],
    [{ system_prompt: 's', user_prompt: 'u' }, /neither "user_image" nor "answer_image"/],
    [{ system_prompt: 's', user_prompt: 'u', answer_image: 'missing.json' }, /answer_image/],
    [
      { system_prompt: 's', user_prompt: 'u', answer_image: { height: 40, width: 48, codes: [] } },
      /not a multiple of the VQ scale 16/,
    ],
    [{ hello: 1 }, /expected "input_ids" \+ "labels" or the item fields/],
  ];
  for (const [i, [line, re]] of cases.entries()) {
    const file = path.join(d, `bad${i}.jsonl`);
    writeJsonl(file, [p, line]);
    await assert.rejects(loadTrainingData(file, ctx()), (e: Error) => {
      assert.ok(e instanceof DimooError, String(e));
      assert.ok(e.message.startsWith(`${file}:2: `), e.message);
      assert.match(e.message, re);
      return true;
    });
    const { records, skipped } = await loadTrainingData(file, ctx(), { skipBad: true });
    assert.equal(records.length, 1);
    assert.equal(skipped.length, 1);
    assert.equal(skipped[0]!.where, `${file}:2`);
  }
  // Over-long sequences, processed and item.
  const file = path.join(d, 'long.jsonl');
  writeJsonl(file, [p]);
  await assert.rejects(
    loadTrainingData(file, ctx(42)),
    /:1: sequence of 43 tokens is longer than --max-len 42/,
  );
  writeJsonl(file, [
    { system_prompt: 's', user_prompt: 'q', user_image: golden.items[2]!.grids.user_image },
  ]);
  await assert.rejects(
    loadTrainingData(file, ctx(1000)),
    /:1: its layout has \d+ tokens, longer than --max-len 1000/,
  );
  // Nothing usable at all.
  writeJsonl(file, ['{']);
  await assert.rejects(
    loadTrainingData(file, ctx(), { skipBad: true }),
    /no usable training record .* \(1 bad lines skipped\)/,
  );
});

test('collate right-pads with id 0 and label -100; the mask marks real tokens', () => {
  const b = collate(
    [
      { inputIds: [5, 6, 7], labels: [-100, 6, -100] },
      { inputIds: [8], labels: [8] },
    ],
    { maskPadding: true },
  );
  assert.equal(b.seqLen, 3);
  assert.deepEqual([...b.inputIds], [5, 6, 7, 8, 0, 0]);
  assert.deepEqual([...b.labels], [-100, 6, -100, 8, -100, -100]);
  assert.deepEqual([...b.attentionMask!], [1, 1, 1, 1, 0, 0]);
  assert.equal(collate([{ inputIds: [1], labels: [1] }]).attentionMask, undefined);
});

test('learning rate: linear warm-up from 0, then half-cycle cosine to min-lr (or constant)', () => {
  const s = { kind: 'cosine' as const, lr: 1, minLr: 0.1, warmupSteps: 4, totalSteps: 14 };
  assert.deepEqual(
    [0, 1, 2, 3].map((i) => learningRate(i, s)),
    [0, 0.25, 0.5, 0.75],
  );
  assert.equal(learningRate(4, s), 1);
  assert.ok(Math.abs(learningRate(9, s) - 0.55) < 1e-12, 'half-way: (1 + 0.1) / 2');
  assert.ok(Math.abs(learningRate(14, s) - 0.1) < 1e-12);
  assert.equal(learningRate(7, { ...s, kind: 'constant' }), 1);
});

/** An engine double that records what the loop asks of it (the real one is tested against golden data). */
class RecordingEngine implements StepEngine {
  calls: Array<{ ids: number[]; b: number; weight: number }> = [];
  steps: AdamWSettings[] = [];
  async accumulate(batch: Batch, weight: number) {
    this.calls.push({ ids: [...batch.inputIds], b: batch.batchSize, weight });
    let n = 0;
    for (const l of batch.labels) if (l !== -100) n++;
    return { lossSum: n * (1 + this.calls.length), labelCount: n };
  }
  async step(opt: AdamWSettings) {
    this.steps.push(opt);
    return { gradNorm: this.steps.length };
  }
}

async function items(n: number) {
  const d = tmpdir();
  const file = path.join(d, 'd.jsonl');
  const it = golden.items[0]!;
  writeJsonl(
    file,
    Array.from({ length: n }, (_, i) => ({
      system_prompt: it.system_prompt,
      user_prompt: it.user_prompt + ` ${i}`,
      answer_image: it.grids.answer_image,
    })),
  );
  return (await loadTrainingData(file, ctx())).records;
}

test('loop: batches, accumulation weights, loss normalisation and the schedule', async () => {
  const records = await items(5);
  const engine = new RecordingEngine();
  const loop = new TrainLoop(
    engine,
    { records, tokens: T },
    {
      ...TRAIN_DEFAULTS,
      batchSize: 2,
      gradAccum: 2,
      steps: 3,
      lr: 1e-3,
      warmupSteps: 1,
      shuffle: false,
    },
  );
  assert.equal(loop.batchesPerEpoch, 2, '5 records in batches of 2: the last record is dropped');
  const seen: number[] = [];
  const { reports, aborted } = await loop.run({ onStep: (r) => void seen.push(r.step) });
  assert.equal(aborted, false);
  assert.deepEqual(seen, [1, 2, 3]);
  assert.equal(engine.calls.length, 6);
  for (const c of engine.calls) {
    assert.equal(c.b, 2);
    // weight = 1 / (gradAccum * labelled positions of this micro-batch)
    const n = c.ids.filter((id) => id === T.mask).length;
    assert.ok(Math.abs(c.weight - 1 / (2 * n)) < 1e-15);
  }
  // Step loss = mean of its micro-batch means (the double returns 1 + call number per token).
  assert.equal(reports[0]!.loss, (2 + 3) / 2);
  assert.deepEqual(
    engine.steps.map((s) => s.lr),
    [
      0,
      1e-3,
      learningRate(2, { kind: 'cosine', lr: 1e-3, minLr: 0, warmupSteps: 1, totalSteps: 3 }),
    ],
  );
  assert.deepEqual(engine.steps[0], {
    lr: 0,
    beta1: 0.9,
    beta2: 0.95,
    eps: 1e-8,
    weightDecay: 0,
    clipGrad: 4,
  });
  assert.notDeepEqual(
    engine.calls[0]!.ids,
    engine.calls[2]!.ids,
    'items are re-masked every epoch',
  );
  assert.equal(reports[2]!.epoch, 3);
  await assert.rejects(loop.trainStep(), /training is complete/);
});

test('loop: file order with --no-shuffle; processed records are used as they are', async () => {
  const d = tmpdir();
  const file = path.join(d, 'p.jsonl');
  const p = golden.processed[0]!;
  // Record i is marked by id 1000 + i at position 1.
  writeJsonl(
    file,
    [0, 1, 2, 3, 4].map((i) => ({
      ...p,
      input_ids: p.input_ids.map((id, k) => (k === 1 ? 1000 + i : id)),
    })),
  );
  const records = (await loadTrainingData(file, ctx())).records;
  const engine = new RecordingEngine();
  await new TrainLoop(
    engine,
    { records, tokens: T },
    { ...TRAIN_DEFAULTS, batchSize: 2, steps: 5, shuffle: false },
  ).run();
  const seqLen = p.input_ids.length;
  const marks = engine.calls.map((c) => [c.ids[1]! - 1000, c.ids[seqLen + 1]! - 1000]);
  assert.deepEqual(marks, [
    [0, 1],
    [2, 3],
    [0, 1],
    [2, 3],
    [0, 1],
  ]);
  assert.deepEqual(engine.calls[0]!.ids.slice(seqLen + 2, 2 * seqLen), p.input_ids.slice(2));
  // A file of B records with --batch-size B repeats one batch every step.
  const one = new RecordingEngine();
  await new TrainLoop(
    one,
    { records: records.slice(0, 2), tokens: T },
    { ...TRAIN_DEFAULTS, batchSize: 2, steps: 3, shuffle: false },
  ).run();
  assert.deepEqual(one.calls[0]!.ids, one.calls[2]!.ids);
});

test('loop: resuming at step s replays exactly the batches of an uninterrupted run', async () => {
  const records = await items(7);
  const cfg = { ...TRAIN_DEFAULTS, batchSize: 2, gradAccum: 1, steps: 8, seed: 3 };
  const full = new RecordingEngine();
  await new TrainLoop(full, { records, tokens: T }, cfg).run();
  const first = new RecordingEngine();
  const ac = new AbortController();
  const loop = new TrainLoop(first, { records, tokens: T }, cfg);
  const r = await loop.run({ signal: ac.signal, onStep: (s) => void (s.step === 3 && ac.abort()) });
  assert.equal(r.aborted, true);
  assert.equal(loop.step, 3, 'the abort lands between steps');
  const rest = new RecordingEngine();
  await new TrainLoop(rest, { records, tokens: T }, cfg, { startStep: 3 }).run();
  assert.deepEqual(
    [...first.calls, ...rest.calls].map((c) => c.ids),
    full.calls.map((c) => c.ids),
  );
  assert.deepEqual([...first.steps, ...rest.steps], full.steps);
  // Shuffled epochs differ in order from file order.
  const inOrder = new RecordingEngine();
  await new TrainLoop(inOrder, { records, tokens: T }, { ...cfg, shuffle: false }).run();
  assert.notDeepEqual(
    inOrder.calls.map((c) => c.ids.slice(0, 25)),
    full.calls.map((c) => c.ids.slice(0, 25)),
  );
});

test('loop: settings are checked before any step', async () => {
  const records = await items(2);
  const mk = (over: object) => () =>
    new TrainLoop(new RecordingEngine(), { records, tokens: T }, { ...TRAIN_DEFAULTS, ...over });
  assert.throws(
    mk({ batchSize: 3 }),
    /--batch-size 3 needs at least that many records; the data has 2/,
  );
  assert.throws(mk({ gradAccum: 0 }), /--grad-accum must be a positive integer/);
  assert.throws(mk({ epochs: 1, gradAccum: 3 }), /make no step/);
  assert.throws(mk({ minLr: 1 }), /--min-lr must be in \[0, lr = 0.00002\]/);
  assert.throws(mk({ clipGrad: 0 }), /--clip-grad must be in \(0, Infinity\]/);
  assert.equal(
    new TrainLoop(new RecordingEngine(), { records, tokens: T }, { ...TRAIN_DEFAULTS, epochs: 3 })
      .totalSteps,
    6,
  );
});

test('groupByLength: whole batches of one length group, shuffled; the remainder stays last', () => {
  const b = 4;
  const n = LENGTH_GROUP_BATCHES * b * 2 + 3 * b + 2; // two full groups, a short one, 2 left over
  const lenRng = new Prng(7);
  const len = Array.from({ length: n }, () => lenRng.randint(10, 200));
  const shuffled = new Prng(8).shuffle(Array.from({ length: n }, (_, i) => i));
  const out = groupByLength(shuffled, (i) => len[i]!, b, new Prng(9));
  assert.deepEqual(
    [...out].sort((x, y) => x - y),
    Array.from({ length: n }, (_, i) => i),
    'a permutation',
  );
  assert.deepEqual(out.slice(-2), shuffled.slice(-2), 'the records after the last whole batch');
  assert.deepEqual(
    out,
    groupByLength(shuffled, (i) => len[i]!, b, new Prng(9)),
    'deterministic',
  );
  // Every batch comes from one group of the input order, sorted longest first.
  const groupOf = new Map(shuffled.map((r, k) => [r, Math.floor(k / (LENGTH_GROUP_BATCHES * b))]));
  const padded = (o: number[]) => {
    let sum = 0;
    for (let k = 0; k + b <= n; k += b)
      sum += b * Math.max(...o.slice(k, k + b).map((r) => len[r]!));
    return sum;
  };
  const batchGroups: number[] = [];
  for (let k = 0; k + b <= n; k += b) {
    const batch = out.slice(k, k + b);
    assert.equal(new Set(batch.map((r) => groupOf.get(r))).size, 1, `batch at ${k}: one group`);
    const ls = batch.map((r) => len[r]!);
    assert.deepEqual(
      ls,
      [...ls].sort((x, y) => y - x),
      `batch at ${k}: longest first`,
    );
    batchGroups.push(groupOf.get(batch[0]!)!);
  }
  assert.notDeepEqual(
    batchGroups,
    [...batchGroups].sort(),
    'the batches are shuffled across groups',
  );
  assert.ok(
    padded(out) < 0.8 * padded(shuffled),
    `padded tokens ${padded(out)} vs ${padded(shuffled)} ungrouped`,
  );
});

test('loop: --group-by-length pads less, and resuming replays it exactly', async () => {
  const d = tmpdir();
  const file = path.join(d, 'v.jsonl');
  const it = golden.items[0]!;
  // Prompts of 0..11 extra words: records of 12 different lengths.
  writeJsonl(
    file,
    Array.from({ length: 48 }, (_, i) => ({
      system_prompt: it.system_prompt,
      user_prompt: it.user_prompt + ' more'.repeat(i % 12),
      answer_image: it.grids.answer_image,
    })),
  );
  const records = (await loadTrainingData(file, ctx())).records;
  const cfg = { ...TRAIN_DEFAULTS, batchSize: 4, steps: 24, seed: 5, groupByLength: true };
  const padded = (e: RecordingEngine) => e.calls.reduce((s, c) => s + c.ids.length, 0);
  const grouped = new RecordingEngine();
  await new TrainLoop(grouped, { records, tokens: T }, cfg).run();
  const plain = new RecordingEngine();
  await new TrainLoop(plain, { records, tokens: T }, { ...cfg, groupByLength: false }).run();
  assert.ok(
    padded(grouped) < padded(plain),
    `padded tokens: ${padded(grouped)} grouped vs ${padded(plain)}`,
  );
  const first = new RecordingEngine();
  const ac = new AbortController();
  const loop = new TrainLoop(first, { records, tokens: T }, cfg);
  await loop.run({ signal: ac.signal, onStep: (s) => void (s.step === 15 && ac.abort()) });
  const rest = new RecordingEngine();
  await new TrainLoop(rest, { records, tokens: T }, cfg, { startStep: 15 }).run();
  assert.deepEqual(
    [...first.calls, ...rest.calls].map((c) => c.ids),
    grouped.calls.map((c) => c.ids),
  );
});
