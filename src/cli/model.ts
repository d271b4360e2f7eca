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
  model: string;
  threads?: number;
  device?: 'cpu' | 'webgpu';
  precision?: 'fp32' | 'fp16';
  lora?: LoraRef[];
}

/** Fails early, with the flag's name, on a model folder that is obviously wrong. */
export function checkModelDir(dir: string, flag = '--model'): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    throw new DimooError(`${flag} ${dir}: no such folder`, 'E_PARAM');
  }
  if (!st.isDirectory()) throw new DimooError(`${flag} ${dir}: not a folder`, 'E_PARAM');
}

/** Loads the model, runs `fn`, and always releases the model (ORT sessions, worker). */
export async function withModel<T>(
  ctx: CliContext,
  flags: ModelFlags,
  fn: (api: DimooApi) => Promise<T>,
): Promise<T> {
  checkModelDir(flags.model);
  const loadOpts: LoadOptions = {};
  if (flags.threads !== undefined) loadOpts.threads = flags.threads;
  if (flags.device !== undefined) loadOpts.device = flags.device;
  if (flags.precision !== undefined) loadOpts.precision = flags.precision;
  if (flags.lora !== undefined && flags.lora.length > 0) loadOpts.lora = flags.lora;
  const api = await ctx.loadModel(flags.model, loadOpts);
  try {
    throwIfCancelled(ctx.signal);
    return await fn(api);
  } catch (e) {
    throw asCancellation(e, ctx.signal);
  } finally {
    await api.dispose();
  }
}

/** The decoder/encoder need vqvae/; say so before any compute. */
export function requireVq(api: DimooApi, why: string): void {
  if (!api.info().hasVq) {
    throw new DimooError(`${api.info().dir} has no VQ-VAE (vqvae/), needed ${why}`, 'E_PARAM');
  }
}
