/**
 * `npm run bench [-- --quick] [-- --json]`: the CPU performance table.
 *
 * Every configuration runs in its own child process (child.ts), one after
 * another, so peak RSS and load times are clean and runs do not compete.
 * Ratios (MFU, ML-Cache and understanding speed-ups) are measured in this
 * one run. Random checkpoints are written once into ~/.cache/dimoo/bench (or
 * $DIMOO_BENCH_CACHE) and reused.
 *
 * Options:
 *   --quick           a few minutes: the 8B rows and the 1b ML-Cache/understanding rows are skipped
 *   --json            print one JSON object instead of the table
 *   --json-out FILE   also write the JSON object to FILE
 *   --only a,b        sections: gemm, int8, forward, step, precision, vq, mlcache, understanding, quality, train, cluster
 *                     (cluster: jobs/min with 1 vs 2 single-threaded queue workers, and the queue's added latency per job;
 *                     needs /usr/bin/redis-server)
 *                     (int8: the int8 kernel table, the 8B qgemm step at 256x256 (and 512x512 with --int8-512),
 *                     golden accuracy of the qgemm format)
 *   --int8-512        also the 8B qgemm step at 512x512 (peak RSS) in the int8 section
 *   --no-8b           skip the real-8B-shape rows (they need ~30 GB of disk and several minutes)
 *   --threads N       threads for the step/ML-Cache/understanding rows (default: all cores)
 *   --train-steps N   optimiser steps per training row (default 3; the first is timed apart)
 *   --torch-steps N   timed PyTorch training steps after its warm-up step (default 2)
 *   --torch-budget S  start no further timed PyTorch step after S seconds (default 300)
 *   --torch-timeout S kill the PyTorch training run after S seconds, keeping what it finished (default 900)
 *                     ($DIMOO_TORCH_BLAS_DIR: a folder with another libblas.so.3, e.g. OpenBLAS, for PyTorch's fp32 matmuls)
 *   --mlcache P:S,..  ML-Cache rows to run, e.g. 1b:256 (default small:256 and, without --quick, 1b:512: ~20 min)
 */
import { ensureAmusedVq, type VqRow } from './vq.js';
import { benchCluster } from './cluster.js';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  benchCacheDir,
  ensurePreset,
  ensureQuantized,
  freeBytes,
  presetBytes,
  quantizedBytes,
} from './checkpoints.js';
import { defaultGoldenDir } from './quality.js';
import type { GemmResult } from './gemm.js';
import { buildJson, emptyResults, renderTable } from './report.js';
import { runTorchTrain, type TrainRow } from './train.js';
import type {
  ForwardRow,
  MlCacheRow,
  QualityRow,
  StepRow,
  TaskName,
  UnderstandingRow,
} from './tasks.js';
import { QUANT_MANIFEST, type QuantFormat } from '../src/checkpoint/quantized.js';
import { quantizeCheckpoint } from '../src/tools/quantize.js';
import type { PresetName } from '../src/tools/random-checkpoint.js';

const argv = process.argv.slice(2);
const flag = (f: string) => argv.includes(f);
const value = (f: string): string | undefined => {
  const i = argv.indexOf(f);
  return i >= 0 ? argv[i + 1] : undefined;
};
const quick = flag('--quick');
const asJson = flag('--json');
const only = value('--only')?.split(',');
const want = (s: string) => !only || only.includes(s);
const cores = os.availableParallelism();
const threads = Number(value('--threads') ?? cores);
const skip8b = quick || flag('--no-8b');

const log = (s: string): void => {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${s}\n`);
};

/** Runs one task in a child process (tsx-aware: the child inherits this process's loader flags). */
function runChild<T>(task: TaskName, args: unknown): Promise<T> {
  const here = fileURLToPath(import.meta.url);
  const child = path.join(path.dirname(here), `child${path.extname(here)}`);
  return new Promise((resolve, reject) => {
    const p = spawn(
      process.execPath,
      [...process.execArgv, child, JSON.stringify({ task, args })],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString()));
    p.stderr.on('data', (b: Buffer) => (err += b.toString()));
    p.on('close', (code) => {
      const line = out
        .split('\n')
        .find((l) => l.startsWith('BENCH_RESULT ') || l.startsWith('BENCH_ERROR '));
      if (line?.startsWith('BENCH_RESULT '))
        resolve(JSON.parse(line.slice('BENCH_RESULT '.length)) as T);
      else
        reject(
          new Error(
            `${task} failed (exit ${code}): ${line?.slice('BENCH_ERROR '.length) ?? err.trim().split('\n').slice(-3).join(' | ')}`,
          ),
        );
    });
  });
}

// ---------------------------------------------------------------- run

async function main(): Promise<void> {
  const t0 = performance.now();
  const res = emptyResults({
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores,
    memGb: Math.round(os.totalmem() / 1e9),
    node: process.version,
    loadavgAtStart: os.loadavg()[0],
    mode: quick ? 'quick' : 'full',
    threads,
  });
  const dirs: Partial<Record<string, string>> = {};
  const presetDir = async (p: PresetName): Promise<string> =>
    (dirs[p] ??= (await ensurePreset(p, log)).dir);
  const quantDir = async (
    p: PresetName,
    bits: 8 | 4,
    format: QuantFormat = 'nbits',
  ): Promise<string> =>
    (dirs[`${p}-${bits}-${format}`] ??= (await ensureQuantized(p, bits, log, format)).dir);

  if (want('gemm')) {
    for (const t of [1, 2].filter((t) => t <= cores)) {
      for (const [kind, prepack] of [
        ['fp32', true],
        ['int8', true],
        ['int4', true],
        ['int8', false],
        ['int4', false],
      ] as const) {
        log(`GEMM ${kind}${prepack ? '' : ' (not prepacked)'}, ${t} thread(s)`);
        res.gemm.push(
          await runChild<GemmResult>('gemm', {
            kind,
            threads: t,
            M: 1024,
            K: 4096,
            N: 4096,
            prepack,
          }),
        );
      }
    }
  }
  if (want('int8')) {
    log(
      `int8 kernel table (fp32, MatMulNBits int8, integer GEMM per row / per tensor; M = 1024, 128, 32), ${threads} thread(s)`,
    );
    const r = await runChild<{ rows: GemmResult[] }>('gemmSet', {
      kinds: ['fp32', 'int8', 'int8_qgemm', 'int8_qgemm_tensor'],
      threads,
      Ms: [1024, 128, 32],
      rounds: 5,
    });
    res.int8Kernels.push(...r.rows);
  }
  const limit = (kind: 'fp32', t: number) =>
    res.gemm.find((g) => g.kind === kind && g.threads === t && g.prepack)?.gflops;

  if (want('forward')) {
    for (const preset of ['tiny', 'small'] as const) {
      for (const t of [1, 2].filter((t) => t <= cores)) {
        log(`forward ${preset}, ${t} thread(s)`);
        const r = await runChild<ForwardRow>('forward', {
          dir: await presetDir(preset),
          threads: t,
          size: 256,
          reps: quick ? 3 : 5,
        });
        res.forward.push({ ...r, preset, threads: t });
      }
    }
  }

  const stepRow = async (
    preset: PresetName,
    precision: 'fp32' | 'int8' | 'int4' | 'int8-qgemm',
    size: number,
    steps: number,
    prepack?: boolean,
  ): Promise<void> => {
    if (precision === 'int8-qgemm') {
      const dir = await quantDir(preset, 8, 'qgemm');
      log(`t2i step ${preset} int8 qgemm ${size}x${size}, ${steps} step(s)`);
      const r = await runChild<StepRow>('t2iStep', { dir, threads, size, steps });
      const lim = res.int8Kernels.find((g) => g.kind === 'int8_qgemm' && g.M === 1024)?.gflops;
      res.step.push({
        ...r,
        preset,
        size,
        precision,
        threads,
        mfu: lim ? r.flops / (r.stepMs * 1e6) / lim : undefined,
      });
      return;
    }
    const dir =
      precision === 'fp32'
        ? await presetDir(preset)
        : await quantDir(preset, precision === 'int8' ? 8 : 4);
    log(
      `t2i step ${preset} ${precision}${prepack === undefined ? '' : prepack ? ' prepacked' : ' unpacked'} ${size}x${size}, ${steps} step(s)`,
    );
    const r = await runChild<StepRow>('t2iStep', { dir, threads, size, steps, prepack });
    const lim =
      precision === 'fp32'
        ? limit('fp32', threads)
        : res.gemm.find(
            (g) => g.kind === precision && g.threads === threads && g.prepack === r.prepacked,
          )?.gflops;
    const gflops = r.flops / (r.stepMs * 1e6);
    res.step.push({ ...r, preset, size, precision, threads, mfu: lim ? gflops / lim : undefined });
  };

  if (want('step')) {
    for (const preset of ['small', '1b'] as const)
      for (const size of [256, 512]) await stepRow(preset, 'fp32', size, quick ? 2 : 3);
  }
  if (want('precision')) {
    for (const precision of ['int8', 'int4'] as const) await stepRow('1b', precision, 512, 2);
    if (!skip8b) {
      const need = presetBytes('8b') + quantizedBytes('8b', 8) + quantizedBytes('8b', 4);
      const have = fs.existsSync(path.join(benchCacheDir(), '8b-int4', '.complete'))
        ? Infinity
        : freeBytes(benchCacheDir());
      if (have < need) {
        res.notes.push(
          `8B rows skipped: the 8B checkpoints need ${(need / 1e9).toFixed(0)} GB of disk, ${(have / 1e9).toFixed(0)} GB free in ${benchCacheDir()}`,
        );
      } else {
        for (const precision of ['int8', 'int4'] as const) await stepRow('8b', precision, 512, 1);
        // The other side of the int8 trade-off: blocks used in place (less memory, slower).
        await stepRow('8b', 'int8', 512, 1, false);
        fs.writeFileSync(
          path.join(benchCacheDir(), 'results-8b.json'),
          JSON.stringify(
            res.step.filter((s) => s.preset === '8b'),
            null,
            1,
          ),
        );
      }
    } else {
      res.notes.push(`8B rows skipped (${quick ? '--quick' : '--no-8b'})`);
    }
  }

  if (want('int8')) {
    if (skip8b) res.notes.push(`8B qgemm rows skipped (${quick ? '--quick' : '--no-8b'})`);
    else {
      const need = presetBytes('8b') + quantizedBytes('8b', 8);
      const have = fs.existsSync(path.join(benchCacheDir(), '8b-int8-qgemm', '.complete'))
        ? Infinity
        : freeBytes(benchCacheDir());
      if (have < need)
        res.notes.push(
          `8B qgemm rows skipped: need ${(need / 1e9).toFixed(0)} GB of disk, ${(have / 1e9).toFixed(0)} GB free in ${benchCacheDir()}`,
        );
      else {
        await stepRow('8b', 'int8-qgemm', 256, 2);
        if (flag('--int8-512')) await stepRow('8b', 'int8-qgemm', 512, 2);
      }
    }
    const golden = path.join(defaultGoldenDir(), 'dimoo-tiny');
    if (!fs.existsSync(golden))
      res.notes.push(
        `int8 golden accuracy skipped: no golden checkpoint at ${golden} (set DIMOO_GOLDEN)`,
      );
    else {
      for (const format of ['nbits', 'qgemm'] as const) {
        const dir = path.join(
          benchCacheDir(),
          `golden-tiny-int8${format === 'qgemm' ? '-qgemm' : ''}`,
        );
        if (!fs.existsSync(path.join(dir, QUANT_MANIFEST)))
          await quantizeCheckpoint(golden, dir, { bits: 8, format });
        const precision = format === 'qgemm' ? 'int8-qgemm' : 'int8';
        if (res.quality.some((q) => q.precision === precision)) continue;
        log(`quality on the golden cases: int8 ${format}`);
        res.quality.push({
          ...(await runChild<QualityRow>('quality', { dir, threads })),
          precision,
        });
      }
    }
  }

  if (want('mlcache')) {
    const configs: [PresetName, number][] = value('--mlcache')
      ? value('--mlcache')!
          .split(',')
          .map((c) => c.split(':'))
          .map(([p, s]) => [p as PresetName, Number(s)])
      : quick
        ? [['small', 256]]
        : [
            ['small', 256],
            ['1b', 512],
          ];
    for (const [preset, size] of configs) {
      log(`ML-Cache ${preset} ${size}x${size}: 64 steps off, then on`);
      const r = await runChild<MlCacheRow>('mlcache', {
        dir: await presetDir(preset),
        threads,
        size,
        timesteps: 64,
      });
      res.mlcache.push({ ...r, preset, size });
    }
  }

  if (want('understanding')) {
    const golden = fs.existsSync(path.join(defaultGoldenDir(), 'dimoo-tiny'));
    const configs: PresetName[] = quick ? ['small'] : ['small', '1b'];
    if (golden) {
      log('understanding: golden cases (tiny), cached vs reference');
      const r = await runChild<UnderstandingRow>('understanding', {
        dir: path.join(defaultGoldenDir(), 'dimoo-tiny'),
        threads,
        genLength: 256,
        blockLength: 64,
        steps: 128,
        imageSize: 256,
        golden: true,
      });
      res.understanding.push({ ...r, preset: 'golden-tiny' });
    }
    for (const preset of configs) {
      log(`understanding ${preset}: gen 256 / block 64, uncached then dual cache`);
      const r = await runChild<UnderstandingRow>('understanding', {
        dir: await presetDir(preset),
        threads,
        genLength: 256,
        blockLength: 64,
        steps: 128,
        imageSize: 256,
      });
      res.understanding.push({ ...r, preset });
    }
  }

  if (want('vq')) {
    const vqDir = ensureAmusedVq(benchCacheDir());
    for (const size of quick ? [256, 512] : [256, 512, 1024]) {
      log(`VQ-VAE (aMUSEd size) encode/decode at ${size}x${size}`);
      res.vq.push(await runChild<VqRow>('vq', { dir: vqDir, threads, size }));
    }
  }

  if (want('quality')) {
    const golden = path.join(defaultGoldenDir(), 'dimoo-tiny');
    if (!fs.existsSync(golden)) {
      res.notes.push(`quality rows skipped: no golden checkpoint at ${golden} (set DIMOO_GOLDEN)`);
    } else {
      for (const precision of ['fp32', 'int8', 'int4'] as const) {
        let dir = golden;
        if (precision !== 'fp32') {
          dir = path.join(benchCacheDir(), `golden-tiny-${precision}`);
          if (!fs.existsSync(path.join(dir, QUANT_MANIFEST)))
            await quantizeCheckpoint(golden, dir, {
              bits: precision === 'int8' ? 8 : 4,
              format: 'nbits',
            });
        }
        log(`quality on the golden cases: ${precision}`);
        res.quality.push({
          ...(await runChild<QualityRow>('quality', { dir, threads })),
          precision,
        });
      }
    }
  }

  if (want('train')) {
    // Small preset, 4 x 512 tokens, fp32, 2 threads: ours, then PyTorch on the same checkpoint.
    const tThreads = Math.min(2, cores);
    const steps = Number(value('--train-steps') ?? 3);
    if (!res.gemm.some((g) => g.kind === 'fp32' && g.threads === tThreads && g.prepack)) {
      log(`GEMM fp32, ${tThreads} thread(s) (the training rows' limit)`);
      res.gemm.push(
        await runChild<GemmResult>('gemm', {
          kind: 'fp32',
          threads: tThreads,
          M: 1024,
          K: 4096,
          N: 4096,
          prepack: true,
        }),
      );
    }
    const small = await presetDir('small');
    log(`training step small fp32, 4 x 512 tokens, ${tThreads} threads, ${steps} steps`);
    const r = await runChild<TrainRow>('trainStep', {
      dir: small,
      threads: tThreads,
      batch: 4,
      seqLen: 512,
      steps,
    });
    const lim = limit('fp32', tThreads);
    res.train.push({
      ...r,
      label: 'small fp32 full fine-tuning',
      preset: 'small',
      precision: 'fp32',
      mfu: lim ? r.flops / r.stepS / 1e9 / lim : undefined,
    });
    log(`PyTorch training step small fp32 (bench/torch-train.py), ${tThreads} threads`);
    const torchArgs = {
      steps: Number(value('--torch-steps') ?? 2),
      budgetS: Number(value('--torch-budget') ?? 300),
      timeoutS: Number(value('--torch-timeout') ?? 900),
    };
    res.trainTorch = {
      ...runTorchTrain({ dir: small, threads: tThreads, batch: 4, seqLen: 512, ...torchArgs }),
      preset: 'small',
    };
    if (!res.trainTorch.ok)
      res.notes.push(`PyTorch training row: ${res.trainTorch.reason ?? 'failed'}`);
    if (skip8b) res.notes.push(`8B QLoRA training row skipped (${quick ? '--quick' : '--no-8b'})`);
    else {
      const need = presetBytes('8b') + quantizedBytes('8b', 4);
      const have = fs.existsSync(path.join(benchCacheDir(), '8b-int4', '.complete'))
        ? Infinity
        : freeBytes(benchCacheDir());
      if (have < need)
        res.notes.push(
          `8B QLoRA training row skipped: needs ${(need / 1e9).toFixed(0)} GB of disk, ${(have / 1e9).toFixed(0)} GB free in ${benchCacheDir()}`,
        );
      else {
        const dir = await quantDir('8b', 4);
        const lora = { r: 16, alpha: 32, targets: ['q', 'k', 'v', 'attn_out', 'ff', 'up', 'down'] };
        log(
          `training step 8B int4 + LoRA r16 (every attention/MLP linear), 1 x 512 tokens, ${tThreads} threads, 1 step`,
        );
        const q = await runChild<TrainRow>('trainStep', {
          dir,
          threads: tThreads,
          batch: 1,
          seqLen: 512,
          steps: 1,
          lora,
        });
        res.train.push({
          ...q,
          label: '8B int4 base + LoRA r16 (QLoRA)',
          preset: '8b',
          precision: 'int4',
        });
      }
    }
  }

  if (want('cluster')) {
    const golden = path.join(defaultGoldenDir(), 'dimoo-tiny');
    res.cluster = await benchCluster({
      smallDir: await presetDir('small'),
      goldenDir: golden,
      log,
    });
  }

  res.machine.loadavgAtEnd = os.loadavg()[0];
  res.machine.seconds = Math.round((performance.now() - t0) / 1000);
  const json = buildJson(res, path.join(benchCacheDir(), 'results-8b.json'));
  process.stdout.write(asJson ? JSON.stringify(json, null, 1) + '\n' : renderTable(res, json));
  const jsonOut = value('--json-out');
  if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify(json, null, 1) + '\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${(e as Error)?.stack ?? String(e)}\n`);
  process.exitCode = 1;
});
