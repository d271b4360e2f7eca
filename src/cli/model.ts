/**
 * Opening a checkpoint for a command. The pipeline (and ONNX Runtime with it)
 * is imported only when a command needs a model, so `inspect`, `init-random`
 * and `--help` start fast.
 */
import * as fs from 'node:fs';
import { DimooError } from '../errors.js';
import type { DimooApi, LoadOptions } from '../pipelines/types.js';
import type { LoraRef } from '../checkpoint/lora.js';
import type { CliContext } from './context.js';
import { asCancellation, throwIfCancelled } from './errors.js';
import { isHubId } from '../checkpoint/hub.js';
import { resolveModel } from '../checkpoint/default-model.js';
import { GENERATION_CONFIG_FILE, readGenerationDefaults } from '../checkpoint/generation-config.js';
import { resolveTaskDefaults } from '../pipelines/validate.js';
import type { TaskDefaults } from '../pipelines/types.js';
import * as path from 'node:path';
import type { LoadProgress } from '../pipelines/types.js';
import { createProgressBar, progressEnabled, type ProgressMode } from './progress.js';

/**
 * Loading on stderr (when progress is shown): a bar of megabytes while a Hub
 * download runs, then one line per loading step.
 */
export function loadProgress(
  ctx: CliContext,
  mode: ProgressMode,
): { onProgress: (p: LoadProgress) => void; stop: () => void } {
  if (!progressEnabled(ctx.stderr, mode)) return { onProgress: () => {}, stop: () => {} };
  const bar = createProgressBar(ctx.stderr, mode);
  let downloading = false;
  const mb = (n: number): number => Math.round(n / 1e6);
  return {
    onProgress: (p) => {
      if (p.stage === 'download') {
        if (!downloading) bar.start(mb(p.total), 'download MB', p.detail);
        downloading = true;
        bar.update(mb(p.done), p.detail);
        return;
      }
      if (downloading) bar.stop();
      downloading = false;
      writeLine(
        ctx.stderr,
        `dimoo: ${p.stage === 'files' ? 'mapped' : 'session ready:'} ${p.detail}`,
      );
    },
    stop: () => {
      if (downloading) bar.stop();
    },
  };
}

/**
 * The model runs on a worker thread: ONNX Runtime computes on the calling
 * thread, and a blocked main thread could not react to Ctrl-C (a second
 * Ctrl-C must quit at once even mid-step or mid-load).
 */
export const loadDimoo = async (dir: string, opts: LoadOptions): Promise<DimooApi> => {
  const { WorkerDimoo } = await import('../runtime/worker-dimoo.js');
  return WorkerDimoo.load(dir, opts);
};

/** Which model to load and how (the loading part of every model command's flags). */
export interface ModelFlags {
  /** Absent: the default model (checkpoint/default-model.ts). */
  model?: string;
  threads?: number;
  device?: 'cpu' | 'webgpu';
  precision?: 'fp32' | 'fp16';
  lora?: LoraRef[];
  revision?: string;
  progress?: ProgressMode;
}

/** Fails early, with the flag's name, on a model folder that is obviously wrong (Hub ids pass). */
export function checkModelDir(dir: string, flag = '--model'): void {
  if (isHubId(dir)) return;
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    throw new DimooError(`${flag} ${dir}: no such folder`, 'E_PARAM');
  }
  if (!st.isDirectory()) throw new DimooError(`${flag} ${dir}: not a folder`, 'E_PARAM');
}

/**
 * The request defaults of the model a command will load, read from its
 * folder before loading (for decisions made first, such as file names); a
 * Hugging Face id gets the original's.
 */
export function modelTaskDefaults(ctx: CliContext, model: string | undefined): TaskDefaults {
  const dir = resolveModel(model, ctx.env);
  const file = path.join(dir, GENERATION_CONFIG_FILE);
  return resolveTaskDefaults(
    isHubId(dir) && !fs.existsSync(file) ? {} : readGenerationDefaults(file),
  );
}

/** Loads the model, runs `fn`, and always releases the model (ORT sessions, worker). */
export async function withModel<T>(
  ctx: CliContext,
  flags: ModelFlags,
  fn: (api: DimooApi) => Promise<T>,
): Promise<T> {
  const model = resolveModel(flags.model, ctx.env);
  checkModelDir(model);
  const loadOpts: LoadOptions = {};
  if (flags.threads !== undefined) loadOpts.threads = flags.threads;
  if (flags.device !== undefined) loadOpts.device = flags.device;
  if (flags.precision !== undefined) loadOpts.precision = flags.precision;
  if (flags.lora !== undefined && flags.lora.length > 0) loadOpts.lora = flags.lora;
  if (flags.revision !== undefined) loadOpts.revision = flags.revision;
  const shown = loadProgress(ctx, flags.progress);
  loadOpts.onProgress = shown.onProgress;
  let api: DimooApi;
  try {
    api = await ctx.loadModel(model, loadOpts);
  } finally {
    shown.stop();
  }
  try {
    throwIfCancelled(ctx.signal);
    return await fn(api);
  } catch (e) {
    throw asCancellation(e, ctx.signal);
  } finally {
    await api.dispose();
  }
}

/**
 * Commands that read a checkpoint without running it (inspect, quantize) take
 * the folder either positionally or as `--model`, like every other command:
 * exactly one of the two.
 */
export function folderArgOrModel(
  positional: string | undefined,
  model: string | undefined,
): string {
  if (positional !== undefined && model !== undefined && positional !== model)
    throw new DimooError(
      `give the checkpoint folder once: ${positional} or --model ${model}`,
      'E_PARAM',
    );
  const dir = positional ?? model;
  if (dir === undefined)
    throw new DimooError('give the checkpoint folder (MODEL_DIR or --model DIR)', 'E_PARAM');
  return dir;
}

/** The decoder/encoder need vqvae/; say so before any compute. */
export function requireVq(api: DimooApi, why: string): void {
  if (!api.info().hasVq) {
    throw new DimooError(`${api.info().dir} has no VQ-VAE (vqvae/), needed ${why}`, 'E_PARAM');
  }
}

function writeLine(stream: NodeJS.WritableStream, line: string): void {
  stream.write(line + '\n');
}
