/**
 * Random checkpoints for the bench, written once into a cache folder
 * (default ~/.cache/dimoo/bench, or $DIMOO_BENCH_CACHE) and reused between
 * runs. A folder counts as complete only when its `.complete` marker exists,
 * so an interrupted write is redone rather than half-used.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { writeRandomCheckpoint, PRESETS, type PresetName } from '../src/tools/random-checkpoint.js';
import { numel } from '../src/checkpoint/safetensors.js';
import { quantizeCheckpoint } from '../src/tools/quantize.js';
import type { QuantFormat } from '../src/checkpoint/quantized.js';
import type { QuantBits } from '../src/checkpoint/quant-blocks.js';

export function benchCacheDir(): string {
  return process.env.DIMOO_BENCH_CACHE ?? path.join(os.homedir(), '.cache', 'dimoo', 'bench');
}

const MARK = '.complete';

function complete(dir: string): boolean {
  return fs.existsSync(path.join(dir, MARK));
}

/** Bytes of bf16 weights of a preset (what the checkpoint's shards hold). */
export function presetBytes(preset: PresetName): number {
  const s = PRESETS[preset];
  const d = s.dModel;
  const kv = ((s.nKvHeads ?? s.nHeads) * d) / s.nHeads;
  const h = s.mlpHiddenSize;
  const vocab = 134548;
  const perLayer = d * d * 2 + kv * d * 2 + 3 * d * h + 2 * d;
  return 2 * (numel([vocab, d]) * 2 + s.nLayers * perLayer + d);
}

/** Free bytes on the file system holding `dir` (or its nearest existing parent). */
export function freeBytes(dir: string): number {
  let p = path.resolve(dir);
  while (!fs.existsSync(p)) p = path.dirname(p);
  const st = fs.statfsSync(p);
  return st.bavail * st.bsize;
}

export interface EnsureResult {
  dir: string;
  /** Seconds spent writing (0 when reused). */
  wroteS: number;
}

/** The random checkpoint of a preset (seed 0, bf16, no VQ), written if absent. */
export async function ensurePreset(
  preset: PresetName,
  log: (s: string) => void = () => {},
): Promise<EnsureResult> {
  const dir = path.join(benchCacheDir(), preset);
  if (complete(dir)) return { dir, wroteS: 0 };
  const need = presetBytes(preset) * 1.02;
  if (freeBytes(dir) < need) {
    throw new Error(
      `not enough disk for the ${preset} checkpoint: needs ${(need / 1e9).toFixed(1)} GB, ${(freeBytes(dir) / 1e9).toFixed(1)} GB free`,
    );
  }
  log(
    `writing random ${preset} checkpoint to ${dir} (${(presetBytes(preset) / 1e9).toFixed(2)} GB) ...`,
  );
  const t = performance.now();
  fs.rmSync(dir, { recursive: true, force: true });
  await writeRandomCheckpoint(dir, preset, { seed: 0 });
  fs.writeFileSync(path.join(dir, MARK), new Date().toISOString() + '\n');
  return { dir, wroteS: (performance.now() - t) / 1000 };
}

/** Approximate bytes of a quantized checkpoint (codes + scales + bf16 embedding). */
export function quantizedBytes(preset: PresetName, bits: QuantBits): number {
  const bf16 = presetBytes(preset);
  const s = PRESETS[preset];
  const emb = 134548 * s.dModel * 2;
  const rest = (bf16 - emb) / 2; // parameters outside the embedding
  return emb + rest * (bits / 8) * 1.15;
}

/** The quantized copy of a preset's checkpoint (MatMulNBits blocks, or qgemm: int8 per channel), written if absent. */
export async function ensureQuantized(
  preset: PresetName,
  bits: QuantBits,
  log: (s: string) => void = () => {},
  format: QuantFormat = 'nbits',
): Promise<EnsureResult> {
  const src = await ensurePreset(preset, log);
  const dir = path.join(
    benchCacheDir(),
    `${preset}-int${bits}${format === 'qgemm' ? '-qgemm' : ''}`,
  );
  if (complete(dir)) return { dir, wroteS: src.wroteS };
  const need = quantizedBytes(preset, bits);
  if (freeBytes(dir) < need) {
    throw new Error(
      `not enough disk for the ${preset} int${bits} checkpoint: needs ${(need / 1e9).toFixed(1)} GB, ${(freeBytes(dir) / 1e9).toFixed(1)} GB free`,
    );
  }
  log(`quantizing ${preset} to ${bits} bits (${format}) into ${dir} ...`);
  const t = performance.now();
  fs.rmSync(dir, { recursive: true, force: true });
  await quantizeCheckpoint(src.dir, dir, { bits, format });
  fs.writeFileSync(path.join(dir, MARK), new Date().toISOString() + '\n');
  return { dir, wroteS: src.wroteS + (performance.now() - t) / 1000 };
}
