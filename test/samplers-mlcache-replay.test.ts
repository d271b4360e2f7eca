/**
 * Replays the golden ML-Cache text-to-image generation with the recorded
 * model outputs: guidance + MaskGIT + recompute masks must reproduce every
 * per-step record and the final tokens, with no model involved.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readCase } from './helpers/read-case.js';
import { guideTextToImage } from '../src/samplers/guidance.js';
import { MaskGitState } from '../src/samplers/maskgit.js';
import { recomputeMask, recomputePositions, torchQuantile } from '../src/samplers/mlcache.js';
import { cacheRefreshSchedule } from '../src/samplers/schedule.js';

interface StepRec {
  step: number;
  masked_before: number;
  sampled_code: number[];
  sampled_prob: number[];
  keep_n_schedule: number;
  remask_k: number;
  cond_recomputed_positions: number[] | null;
  uncond_recomputed_positions: number[] | null;
}
interface MlCacheCase {
  params: {
    cfg_scale: number;
    timesteps: number;
    cache_ratio: number;
    warmup_ratio: number;
    refresh_interval: number;
    codebook_size: number;
  };
  prompt_ids: number[];
  uncon_ids: number[];
  code_start: number;
  grid_h: number;
  grid_w: number;
  cond_sequence_per_step: number[][];
  final_sequence: number[];
  vq_tokens: number[];
  model_calls: Array<{ cat: string; length: number; to_compute_positions: number[] | null }>;
  per_step: StepRec[];
}

const MASK = 126336;
const OFFSET = 126356;

test('ML-Cache t2i 64x48 cfg4: replay reproduces every step record and the final tokens', () => {
  const c = readCase<MlCacheCase>('mlcache_t2i_64x48_cfg4');
  const g = c.json;
  const { cfg_scale: cfg, timesteps: T, cache_ratio: ratio, codebook_size: V } = g.params;
  const H = g.grid_h;
  const W = g.grid_w;
  const cellPos = Array.from(
    { length: H * W },
    (_, i) => g.code_start + Math.floor(i / W) * (W + 1) + (i % W),
  );
  const toUncond = (p: number): number => p - (g.code_start - 2) + g.uncon_ids.length;
  const refresh = cacheRefreshSchedule(T, {
    warmupRatio: g.params.warmup_ratio,
    refreshInterval: g.params.refresh_interval,
  });

  const state = MaskGitState.allMasked(H * W, { timesteps: T, codebookSize: V });
  const seq = [...g.prompt_ids];
  let condMaskNext: Uint8Array | undefined;
  let uncondMaskNext: Uint8Array | undefined;
  let call = 1; // call 0 is the [[0]] vocabulary probe
  for (let s = 0; s < T; s++) {
    assert.ok(!state.done);
    const rec = g.per_step[s]!;
    assert.deepEqual(seq, g.cond_sequence_per_step[s], `cond sequence at step ${s}`);
    const cells = state.maskedCells();
    const maskedPos = Array.from(cells, (i) => cellPos[i]!);
    assert.equal(cells.length, rec.masked_before);

    const condName = `call${String(call).padStart(2, '0')}`;
    const uncondName = `call${String(call + 1).padStart(2, '0')}`;
    assert.equal(g.model_calls[call]!.cat, 'cond');
    assert.equal(g.model_calls[call + 1]!.cat, 'uncond');
    assert.deepEqual(c.ints(`${condName}.input_ids`), seq);
    assert.deepEqual(c.ints(`${condName}.masked_rows_index`), maskedPos);
    assert.deepEqual(c.ints(`${uncondName}.masked_rows_index`), maskedPos.map(toUncond));

    // Recompute masks used at this step come from the previous step's logits.
    if (refresh[s]) {
      assert.equal(rec.cond_recomputed_positions, null);
      assert.equal(g.model_calls[call]!.to_compute_positions, null);
    } else {
      assert.ok(condMaskNext && uncondMaskNext, `step ${s} is partial but no mask was computed`);
      const condPos = [...condMaskNext.keys()].filter((i) => condMaskNext![i]);
      const uncondPos = [...uncondMaskNext.keys()].filter((i) => uncondMaskNext![i]);
      assert.deepEqual(condPos, rec.cond_recomputed_positions, `cond recompute at step ${s}`);
      assert.deepEqual(uncondPos, rec.uncond_recomputed_positions, `uncond recompute at step ${s}`);
      assert.deepEqual(condPos, g.model_calls[call]!.to_compute_positions);
      assert.deepEqual(Array.from(c.ints(`${condName}.to_compute_mask`)), Array.from(condMaskNext));
      assert.deepEqual(
        Array.from(c.ints(`${uncondName}.to_compute_mask`)),
        Array.from(uncondMaskNext),
      );
    }

    const cond = c.f32(`${condName}.image_logits_masked_rows`);
    const uncond = c.f32(`${uncondName}.image_logits_masked_rows`);
    const guided = guideTextToImage(cond, uncond, cfg, new Float32Array(cond.length));
    const out = state.step(guided);

    assert.equal(out.keepNSchedule, rec.keep_n_schedule, `keep_n at step ${s}`);
    assert.equal(out.remaskK, rec.remask_k, `remask_k at step ${s}`);
    assert.equal(out.remasked.length, rec.remask_k);
    assert.deepEqual(Array.from(out.sampledCodes), rec.sampled_code, `codes at step ${s}`);
    out.sampledProbs.forEach((p, i) =>
      assert.ok(
        Math.abs(p - rec.sampled_prob[i]!) <= 1e-4,
        `prob ${i} at step ${s}: ${p} vs ${rec.sampled_prob[i]}`,
      ),
    );

    // Masks for the next step, when that step is partial.
    if (s < T - 1 && !refresh[s + 1]) {
      condMaskNext = recomputeMask(c.f32(`${condName}.image_row_max`), ratio);
      uncondMaskNext = recomputeMask(c.f32(`${uncondName}.image_row_max`), ratio);
      assert.deepEqual(
        Array.from(recomputePositions(c.f32(`${condName}.image_row_max`), ratio)),
        [...condMaskNext.keys()].filter((i) => condMaskNext![i]),
      );
    } else {
      condMaskNext = uncondMaskNext = undefined;
    }

    const grid = state.codes();
    grid.forEach((code, i) => (seq[cellPos[i]!] = code < 0 ? MASK : code + OFFSET));
    call += 2;
  }
  assert.ok(state.done);
  assert.equal(call, g.model_calls.length);
  assert.deepEqual(seq, g.final_sequence);
  assert.deepEqual(
    Array.from(state.codes(), (v) => v + OFFSET),
    g.vq_tokens,
  );
});

test('torchQuantile: linear interpolation in float32 like torch.quantile', () => {
  const v = Float32Array.from([3, 1, 4, 1, 5, 9, 2, 6]);
  assert.equal(torchQuantile(v, 0), 1);
  assert.equal(torchQuantile(v, 1), 9);
  // sorted 1 1 2 3 4 5 6 9; q=0.5 -> rank 3.5 -> 3.5
  assert.equal(torchQuantile(v, 0.5), 3.5);
  // q=0.1 -> rank f32(0.1)*7 = 0.7 (w >= 0.5 branch): 1 + 0.7*(1-1) = 1
  assert.equal(torchQuantile(v, 0.1), 1);
  // q = 0.3: rank 2.1 -> 2 + 0.1*(3-2), rounded in float32
  assert.equal(
    torchQuantile(v, 0.3),
    Math.fround(2 + Math.fround(Math.fround(Math.fround(Math.fround(0.3) * 7) - 2) * 1)),
  );
  assert.ok(Number.isNaN(torchQuantile(Float32Array.from([1, NaN]), 0.5)));
  // positions at or below the threshold, including ties
  assert.deepEqual(
    Array.from(recomputePositions(Float32Array.from([5, 1, 3, 3, 7]), 0.5)),
    [1, 2, 3],
  );
  assert.throws(() => recomputeMask(v, 1.5), /cacheRatio/);
});
