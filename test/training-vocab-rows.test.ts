/**
 * Compact vocabulary training (--vocab-rows): the same losses, gradients,
 * gradient norms and updated weights as training every row, when the left-out
 * rows are zero in the embedding and equal in the head; clear errors otherwise.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DimooError } from '../src/errors.js';
import { openCheckpoint } from '../src/checkpoint/folder.js';
import { writeRandomCheckpoint } from '../src/tools/random-checkpoint.js';
import { createTrainEngine, type AdamWConfig, type TrainBatch } from '../src/training/engine.js';
import {
  compactTable,
  compactVocab,
  expandTable,
  nonZeroRows,
  parseVocabRows,
} from '../src/training/vocab-rows.js';
import { Prng } from '../src/samplers/prng.js';

let tmp = '';
let model = '';
let V = 0;
let rowsUsed: Array<[number, number]> = [];

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-vocab-rows-'));
  model = path.join(tmp, 'model');
  // Rows from the start and from the end of the vocabulary, like a model's words and image codes.
  const probe = await writeRandomCheckpoint(path.join(tmp, 'probe'), 'tiny', { seed: 3 });
  V = openCheckpoint(probe.dir).config.embeddingSize;
  rowsUsed = [
    [0, 40],
    [V - 60, V - 20],
  ];
  await writeRandomCheckpoint(model, 'tiny', { seed: 3, vocabRows: rowsUsed });
});

after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A padded batch of ids and labels drawn from the kept rows. */
function batch(seed: number): TrainBatch {
  const rng = new Prng(seed, 0);
  const ids = rowsUsed.flatMap(([a, b]) => Array.from({ length: b - a }, (_, i) => a + i));
  const pick = (): number => ids[Math.floor(rng.uniform() * ids.length)]!;
  const B = 2;
  const L = 12;
  const inputIds = new Int32Array(B * L);
  const labels = new Int32Array(B * L).fill(-100);
  for (let i = 0; i < B * L; i++) {
    inputIds[i] = pick();
    if (rng.uniform() < 0.5) labels[i] = pick();
  }
  return { inputIds, labels, batchSize: B, seqLen: L };
}

const opt: AdamWConfig = {
  lr: 3e-3,
  beta1: 0.9,
  beta2: 0.95,
  eps: 1e-8,
  weightDecay: 0.1,
  clipGrad: 0.5,
};

function maxRelDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let scale = 0;
  for (const x of b) scale = Math.max(scale, Math.abs(x));
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return scale === 0 ? d : d / scale;
}

test('training only the kept rows equals training every row (loss, gradients, norm, weights)', async () => {
  const full = await createTrainEngine({ model, threads: 1 });
  const compact = await createTrainEngine({ model, threads: 1, vocabRows: rowsUsed });
  try {
    assert.ok(compact.trainedCount < full.trainedCount / 10, 'the compact tables are small');
    for (let s = 0; s < 3; s++) {
      const b = batch(s);
      const lf = await full.accumulate(b, 1 / 20);
      const lc = await compact.accumulate(b, 1 / 20);
      assert.equal(lc.labelCount, lf.labelCount);
      assert.ok(
        Math.abs(lc.lossSum - lf.lossSum) <= 1e-5 * lf.lossSum,
        `step ${s}: loss ${lc.lossSum} vs ${lf.lossSum}`,
      );
      const gf = full.gradients();
      const gc = compact.gradients();
      for (const [name, g] of gf) {
        const d = maxRelDiff(gc.get(name)!, g);
        assert.ok(d < 1e-4, `step ${s}: gradient ${name} differs by ${d} (relative to its max)`);
      }
      // A left-out head row: the full engine's own gradient equals the compact one's share.
      const head = 'model.transformer.ff_out.weight';
      const D = full.config.dModel;
      const row = rowsUsed[0]![1] + 7;
      assert.ok(
        gf
          .get(head)!
          .subarray(row * D, (row + 1) * D)
          .some((x) => x !== 0),
      );
      const nf = (await full.step(opt)).gradNorm;
      const nc = (await compact.step(opt)).gradNorm;
      assert.ok(Math.abs(nf - nc) <= 1e-5 * nf, `step ${s}: grad norm ${nc} vs ${nf}`);
    }
    const pf = full.parameters();
    const pc = compact.parameters();
    for (const [name, p] of pf) {
      assert.deepEqual(pc.get(name)!.shape, p.shape, name);
      const d = maxRelDiff(pc.get(name)!.data, p.data);
      assert.ok(d < 1e-4, `weights ${name} differ by ${d} after 3 steps`);
    }
    // Left-out rows stay as they were: embedding zero, head rows tied (and moved).
    const D = full.config.dModel;
    const wte = pc.get('model.transformer.wte.weight')!.data;
    assert.ok(wte.subarray(41 * D, 42 * D).every((x) => x === 0));
    const headC = pc.get('model.transformer.ff_out.weight')!.data;
    assert.deepEqual(headC.subarray(50 * D, 51 * D), headC.subarray((V - 1) * D, V * D));
    assert.ok(headC.subarray(50 * D, 51 * D).some((x) => x !== 0));
    // Export / import keeps the compact state.
    const state = compact.exportState();
    const again = await createTrainEngine({ model, threads: 1, vocabRows: rowsUsed });
    try {
      again.importState(state);
      const b = batch(9);
      const l1 = await compact.accumulate(b, 1);
      const l2 = await again.accumulate(b, 1);
      assert.equal(l2.lossSum, l1.lossSum);
      await assert.rejects(
        (async () => {
          const other = await createTrainEngine({ model, threads: 1 });
          try {
            other.importState(state);
          } finally {
            await other.dispose();
          }
        })(),
        (e: unknown) => e instanceof DimooError && /wte\.weight.*shape/.test(e.message),
      );
    } finally {
      await again.dispose();
    }
  } finally {
    await full.dispose();
    await compact.dispose();
  }
});

test('ids outside the kept rows, rows that cannot be left out and bad specs are named', async () => {
  const e = await createTrainEngine({ model, threads: 1, vocabRows: rowsUsed });
  try {
    const b = batch(1);
    b.inputIds[5] = 45;
    await assert.rejects(
      e.accumulate(b, 1),
      (x: unknown) =>
        x instanceof DimooError &&
        /inputIds\[5\] = 45 is outside the trained vocabulary/.test(x.message),
    );
    const c = batch(1);
    const i = c.labels.findIndex((l) => l !== -100);
    c.labels[i] = V - 1;
    await assert.rejects(
      e.accumulate(c, 1),
      (x: unknown) =>
        x instanceof DimooError && new RegExp(`labels\\[${i}\\] = ${V - 1}`).test(x.message),
    );
  } finally {
    await e.dispose();
  }
  // The rows near the end hold real embeddings: leaving them out would silently freeze them.
  await assert.rejects(
    createTrainEngine({ model, threads: 1, vocabRows: [[0, 40]] }),
    (x: unknown) => x instanceof DimooError && /row \d+ is left out .* not zero/.test(x.message),
  );
  await assert.rejects(
    createTrainEngine({
      model,
      threads: 1,
      vocabRows: rowsUsed,
      lora: { r: 2, alpha: 4, targets: ['q'] },
    }),
    (x: unknown) => x instanceof DimooError && /full fine-tuning/.test(x.message),
  );
  assert.throws(
    () => compactVocab([[10, 5]], 100),
    (x: unknown) => x instanceof DimooError && /10:5/.test(x.message),
  );
  assert.throws(
    () =>
      compactVocab(
        [
          [0, 10],
          [5, 20],
        ],
        100,
      ),
    (x: unknown) => x instanceof DimooError && /row 5 is in two ranges/.test(x.message),
  );
  assert.throws(
    () => parseVocabRows('0:10,abc'),
    (x: unknown) => x instanceof DimooError && /"abc"/.test(x.message),
  );
  assert.deepEqual(parseVocabRows('0:10, 20:30'), [
    [0, 10],
    [20, 30],
  ]);
});

test('nonZeroRows finds the kept rows; compact and expanded tables round-trip', () => {
  const D = 3;
  const Vt = 10;
  const t = new Float32Array(Vt * D);
  for (const r of [1, 2, 5, 9]) t[r * D + 1] = r;
  assert.deepEqual(nonZeroRows(t, Vt, D), [
    [1, 3],
    [5, 6],
    [9, 10],
  ]);
  const cv = compactVocab(nonZeroRows(t, Vt, D), Vt);
  assert.equal(cv.size, 5);
  assert.equal(cv.rest, 4);
  assert.equal(cv.tied, 6);
  const c = compactTable(cv, t, D, 'zero', 't');
  assert.deepEqual(expandTable(cv, c, D, 'zero'), t);
  const head = t.slice();
  for (const r of [0, 3, 4, 6, 7, 8]) head.set([1, 2, 3], r * D);
  const ch = compactTable(cv, head, D, 'tied', 'head');
  assert.deepEqual(Array.from(ch.subarray(4 * D, 5 * D)), [1, 2, 3]);
  assert.deepEqual(expandTable(cv, ch, D, 'tied'), head);
  head[7 * D] = 4;
  assert.throws(
    () => compactTable(cv, head, D, 'tied', 'head'),
    (x: unknown) => x instanceof DimooError && /rows 0 and 7 .* differ/.test(x.message),
  );
});
