/**
 * TrainEngine behaviour beyond golden parity: the padding mask, resuming
 * from exported state bit-identically, and clear errors for bad input.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DimooError } from '../src/errors.js';
import {
  createTrainEngine,
  type AdamWConfig,
  type TrainBatch,
  type TrainEngine,
} from '../src/training/engine.js';
import { goldenCheckpointDir, readGoldenJson } from './helpers/golden.js';
import { goldenBatch, type TrainCase } from './helpers/train-golden.js';

const c = readGoldenJson('train_t2i_i2i_padded.json') as TrainCase;
const opt: AdamWConfig = {
  lr: 1e-3,
  beta1: 0.9,
  beta2: 0.95,
  eps: 1e-8,
  weightDecay: 0.1,
  clipGrad: 1,
};

async function withEngine<T>(e: TrainEngine, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } finally {
    await e.dispose();
  }
}

/** One processed item alone, unpadded. */
function single(i: number, mask: boolean): TrainBatch {
  const p = c.processed[i]!;
  const L = p.input_ids.length;
  return {
    inputIds: Int32Array.from(p.input_ids),
    labels: Int32Array.from(p.labels),
    batchSize: 1,
    seqLen: L,
    ...(mask ? { attentionMask: new Uint8Array(L).fill(1) } : {}),
  };
}

test('maskPadding: a padded row scores as if alone; without it the padding is attended to (as the original)', async () => {
  const batch = goldenBatch(c); // rows of 43 and 44 tokens: row 0 carries one padding token
  const masked = await createTrainEngine({
    model: goldenCheckpointDir(),
    threads: 1,
    maskPadding: true,
  });
  await withEngine(masked, async () => {
    const both = (await masked.accumulate(batch, 1)).lossSum;
    const alone =
      (await masked.accumulate(single(0, true), 1)).lossSum +
      (await masked.accumulate(single(1, true), 1)).lossSum;
    assert.ok(
      Math.abs(both - alone) <= 1e-5 * alone,
      `masked batch ${both} vs rows alone ${alone}`,
    );
    const noMask = { ...batch, attentionMask: undefined };
    await assert.rejects(
      masked.accumulate(noMask, 1),
      (e: unknown) => e instanceof DimooError && /attentionMask/.test(e.message),
    );
  });
  const plain = await createTrainEngine({ model: goldenCheckpointDir(), threads: 1 });
  await withEngine(plain, async () => {
    const both = (await plain.accumulate(batch, 1)).lossSum;
    const alone =
      (await plain.accumulate(single(0, false), 1)).lossSum +
      (await plain.accumulate(single(1, false), 1)).lossSum;
    assert.ok(
      Math.abs(both - alone) > 1e-4 * alone,
      'the padding token changes row 0 when attended to',
    );
  });
});

test('exportState / importState continue bit-identically', async () => {
  const batch = goldenBatch(c);
  const a = await createTrainEngine({
    model: goldenCheckpointDir(),
    threads: 1,
    lora: { r: 2, alpha: 4, targets: ['q', 'down'] },
  });
  const b = await createTrainEngine({
    model: goldenCheckpointDir(),
    threads: 1,
    lora: { r: 2, alpha: 4, targets: ['q', 'down'] },
    seed: 99,
  });
  await withEngine(a, () =>
    withEngine(b, async () => {
      await a.accumulate(batch, 0.01);
      await a.step(opt);
      const state = a.exportState();
      assert.equal(state.step, 1);
      b.importState(state);
      const ra = await a.accumulate(batch, 0.01);
      const rb = await b.accumulate(batch, 0.01);
      assert.equal(rb.lossSum, ra.lossSum);
      assert.equal((await b.step(opt)).gradNorm, (await a.step(opt)).gradNorm);
      const pa = a.parameters();
      for (const [name, p] of b.parameters()) assert.deepEqual(p.data, pa.get(name)!.data, name);
      assert.throws(
        () => b.importState({ ...state, tensors: state.tensors.slice(1) }),
        /missing from the state/,
      );
      await b.accumulate(batch, 1);
      assert.throws(() => b.exportState(), /accumulated but not applied/);
    }),
  );
});

test('bad batches, options and optimiser settings are named', async () => {
  await assert.rejects(
    createTrainEngine({
      model: goldenCheckpointDir(),
      lora: { r: 4, alpha: 8, targets: ['q', 'mlp'] },
    }),
    /unknown LoRA target "mlp"/,
  );
  await assert.rejects(
    createTrainEngine({ model: goldenCheckpointDir(), lora: { r: 0, alpha: 8, targets: ['q'] } }),
    /rank must be a positive integer/,
  );
  const e = await createTrainEngine({ model: goldenCheckpointDir(), threads: 1 });
  await withEngine(e, async () => {
    const ok = single(0, false);
    const bad = (patch: Partial<TrainBatch>) => e.accumulate({ ...ok, ...patch }, 1);
    await assert.rejects(
      bad({ inputIds: ok.inputIds.map((x, i) => (i === 5 ? 134548 : x)) }),
      /inputIds\[5\] = 134548 is outside the vocabulary/,
    );
    await assert.rejects(
      bad({ labels: ok.labels.map((x, i) => (i === 7 ? -5 : x)) }),
      /labels\[7\] = -5/,
    );
    await assert.rejects(
      bad({ seqLen: 42 }),
      /inputIds has 43 ids, expected batchSize x seqLen = 42/,
    );
    await assert.rejects(e.step({ ...opt, beta2: 1 }), /beta2 must be in \[0, 1\)/);
    await assert.rejects(
      e.step({ ...opt, clipGrad: 0 }),
      /clipGrad must be a positive number or null/,
    );
    // No labelled token: nothing to learn, nothing accumulated.
    assert.deepEqual(
      await e.accumulate({ ...ok, labels: new Int32Array(ok.labels.length).fill(-100) }, 1),
      { lossSum: 0, labelCount: 0 },
    );
  });
});
