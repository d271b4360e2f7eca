/**
 * Messages between `WorkerDimoo` (main thread) and `worker-entry` (model
 * thread). Everything crosses by structured clone; typed arrays coming back
 * (preview codes, decoded pixels) are transferred, not copied twice.
 */
import { DimooError, type ErrorCode } from '../errors.js';
import { TASK_NAMES } from '../pipelines/tasks.js';
import type {
  LoadOptions,
  LoadProgress,
  ModelInfo,
  ProgressEvent,
  TaskName,
} from '../pipelines/types.js';

/** Methods of DimooApi the worker runs: every task (they take RunOptions), then the plain ones. */
export const JOB_METHODS: readonly TaskName[] = TASK_NAMES;
export const PLAIN_METHODS = ['encodeImage', 'decodeTokens'] as const;
export type JobMethod = TaskName;
export type PlainMethod = (typeof PLAIN_METHODS)[number];
export type Method = JobMethod | PlainMethod;

/**
 * Abort flags shared by both threads: slot `id % ABORT_SLOTS` holds the id of
 * a call asked to stop. Ids only grow, so a stale slot never matches a newer
 * call; two live calls would collide only with ABORT_SLOTS calls in flight.
 */
export const ABORT_SLOTS = 256;

export interface WorkerInit {
  /** URL of the module that exports the model class. */
  moduleUrl: string;
  /** Export with a static `load(dir, opts)` returning a DimooApi. */
  exportName: string;
  dir: string;
  loadOptions: LoadOptions & Record<string, unknown>;
  abortFlags: SharedArrayBuffer;
}

export type ToWorker =
  | {
      type: 'call';
      id: number;
      method: Method;
      args: unknown[];
      progress: boolean;
      preview: boolean;
    }
  | { type: 'abort'; id: number }
  | { type: 'dispose' };

export interface WireError {
  message: string;
  /** DimooError code when the error was one. */
  code?: ErrorCode;
  name: string;
  /** Only for internal errors; logged by the host, never shown to users. */
  stack?: string;
}

export type FromWorker =
  | { type: 'ready'; info: ModelInfo }
  | { type: 'load-error'; error: WireError }
  | { type: 'load-progress'; event: LoadProgress }
  | { type: 'progress'; id: number; event: ProgressEvent }
  | { type: 'result'; id: number; value: unknown }
  | { type: 'error'; id: number; error: WireError }
  | { type: 'disposed' };

export function toWire(e: unknown): WireError {
  if (e instanceof DimooError) return { message: e.message, code: e.code, name: 'DimooError' };
  if (e instanceof Error) return { message: e.message, name: e.name, stack: e.stack };
  return { message: String(e), name: 'Error' };
}

export function fromWire(w: WireError): Error {
  if (w.code !== undefined) return new DimooError(w.message, w.code);
  if (w.name === 'AbortError') return new DOMException(w.message, 'AbortError');
  const e = new Error(w.message);
  e.name = w.name;
  if (w.stack) e.stack = w.stack;
  return e;
}

/** Own copy of a typed array (so transferring it cannot detach a buffer someone else holds). */
export function ownCopy<T extends Uint8Array | Int32Array>(a: T): T {
  return a.slice() as T;
}
