/**
 * Golden training cases (train_*.json): the batch from the processed
 * sequences (right-padded with 0 / -100, as train.py's collate), and the
 * checks of loss, gradient norm and parameters after.
 */
import assert from 'node:assert/strict';
import type { TrainBatch, TrainEngine } from '../../src/training/engine.js';

export interface ParamSummary {
  shape: number[];
  first_row_head: number[];
  sum: number;
  abs_sum: number;
}

export interface TrainCase {
  name: string;
  batch: number[];
  processed: { input_ids: number[]; labels: number[] }[];
  recipe: {
    clip_grad_norm: number;
    optimizer: { betas: [number, number]; eps: number; lr: number; weight_decay: number };
  };
  steps: { step: number; loss: number; grad_norm: number }[];
  params_after: Record<string, ParamSummary>;
}

export const TRAIN_CASES = ['train_t2i_i2i_padded', 'train_mmu_single'];

export function goldenBatch(c: TrainCase): TrainBatch {
  const seqs = c.batch.map((i) => c.processed[i]!);
  const L = Math.max(...seqs.map((s) => s.input_ids.length));
  const inputIds = new Int32Array(seqs.length * L);
  const labels = new Int32Array(seqs.length * L).fill(-100);
  const attentionMask = new Uint8Array(seqs.length * L);
  seqs.forEach((s, r) => {
    inputIds.set(s.input_ids, r * L);
    labels.set(s.labels, r * L);
    attentionMask.fill(1, r * L, r * L + s.input_ids.length);
  });
  return { inputIds, labels, attentionMask, batchSize: seqs.length, seqLen: L };
}

/** Runs the case's steps; checks loss and gradient norm per step. */
export async function runGoldenTraining(engine: TrainEngine, c: TrainCase): Promise<void> {
  const batch = goldenBatch(c);
  const count = batch.labels.filter((l) => l !== -100).length;
  const o = c.recipe.optimizer;
  for (const s of c.steps) {
    const { lossSum, labelCount } = await engine.accumulate(batch, 1 / count);
    assert.equal(labelCount, count);
    const loss = lossSum / labelCount;
    const { gradNorm } = await engine.step({
      lr: o.lr,
      beta1: o.betas[0],
      beta2: o.betas[1],
      eps: o.eps,
      weightDecay: o.weight_decay,
      clipGrad: c.recipe.clip_grad_norm,
    });
    assert.ok(
      Math.abs(loss - s.loss) <= 1e-4 * Math.abs(s.loss),
      `${c.name} step ${s.step}: loss ${loss}, expected ${s.loss}`,
    );
    assert.ok(
      Math.abs(gradNorm - s.grad_norm) <= 1e-4 * s.grad_norm,
      `${c.name} step ${s.step}: grad norm ${gradNorm}, expected ${s.grad_norm}`,
    );
  }
}

export function checkParamsAfter(engine: TrainEngine, c: TrainCase): void {
  const params = engine.parameters();
  for (const [name, want] of Object.entries(c.params_after)) {
    const p = params.get(name);
    assert.ok(p, `${c.name}: no parameter ${name}`);
    assert.deepEqual(p.shape, want.shape, `${name} shape`);
    want.first_row_head.forEach((v, i) =>
      assert.ok(
        Math.abs(p.data[i]! - v) <= 1e-5,
        `${c.name} ${name}[0][${i}] = ${p.data[i]}, expected ${v}`,
      ),
    );
    let sum = 0;
    let abs = 0;
    for (const x of p.data) {
      sum += x;
      abs += Math.abs(x);
    }
    // The sum of a mostly cancelling tensor is judged against its absolute sum.
    assert.ok(
      Math.abs(sum - want.sum) <= 1e-4 * Math.max(Math.abs(want.sum), 1e-3 * want.abs_sum),
      `${c.name} ${name} sum ${sum}, expected ${want.sum}`,
    );
    assert.ok(
      Math.abs(abs - want.abs_sum) <= 1e-4 * want.abs_sum,
      `${c.name} ${name} abs sum ${abs}, expected ${want.abs_sum}`,
    );
  }
}
