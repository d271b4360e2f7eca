/**
 * LoRA and QLoRA in the training graph, on the golden tiny checkpoint:
 * PEFT key names and init (B = 0: the adapted model's loss equals the base's
 * exactly), adapter gradients equal to the chain rule through the full
 * fine-tuning gradient (dL/dB = scale * dL/dW @ A^T at B = 0), training
 * lowers the loss, and a quantized base (dimoo quantize, 4 and 8 bits) trains
 * its adapters the same way. The batch is golden case train_t2i_i2i_padded's.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { quantizeCheckpoint } from '../src/tools/quantize.js';
import {
  createTrainEngine,
  peftKeys,
  type AdamWConfig,
  type TrainEngine,
} from '../src/training/engine.js';
import { goldenCheckpointDir, readGoldenJson } from './helpers/golden.js';
import { goldenBatch, type TrainCase } from './helpers/train-golden.js';

const c = readGoldenJson('train_t2i_i2i_padded.json') as TrainCase;
const batch = goldenBatch(c);
const count = batch.labels.filter((l) => l !== -100).length;
const opt: AdamWConfig = {
  lr: 1e-3,
  beta1: 0.9,
  beta2: 0.95,
  eps: 1e-8,
  weightDecay: 0,
  clipGrad: 4,
};
const ALL = ['q', 'k', 'v', 'attn_out', 'ff', 'up', 'down'];

let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-lora-'));
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function withEngine<T>(e: TrainEngine, f: (e: TrainEngine) => Promise<T>): Promise<T> {
  try {
    return await f(e);
  } finally {
    await e.dispose();
  }
}

test('LoRA: PEFT names and init, loss at init equals the base exactly, dL/dB by the chain rule', async () => {
  const full = await withEngine(
    await createTrainEngine({ model: goldenCheckpointDir(), threads: 1 }),
    async (e) => {
      const r = await e.accumulate(batch, 1 / count);
      return { lossSum: r.lossSum, grads: e.gradients() };
    },
  );
  const lora = { r: 4, alpha: 8, targets: ALL };
  await withEngine(
    await createTrainEngine({ model: goldenCheckpointDir(), threads: 1, lora, seed: 7 }),
    async (e) => {
      const params = e.parameters();
      const q = peftKeys('model.transformer.blocks.1.q_proj.weight');
      assert.equal(q.a, 'base_model.model.model.transformer.blocks.1.q_proj.lora_A.weight');
      assert.deepEqual(params.get(q.a)!.shape, [4, 32]);
      assert.deepEqual(
        params.get(peftKeys('model.transformer.blocks.0.ff_out.weight').b)!.shape,
        [32, 4],
      );
      assert.equal(params.size, 2 * 7 * 2);
      for (const [name, p] of params) {
        if (name.endsWith('lora_B.weight'))
          assert.ok(
            p.data.every((x) => x === 0),
            `${name} starts at zero`,
          );
        else {
          const bound = 1 / Math.sqrt(p.shape[1]!);
          assert.ok(
            p.data.every((x) => Math.abs(x) <= bound) && p.data.some((x) => x !== 0),
            `${name} ~ U(-1/sqrt(in), 1/sqrt(in))`,
          );
        }
      }
      const { lossSum } = await e.accumulate(batch, 1 / count);
      assert.equal(lossSum, full.lossSum, 'B = 0 adds exactly nothing');
      // dL/dB = scale * dL/dW @ A^T; dL/dA = 0 while B = 0.
      const grads = e.gradients();
      const scale = lora.alpha / lora.r;
      for (const w of [
        'model.transformer.blocks.0.q_proj.weight',
        'model.transformer.blocks.1.ff_proj.weight',
        'model.transformer.blocks.1.ff_out.weight',
      ]) {
        const keys = peftKeys(w);
        const A = params.get(keys.a)!;
        const gB = grads.get(keys.b)!;
        const gW = full.grads.get(w)!;
        const [r, K] = A.shape as [number, number];
        const N = gW.length / K;
        let maxErr = 0;
        let maxAbs = 0;
        for (let n = 0; n < N; n++)
          for (let j = 0; j < r; j++) {
            let s = 0;
            for (let k = 0; k < K; k++) s += gW[n * K + k]! * A.data[j * K + k]!;
            maxErr = Math.max(maxErr, Math.abs(scale * s - gB[n * r + j]!));
            maxAbs = Math.max(maxAbs, Math.abs(scale * s));
          }
        assert.ok(
          maxAbs > 0 && maxErr <= 1e-4 * maxAbs,
          `${w}: dL/dB off by ${maxErr} (scale ${maxAbs})`,
        );
        assert.ok(
          grads.get(keys.a)!.every((x) => x === 0),
          `${w}: dL/dA is 0 while B = 0`,
        );
      }
      await e.step(opt);
      const losses: number[] = [];
      for (let i = 0; i < 3; i++) {
        losses.push((await e.accumulate(batch, 1 / count)).lossSum);
        await e.step(opt);
      }
      assert.ok(
        losses[2]! < losses[0]! && losses[0]! < lossSum,
        `LoRA training lowers the loss: ${lossSum}, ${losses.join(', ')}`,
      );
    },
  );
});

for (const bits of [8, 4] as const) {
  test(`QLoRA on a ${bits}-bit base: exact base loss at init, training lowers the loss`, async () => {
    const dir = path.join(tmp, `q${bits}`);
    await quantizeCheckpoint(goldenCheckpointDir(), dir, { bits, format: 'nbits' });
    await assert.rejects(createTrainEngine({ model: dir }), /only be fine-tuned with LoRA/);
    const base = await withEngine(
      await createTrainEngine({ model: dir, threads: 1, lora: { r: 2, alpha: 2, targets: ['v'] } }),
      async (e) => (await e.accumulate(batch, 1 / count)).lossSum,
    );
    await withEngine(
      await createTrainEngine({ model: dir, threads: 1, lora: { r: 8, alpha: 16, targets: ALL } }),
      async (e) => {
        const { lossSum } = await e.accumulate(batch, 1 / count);
        assert.equal(lossSum, base, 'every adapter starts as an exact zero');
        // The quantized base is close to the float one (golden loss of step 1).
        assert.ok(
          Math.abs(lossSum / count - c.steps[0]!.loss) < 0.05 * c.steps[0]!.loss,
          `quantized loss ${lossSum / count}`,
        );
        await e.step(opt);
        let last = lossSum;
        for (let i = 0; i < 3; i++) {
          last = (await e.accumulate(batch, 1 / count)).lossSum;
          await e.step(opt);
        }
        assert.ok(last < lossSum, `QLoRA training lowers the loss: ${lossSum} -> ${last}`);
      },
    );
  });
}

test('recomputed blocks (gradient checkpointing) give the same loss and gradients', async () => {
  for (const lora of [undefined, { r: 4, alpha: 8, targets: ['q', 'up', 'down'] }]) {
    const run = (recompute: boolean) =>
      createTrainEngine({ model: goldenCheckpointDir(), threads: 1, lora, recompute }).then((e) =>
        withEngine(e, async () => {
          if (lora) {
            // Non-zero B, so every adapter gradient is non-zero.
            await e.accumulate(batch, 1 / count);
            await e.step(opt);
          }
          const { lossSum } = await e.accumulate(batch, 1 / count);
          return { lossSum, grads: e.gradients() };
        }),
      );
    const plain = await run(false);
    const recomputed = await run(true);
    assert.ok(
      Math.abs(plain.lossSum - recomputed.lossSum) <= 1e-6 * Math.abs(plain.lossSum),
      `${lora ? 'LoRA' : 'full'} loss`,
    );
    assert.equal(recomputed.grads.size, plain.grads.size);
    for (const [name, g] of plain.grads) {
      const h = recomputed.grads.get(name)!;
      let maxErr = 0;
      let maxAbs = 0;
      for (let i = 0; i < g.length; i++) {
        maxErr = Math.max(maxErr, Math.abs(g[i]! - h[i]!));
        maxAbs = Math.max(maxAbs, Math.abs(g[i]!));
      }
      assert.ok(
        maxAbs > 0 && maxErr <= 1e-5 * maxAbs,
        `${lora ? 'LoRA' : 'full'} ${name}: off by ${maxErr} of ${maxAbs}`,
      );
    }
  }
});
