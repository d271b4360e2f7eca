/**
 * Saving a training run. Every save is one folder, written under a temporary
 * name beside its target and renamed into place, so an interrupted save never
 * leaves a half checkpoint:
 *
 *  - full fine-tuning: a complete checkpoint in the official layout
 *    (config.json, generation_config.json, tokenizer files, sharded
 *    `model-XXXXX-of-YYYYY.safetensors` + `model.safetensors.index.json`,
 *    `vqvae/`), weights in bf16 (default) or float32;
 *  - LoRA: the adapters in PEFT's layout (`adapter_config.json` +
 *    `adapter_model.safetensors`, PEFT key names);
 *  - both: what resuming needs, `trainer_state.json` (step, settings, data
 *    fingerprint, loss history) and `optimizer.safetensors` (float32
 *    parameters and AdamW moments), plus the loss curve `loss-curve.svg`.
 *
 *   writeRunFolder(target, contents)          the atomic save
 *   readResumeState(dir)                      { trainer, engine } from a saved folder
 *   peftAdapterConfig(lora, baseModel)        adapter_config.json contents
 */
import {
  GENERATION_CONFIG_FILE,
  writeGenerationDefaults,
  type GenerationDefaults,
} from '../checkpoint/generation-config.js';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DimooError } from '../errors.js';
import { expectedTensors, INDEX_FILE, type Checkpoint } from '../checkpoint/layout.js';
import { f32ToBf16 } from '../checkpoint/dtypes.js';
import { planShards, shardFileName } from '../tools/random-checkpoint.js';
import {
  numel,
  readTensorBytes,
  readTensorFloat32,
  SafetensorsFile,
  writeSafetensors,
  type WriteEntry,
} from '../checkpoint/safetensors.js';
import type { TrainerConfig } from './loop.js';
import type { TensorState, TrainEngineState as EngineState } from './engine.js';
import { LORA_TARGETS } from '../graph/train-graph.js';

export type SaveDtype = 'bf16' | 'float32';

export interface LoraSettings {
  r: number;
  alpha: number;
  targets: string[];
}

/** Module names of the LoRA targets (the checkpoint's linear names): the training graph's table, looked up by CLI strings. */
export const LORA_MODULES: Readonly<Record<string, string>> = LORA_TARGETS;
export type { TensorState, EngineState };

export interface TrainerStateFile {
  format: 'dimoo-trainer-state';
  version: 1;
  /** Optimiser steps taken. */
  step: number;
  totalSteps: number;
  /** Absolute path of the base checkpoint. */
  baseModel: string;
  lora?: LoraSettings;
  config: TrainerConfig;
  data: { files: string[]; sha256: string; records: number };
  history: Array<{ step: number; loss: number; gradNorm: number; lr: number }>;
  /**
   * Where the data stands and what the random streams are (informational: both
   * follow from `step` and the seed, which is why resuming needs nothing else).
   */
  position?: { epoch: number; microBatch: number; batchesPerEpoch: number };
  rng?: { generator: string; seed: number; shuffle: string; masks: string };
}

export interface RunFolderContents {
  base: Checkpoint;
  /** Trainable tensors: checkpoint names (full) or PEFT keys (LoRA). */
  params: Map<string, { shape: number[]; data: Float32Array }>;
  lora?: LoraSettings;
  dtype: SaveDtype;
  state?: { trainer: TrainerStateFile; engine: EngineState };
  curveSvg?: string;
  maxShardBytes?: number;
  /** Merged into the full checkpoint's generation_config.json (what the model was trained to generate). */
  generationDefaults?: GenerationDefaults;
}

export const TRAINER_STATE_FILE = 'trainer_state.json';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';
export const LOSS_CURVE_FILE = 'loss-curve.svg';
const GiB = 1024 ** 3;

/** Copies a file; the copy is writable even when the base checkpoint is read-only. */
function copyWritable(src: string, dst: string): void {
  fs.copyFileSync(src, dst);
  fs.chmodSync(dst, 0o644);
}

function copyTree(src: string, dst: string): void {
  fs.mkdirSync(dst, { recursive: true });
  for (const e of fs.readdirSync(src, { withFileTypes: true })) {
    const s = path.join(src, e.name);
    const d = path.join(dst, e.name);
    if (e.isDirectory()) copyTree(s, d);
    else if (e.isFile()) copyWritable(s, d);
  }
}

function tensorEntry(
  name: string,
  shape: number[],
  data: Float32Array,
  dtype: SaveDtype,
): WriteEntry {
  return dtype === 'bf16'
    ? { name, dtype: 'BF16', shape, data: f32ToBf16(data) }
    : { name, dtype: 'F32', shape, data };
}

/** Full fine-tuning: the official layout with the trained weights. */
function writeFullCheckpoint(dir: string, c: RunFolderContents): void {
  const base = c.base;
  // Everything that is not a weight file comes from the base checkpoint.
  for (const f of [
    base.tokenizerPath,
    base.tokenizerConfigPath,
    base.specialTokensMapPath,
    base.generationConfigPath,
  ]) {
    if (f) copyWritable(f, path.join(dir, path.basename(f)));
  }
  copyWritable(path.join(base.dir, 'config.json'), path.join(dir, 'config.json'));
  if (base.vqvaeDir) copyTree(base.vqvaeDir, path.join(dir, 'vqvae'));

  const expected = expectedTensors(base.config);
  const bytesPer = c.dtype === 'bf16' ? 2 : 4;
  const planned = expected.map((t) => ({
    name: t.name,
    shape: t.shape,
    bytes: numel(t.shape) * bytesPer,
  }));
  const shards = planShards(planned, c.maxShardBytes ?? 2 * GiB);
  const weightMap: Record<string, string> = {};
  let total = 0;
  shards.forEach((shard, i) => {
    const file = shardFileName(i, shards.length);
    const entries = shard.map((t): WriteEntry => {
      const p = c.params.get(t.name);
      total += t.bytes;
      weightMap[t.name] = file;
      if (p) {
        if (numel(p.shape) !== numel(t.shape) || p.data.length !== numel(t.shape)) {
          throw new DimooError(
            `trained tensor ${t.name} has shape [${p.shape}], the checkpoint [${t.shape}]`,
            'E_TRAIN',
          );
        }
        return tensorEntry(t.name, t.shape, p.data, c.dtype);
      }
      // Not trained (frozen): the base tensor, converted to the save dtype.
      const info = base.weights.get(t.name);
      if (!info) throw new DimooError(`${base.dir}: weight ${t.name} is missing`, 'E_CHECKPOINT');
      const want = c.dtype === 'bf16' ? 'BF16' : 'F32';
      if (info.dtype === want)
        return { name: t.name, dtype: want, shape: t.shape, data: readTensorBytes(info) };
      return tensorEntry(t.name, t.shape, readTensorFloat32(info), c.dtype);
    });
    writeSafetensors(path.join(dir, file), entries, { format: 'pt' });
  });
  const sorted: Record<string, string> = {};
  for (const k of Object.keys(weightMap).sort()) sorted[k] = weightMap[k]!;
  fs.writeFileSync(
    path.join(dir, INDEX_FILE),
    JSON.stringify({ metadata: { total_size: total }, weight_map: sorted }, null, 2) + '\n',
  );
}

/** PEFT's adapter_config.json for adapters on the chosen linears of every block. */
export function peftAdapterConfig(lora: LoraSettings, baseModel: string): Record<string, unknown> {
  const modules = lora.targets.map((t) => {
    const m = LORA_MODULES[t];
    if (!m)
      throw new DimooError(
        `unknown LoRA target "${t}" (known: ${Object.keys(LORA_MODULES).join(', ')})`,
        'E_PARAM',
      );
    return m;
  });
  return {
    peft_type: 'LORA',
    task_type: null,
    base_model_name_or_path: baseModel,
    r: lora.r,
    lora_alpha: lora.alpha,
    lora_dropout: 0,
    bias: 'none',
    fan_in_fan_out: false,
    use_rslora: false,
    use_dora: false,
    init_lora_weights: true,
    inference_mode: true,
    modules_to_save: null,
    // A regex (full match), because "ff_out" also names the output head.
    target_modules: `.*\\.blocks\\.\\d+\\.(${[...new Set(modules)].join('|')})`,
  };
}

function writeAdapter(dir: string, c: RunFolderContents): void {
  const lora = c.lora!;
  fs.writeFileSync(
    path.join(dir, ADAPTER_CONFIG_FILE),
    JSON.stringify(peftAdapterConfig(lora, c.base.dir), null, 2) + '\n',
  );
  const names = [...c.params.keys()].sort();
  writeSafetensors(
    path.join(dir, ADAPTER_WEIGHTS_FILE),
    names.map((n) => {
      const p = c.params.get(n)!;
      return tensorEntry(n, p.shape, p.data, c.dtype);
    }),
    { format: 'pt' },
  );
}

function writeOptimizer(file: string, s: EngineState): void {
  const entries: WriteEntry[] = [];
  for (const t of s.tensors) {
    entries.push({ name: `param.${t.name}`, dtype: 'F32', shape: t.shape, data: t.param });
    entries.push({ name: `exp_avg.${t.name}`, dtype: 'F32', shape: t.shape, data: t.m });
    entries.push({ name: `exp_avg_sq.${t.name}`, dtype: 'F32', shape: t.shape, data: t.v });
  }
  writeSafetensors(file, entries, { format: 'dimoo-optimizer', step: String(s.step) });
}

/** Writes the folder under a temporary name and renames it to `target`. */
export function writeRunFolder(target: string, c: RunFolderContents): void {
  const dst = path.resolve(target);
  fs.mkdirSync(path.dirname(dst), { recursive: true });
  const tmp = `${dst}.tmp-${process.pid}-${Date.now()}`;
  fs.mkdirSync(tmp);
  try {
    if (c.lora) writeAdapter(tmp, c);
    else writeFullCheckpoint(tmp, c);
    if (!c.lora && c.generationDefaults) {
      writeGenerationDefaults(path.join(tmp, GENERATION_CONFIG_FILE), c.generationDefaults);
    }
    if (c.state) {
      writeOptimizer(path.join(tmp, OPTIMIZER_FILE), c.state.engine);
      fs.writeFileSync(
        path.join(tmp, TRAINER_STATE_FILE),
        JSON.stringify(c.state.trainer, null, 2) + '\n',
      );
    }
    if (c.curveSvg !== undefined) fs.writeFileSync(path.join(tmp, LOSS_CURVE_FILE), c.curveSvg);
    // Swap: the old folder (if any) leaves only once the new one is complete.
    const old = `${dst}.old-${process.pid}-${Date.now()}`;
    const had = fs.existsSync(dst);
    if (had) fs.renameSync(dst, old);
    fs.renameSync(tmp, dst);
    if (had) fs.rmSync(old, { recursive: true, force: true });
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    if (e instanceof DimooError) throw e;
    throw new DimooError(`cannot save ${dst}: ${(e as Error).message}`, 'E_IO');
  }
}

/** The resume state saved in `dir` (a folder written by writeRunFolder with state). */
export function readResumeState(dir: string): { trainer: TrainerStateFile; engine: EngineState } {
  const stateFile = path.join(dir, TRAINER_STATE_FILE);
  let trainer: TrainerStateFile;
  try {
    trainer = JSON.parse(fs.readFileSync(stateFile, 'utf8')) as TrainerStateFile;
  } catch (e) {
    throw new DimooError(
      `--resume ${dir}: cannot read ${TRAINER_STATE_FILE} (${(e as Error).message})`,
      'E_RESUME',
    );
  }
  if (trainer.format !== 'dimoo-trainer-state' || trainer.version !== 1) {
    throw new DimooError(
      `--resume ${dir}: ${TRAINER_STATE_FILE} is not a dimoo trainer state (version 1)`,
      'E_RESUME',
    );
  }
  const opt = SafetensorsFile.open(path.join(dir, OPTIMIZER_FILE));
  const step = Number(opt.metadata?.step);
  if (!Number.isSafeInteger(step) || step !== trainer.step) {
    throw new DimooError(
      `--resume ${dir}: ${OPTIMIZER_FILE} is at step ${opt.metadata?.step}, ${TRAINER_STATE_FILE} at ${trainer.step}`,
      'E_RESUME',
    );
  }
  const tensors = new Map<string, TensorState>();
  for (const info of opt.tensors.values()) {
    const dot = info.name.indexOf('.');
    const kind = info.name.slice(0, dot);
    const name = info.name.slice(dot + 1);
    let t = tensors.get(name);
    if (!t) {
      t = {
        name,
        shape: info.shape,
        param: new Float32Array(),
        m: new Float32Array(),
        v: new Float32Array(),
      };
      tensors.set(name, t);
    }
    const data = readTensorFloat32(info);
    if (kind === 'param') t.param = data;
    else if (kind === 'exp_avg') t.m = data;
    else if (kind === 'exp_avg_sq') t.v = data;
    else
      throw new DimooError(
        `--resume ${dir}: unexpected tensor ${info.name} in ${OPTIMIZER_FILE}`,
        'E_RESUME',
      );
  }
  return { trainer, engine: { step, tensors: [...tensors.values()] } };
}
