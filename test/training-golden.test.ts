/**
 * The training engine against the original train.py on the golden tiny
 * checkpoint (cases train_*.json): per optimiser step the mean loss and the
 * gradient norm (relative 1e-4), and four parameters after the last step
 * (values 1e-5 absolute, sums 1e-4 relative). The processed sequences come
 * from the case files; batching (right-padding with 0 / -100) is done here.
 */
import { test } from 'node:test';
import { probeWebGpu } from '../src/models/device.js';
import { createTrainEngine } from '../src/training/engine.js';
import { goldenCheckpointDir, readGoldenJson } from './helpers/golden.js';
import {
  checkParamsAfter,
  runGoldenTraining,
  TRAIN_CASES,
  type TrainCase,
} from './helpers/train-golden.js';

// WebGPU as in webgpu.test.ts: skipped without an adapter unless DIMOO_REQUIRE_WEBGPU=1.
const gpu = await probeWebGpu();
const gpuSkip =
  gpu.available || process.env.DIMOO_REQUIRE_WEBGPU === '1'
    ? false
    : `no WebGPU adapter: ${gpu.reason}`;

for (const [device, skip] of [
  ['cpu', false],
  ['webgpu', gpuSkip],
] as const) {
  for (const name of TRAIN_CASES) {
    test(
      `golden training ${name} (${device}): loss, gradient norm per step, parameters after`,
      {
        // The 1058-token case runs its graph twice per step on WebGPU (labelled rows in runs of
        // 249) and takes ~2.5 min per step on lavapipe: only with DIMOO_SLOW_TESTS=1.
        skip:
          skip ||
          (device === 'webgpu' &&
          name === 'train_mmu_single' &&
          process.env.DIMOO_SLOW_TESTS !== '1'
            ? 'slow on a software GPU: set DIMOO_SLOW_TESTS=1'
            : false),
      },
      async () => {
        const c = readGoldenJson(`${name}.json`) as TrainCase;
        const engine = await createTrainEngine({
          model: goldenCheckpointDir(),
          threads: 1,
          device,
        });
        try {
          await runGoldenTraining(engine, c);
          checkParamsAfter(engine, c);
        } finally {
          await engine.dispose();
        }
      },
    );
  }
}
