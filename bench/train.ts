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
  stepS?: number;
  tokensPerS?: number;
  peakRssGb?: number;
  losses?: number[];
}

/** A masked-diffusion batch: half the positions masked (seeded). */
export function randomTrainBatch(
  c: LladaConfig,
  batch: number,
  seqLen: number,
  seed = 0,
): TrainBatch {
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

export async function taskTrainStep(a: {
  dir: string;
  threads: number;
  batch: number;
  seqLen: number;
  steps: number;
  lora?: LoraSpec;
}): Promise<TrainRow> {
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

/** The PyTorch step (bench/torch-train.py) with /usr/bin/python3, when torch is installed there. */
export function runTorchTrain(a: {
  dir: string;
  threads: number;
  batch: number;
  seqLen: number;
  steps: number;
}): TorchTrainRow {
  const python = process.env.DIMOO_TORCH_PYTHON ?? '/usr/bin/python3';
  if (isQuantizedCheckpoint(a.dir)) return { ok: false, reason: 'quantized checkpoint' };
  const here = path.dirname(fileURLToPath(import.meta.url));
  // The script sits in bench/ of the source tree (dist/bench has only the compiled JS).
  const candidates = [
    path.join(here, 'torch-train.py'),
    path.join(here, '..', '..', 'bench', 'torch-train.py'),
  ];
  const script = candidates.find((p) => fs.existsSync(p));
  if (!script) return { ok: false, reason: 'bench/torch-train.py not found' };
  loadLladaConfig(path.join(a.dir, 'config.json')); // the same validation as ours
  const r = spawnSync(
    python,
    [script, a.dir, String(a.batch), String(a.seqLen), String(a.threads), String(a.steps)],
    { encoding: 'utf8', maxBuffer: 1 << 24 },
  );
  if (r.error) return { ok: false, reason: `${python}: ${r.error.message}` };
  const line = r.stdout.split('\n').find((l) => l.startsWith('TORCH_RESULT '));
  if (!line)
    return {
      ok: false,
      reason: (r.stderr || r.stdout).trim().split('\n').slice(-2).join(' | ') || `exit ${r.status}`,
    };
  return {
    ok: true,
    ...(JSON.parse(line.slice('TORCH_RESULT '.length)) as Omit<TorchTrainRow, 'ok'>),
  };
}
