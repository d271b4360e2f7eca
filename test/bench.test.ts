/**
 * The bench's measurements run (in-process, on the golden tiny checkpoint,
 * at toy sizes) and give finite numbers; the JSON report has every summary
 * key; the FLOP count matches a hand count.
 */
import { test } from 'node:test';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import assert from 'node:assert/strict';
import { openCheckpoint } from '../src/checkpoint/folder.js';
import { passFlops } from '../bench/flops.js';
import { buildJson, emptyResults, renderTable, SUMMARY_KEYS } from '../bench/report.js';
import { taskForward, taskMlCache, taskT2iStep, taskUnderstanding } from '../bench/tasks.js';
import { runTorchTrain } from '../bench/train.js';
import { cacheRefreshSchedule } from '../src/samplers/schedule.js';
import { goldenCheckpointDir } from './helpers/golden.js';

const dir = goldenCheckpointDir();

test('FLOP count: linears, attention and head rows', () => {
  const c = openCheckpoint(dir).config; // d 32, 4 heads, 2 layers, mlp 64
  const perLayer = 2 * 10 * (4 * 32 * 32 + 3 * 32 * 64) + 4 * 10 * 12 * 32;
  assert.equal(passFlops(c, { P: 10, S: 12, imageRows: 3, textRows: 1 }), 2 * perLayer + 2 * 32 * (3 * 8192 + 134548));
});

test('bench tasks run on the tiny checkpoint and report finite numbers', async () => {
  const fw = await taskForward({ dir, threads: 1, size: 64, reps: 1 });
  assert.ok(fw.tokens > 16 && fw.ms > 0 && Number.isFinite(fw.tokensPerS) && fw.peakRssGb > 0);
  const st = await taskT2iStep({ dir, threads: 1, size: 64, steps: 2 });
  assert.equal(st.allStepMs.length, 2);
  assert.ok(st.flops > 0 && st.modelMs > 0 && st.modelMs <= st.stepMs + 1);
  const ml = await taskMlCache({ dir, threads: 1, size: 64, timesteps: 12 });
  assert.ok(ml.speedup > 0 && ml.codeAgreement >= 0 && ml.codeAgreement <= 1 && Number.isFinite(ml.finalLogitRelL2));
  assert.equal(ml.fullSteps, cacheRefreshSchedule(12, { warmupRatio: 0.3, refreshInterval: 5 }).filter(Boolean).length);
  const un = await taskUnderstanding({ dir, threads: 1, genLength: 16, blockLength: 8, steps: 4, imageSize: 32, golden: true });
  assert.ok(un.speedup > 0 && un.agreement >= 0 && un.agreement <= 1);
  assert.equal(un.golden?.uncached, 1, 'uncached understanding reproduces the golden answers');

  const res = emptyResults({ threads: 1, mode: 'test', cpu: 'x', cores: 1, memGb: 1, node: process.version });
  res.gemm.push({ kind: 'fp32', prepack: true, threads: 1, M: 1, K: 1, N: 1, ms: 1, gflops: 100 });
  res.step.push({ ...st, preset: '1b', size: 512, precision: 'fp32', threads: 1, mfu: 0.5 });
  res.mlcache.push({ ...ml, preset: 'tiny', size: 64 });
  res.understanding.push({ ...un, preset: 'tiny' });
  const json = buildJson(res);
  for (const k of SUMMARY_KEYS) assert.ok(k in json, `JSON has ${k}`);
  assert.equal(json.t2i_step_mfu_1b_512, 0.5);
  assert.equal(json.rss_gb_8b_int8, null, 'skipped rows are null');
  assert.match(renderTable(res, json), /ML-Cache over a whole 64-step generation/);
});

test('the full output head in row chunks gives the same logits as in one piece', async () => {
  const { Transformer } = await import('../src/models/transformer.js');
  const ckpt = openCheckpoint(dir);
  const one = await Transformer.load(ckpt, { threads: 1 });
  // 134548 rows of 32 floats in chunks of 10000 rows: 14 chunks, the last one short.
  const many = await Transformer.load(ckpt, { threads: 1, headChunkBytes: 10000 * 32 * 4 });
  try {
    const ids = [126080, 5, 17, 126336, 130000, 126084];
    const req = { ids, logitRows: [0, 3, 5], imageRows: [3], rowmaxRows: [0, 1, 2, 3, 4, 5] };
    const a = await one.forward(req);
    const b = await many.forward(req);
    assert.deepEqual(b.logits, a.logits);
    assert.deepEqual(b.imageLogits, a.imageLogits);
    assert.deepEqual(b.imageRowMax, a.imageRowMax);
  } finally {
    await one.dispose();
    await many.dispose();
  }
});

test('PyTorch training row: a run killed at its timeout reports the steps it finished; the BLAS folder reaches the child', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-torch-'));
  try {
    // A stand-in interpreter: prints what the real script prints after its warm-up step, then hangs.
    const fake = path.join(tmp, 'python');
    fs.writeFileSync(fake, '#!/bin/sh\necho "TORCH_STEP {\\"step\\": 0, \\"s\\": 12.5, \\"loss\\": 3.25}"\necho "LD=$LD_LIBRARY_PATH OB=$OPENBLAS_NUM_THREADS" >&2\nexec sleep 60\n', { mode: 0o755 });
    const env = { python: process.env.DIMOO_TORCH_PYTHON, blas: process.env.DIMOO_TORCH_BLAS_DIR };
    process.env.DIMOO_TORCH_PYTHON = fake;
    process.env.DIMOO_TORCH_BLAS_DIR = '/opt/some-blas';
    try {
      const r = runTorchTrain({ dir, threads: 1, batch: 1, seqLen: 8, steps: 2, budgetS: 1, timeoutS: 1 });
      assert.equal(r.ok, false);
      assert.match(r.reason ?? '', /killed after the 1 s timeout; finished: step 0 \(warm-up\) 12\.5 s/);
      assert.equal(r.firstStepS, 12.5);
      assert.deepEqual(r.losses, [3.25]);
      // A finished run: TORCH_RESULT is parsed, and the child saw the BLAS folder and the thread count.
      fs.writeFileSync(fake, '#!/bin/sh\necho "TORCH_RESULT {\\"stepS\\": 2, \\"tokensPerS\\": 4, \\"blas\\": \\"$LD_LIBRARY_PATH|$OPENBLAS_NUM_THREADS\\"}"\n', { mode: 0o755 });
      const ok = runTorchTrain({ dir, threads: 3, batch: 1, seqLen: 8, steps: 2, budgetS: 1, timeoutS: 30 });
      assert.equal(ok.ok, true);
      assert.equal(ok.stepS, 2);
      assert.match(ok.blas ?? '', /^\/opt\/some-blas(:[^|]*)?\|3$/);
    } finally {
      if (env.python === undefined) delete process.env.DIMOO_TORCH_PYTHON;
      else process.env.DIMOO_TORCH_PYTHON = env.python;
      if (env.blas === undefined) delete process.env.DIMOO_TORCH_BLAS_DIR;
      else process.env.DIMOO_TORCH_BLAS_DIR = env.blas;
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});
