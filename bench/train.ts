/**
 * Training rows of the bench (`--only train`): optimiser steps of the
 * TrainEngine on a random checkpoint (forward + CE + backward + clip + AdamW),
 * and the same step in PyTorch (bench/torch-train.py, run with Debian's
 * python3-torch) on the same checkpoint and batch shape.
 *
 * Batches are random ids with half of the positions masked (mask id in, the
 * original id as label), as a masked-diffusion SFT batch looks; every
 * sequence is full length (no padding).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadLladaConfig, type LladaConfig } from '../src/checkpoint/config.js';
import { isQuantizedCheckpoint } from '../src/checkpoint/quantized.js';
import { Prng } from '../src/samplers/prng.js';
import { createTrainEngine, type LoraSpec, type TrainBatch } from '../src/training/engine.js';
import { passFlops } from './flops.js';
import type { Common } from './tasks.js';

export interface TrainRow extends Common {
  batch: number;
  seqLen: number;
  threads: number;
  lora?: number;
  loadS: number;
  /** Seconds per optimiser step (median of the timed steps; the first step is timed apart). */
  stepS: number;
  firstStepS: number;
  tokensPerS: number;
  /** Matrix-product FLOPs of one step (forward, and backward: x2 for full fine-tuning, x1 for LoRA). */
  flops: number;
  losses: number[];
}

export interface TorchTrainRow {
  ok: boolean;
  /** Why the PyTorch row is missing. */
  reason?: string;
  torch?: string;
  /** The BLAS library the PyTorch process loaded (its fp32 matmuls run there). */
  blas?: string;
  /** Median of the timed steps (after one warm-up step). */
  stepS?: number;
  /** The warm-up step. */
  firstStepS?: number;
  timedSteps?: number;
  tokensPerS?: number;
  peakRssGb?: number;
  losses?: number[];
}

/** A masked-diffusion batch: half the positions masked (seeded). */
export function randomTrainBatch(c: LladaConfig, batch: number, seqLen: number, seed = 0): TrainBatch {
  const rng = new Prng(seed);
  const n = batch * seqLen;
  const inputIds = new Int32Array(n);
  const labels = new Int32Array(n).fill(-100);
  for (let i = 0; i < n; i++) {
    const id = rng.randint(0, c.embeddingSize);
    if (rng.uniform() < 0.5 && c.maskTokenId < c.embeddingSize) {
      inputIds[i] = c.maskTokenId;
      labels[i] = id;
    } else inputIds[i] = id;
  }
  return { inputIds, labels, batchSize: batch, seqLen };
}

export function trainStepFlops(c: LladaConfig, b: TrainBatch, lora: boolean): number {
  let f = 0;
  for (let r = 0; r < b.batchSize; r++) {
    const row = b.labels.subarray(r * b.seqLen, (r + 1) * b.seqLen);
    const labelled = row.filter((l) => l !== -100).length;
    f += passFlops(c, { P: b.seqLen, S: b.seqLen, imageRows: 0, textRows: labelled });
  }
  return f * (lora ? 2 : 3);
}

export async function taskTrainStep(a: { dir: string; threads: number; batch: number; seqLen: number; steps: number; lora?: LoraSpec }): Promise<TrainRow> {
  const t0 = performance.now();
  const engine = await createTrainEngine({ model: a.dir, threads: a.threads, lora: a.lora });
  const loadS = (performance.now() - t0) / 1000;
  const b = randomTrainBatch(engine.config, a.batch, a.seqLen);
  const count = b.labels.filter((l) => l !== -100).length;
  const opt = { lr: 1e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0, clipGrad: 4 };
  const times: number[] = [];
  const losses: number[] = [];
  for (let s = 0; s < a.steps; s++) {
    const t = performance.now();
    const { lossSum } = await engine.accumulate(b, 1 / count);
    await engine.step(opt);
    times.push((performance.now() - t) / 1000);
    losses.push(lossSum / count);
  }
  await engine.dispose();
  const timed = times.length > 1 ? times.slice(1).sort((x, y) => x - y) : times;
  const stepS = timed[Math.floor(timed.length / 2)]!;
  return {
    batch: a.batch,
    seqLen: a.seqLen,
    threads: a.threads,
    lora: a.lora?.r,
    loadS,
    stepS,
    firstStepS: times[0]!,
    tokensPerS: (a.batch * a.seqLen) / stepS,
    flops: trainStepFlops(engine.config, b, a.lora !== undefined),
    losses,
    peakRssGb: (process.resourceUsage().maxRSS * 1024) / 1e9,
    loadavg: os.loadavg()[0]!,
  };
}

/**
 * The PyTorch step (bench/torch-train.py) with /usr/bin/python3, when torch is installed there:
 * one warm-up step, then up to `steps` timed steps while `budgetS` lasts, killed after `timeoutS`.
 * Debian's torch does its fp32 matmuls on whatever libblas.so.3 the system resolves (netlib's
 * reference BLAS unless OpenBLAS is installed); $DIMOO_TORCH_BLAS_DIR, a folder holding another
 * libblas.so.3 (e.g. OpenBLAS's), is put first on the child's library path.
 */
export function runTorchTrain(a: { dir: string; threads: number; batch: number; seqLen: number; steps: number; budgetS: number; timeoutS: number }): TorchTrainRow {
  const python = process.env.DIMOO_TORCH_PYTHON ?? '/usr/bin/python3';
  if (isQuantizedCheckpoint(a.dir)) return { ok: false, reason: 'quantized checkpoint' };
  const here = path.dirname(fileURLToPath(import.meta.url));
  // The script sits in bench/ of the source tree (dist/bench has only the compiled JS).
  const candidates = [path.join(here, 'torch-train.py'), path.join(here, '..', '..', 'bench', 'torch-train.py')];
  const script = candidates.find((p) => fs.existsSync(p));
  if (!script) return { ok: false, reason: 'bench/torch-train.py not found' };
  loadLladaConfig(path.join(a.dir, 'config.json')); // the same validation as ours
  const env: NodeJS.ProcessEnv = { ...process.env, OMP_NUM_THREADS: String(a.threads), OPENBLAS_NUM_THREADS: String(a.threads) };
  const blasDir = process.env.DIMOO_TORCH_BLAS_DIR;
  if (blasDir) env.LD_LIBRARY_PATH = [blasDir, process.env.LD_LIBRARY_PATH].filter(Boolean).join(':');
  const args = [script, a.dir, String(a.batch), String(a.seqLen), String(a.threads), String(a.steps), String(a.budgetS)];
  const r = spawnSync(python, args, { encoding: 'utf8', maxBuffer: 1 << 24, env, timeout: a.timeoutS * 1000, killSignal: 'SIGKILL' });
  const lines = (r.stdout ?? '').split('\n');
  const line = lines.find((l) => l.startsWith('TORCH_RESULT '));
  if (line) return { ok: true, ...(JSON.parse(line.slice('TORCH_RESULT '.length)) as Omit<TorchTrainRow, 'ok'>) };
  const done = lines.filter((l) => l.startsWith('TORCH_STEP ')).map((l) => JSON.parse(l.slice('TORCH_STEP '.length)) as { step: number; s: number; loss: number });
  if (r.error && (r.error as NodeJS.ErrnoException).code !== 'ETIMEDOUT') return { ok: false, reason: `${python}: ${r.error.message}` };
  if (r.signal === 'SIGKILL' || (r.error as NodeJS.ErrnoException | undefined)?.code === 'ETIMEDOUT') {
    const what = done.length ? `; finished: ${done.map((d) => `step ${d.step} (${d.step === 0 ? 'warm-up' : 'timed'}) ${d.s.toFixed(1)} s`).join(', ')}` : '; no step finished';
    return { ok: false, reason: `killed after the ${a.timeoutS} s timeout${what}`, firstStepS: done[0]?.s, losses: done.map((d) => d.loss) };
  }
  return { ok: false, reason: (r.stderr || r.stdout).trim().split('\n').slice(-2).join(' | ') || `exit ${r.status}` };
}
