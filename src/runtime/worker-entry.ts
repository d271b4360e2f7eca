/**
 * The model thread: loads a DimooApi implementation and runs the calls that
 * `WorkerDimoo` sends. ONNX Runtime's `run` holds the thread while it
 * computes, so this thread is busy during a job; aborts arrive through the
 * shared flags (checked between steps) as well as by message.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type {
  DimooApi,
  LoadProgress,
  ProgressEvent,
  RgbImage,
  RunOptions,
} from '../pipelines/types.js';
import {
  ABORT_SLOTS,
  JOB_METHODS,
  ownCopy,
  toWire,
  type FromWorker,
  type Method,
  type ToWorker,
  type WorkerInit,
} from './protocol.js';

const port = parentPort;
if (!port) throw new Error('worker-entry must run inside a worker thread');
const init = workerData as WorkerInit;
const flags = new Int32Array(init.abortFlags);
const jobs = new Map<number, AbortController>();

function post(msg: FromWorker, transfer: ArrayBuffer[] = []): void {
  port!.postMessage(msg, transfer);
}

function abortRequested(id: number): boolean {
  return Atomics.load(flags, id % ABORT_SLOTS) === id;
}

/** Pixel buffers go back as transferred copies (the model may still hold its own). */
function prepareResult(value: unknown): { value: unknown; transfer: ArrayBuffer[] } {
  const transfer: ArrayBuffer[] = [];
  const takeRgb = (img: RgbImage): RgbImage => {
    const data = ownCopy(img.data);
    transfer.push(data.buffer as ArrayBuffer);
    return { data, width: img.width, height: img.height };
  };
  if (value && typeof value === 'object') {
    const v = value as Record<string, unknown>;
    if (v['data'] instanceof Uint8Array && typeof v['width'] === 'number')
      return { value: takeRgb(v as unknown as RgbImage), transfer };
    if (v['image'] && typeof v['image'] === 'object')
      return { value: { ...v, image: takeRgb(v['image'] as RgbImage) }, transfer };
  }
  return { value, transfer };
}

async function runCall(api: DimooApi, msg: Extract<ToWorker, { type: 'call' }>): Promise<void> {
  const { id, method, args } = msg;
  const ac = new AbortController();
  jobs.set(id, ac);
  const check = (): void => {
    if (!ac.signal.aborted && abortRequested(id))
      ac.abort(new DOMException('The operation was aborted', 'AbortError'));
  };
  try {
    check();
    let value: unknown;
    if ((JOB_METHODS as readonly Method[]).includes(method)) {
      const opts: RunOptions = {
        signal: ac.signal,
        preview: msg.preview,
        // Always wrapped: this is where the shared abort flag is read between steps.
        onProgress: (e: ProgressEvent) => {
          check();
          if (!msg.progress) return;
          const event = { ...e };
          const transfer: ArrayBuffer[] = [];
          if (e.previewCodes) {
            event.previewCodes = ownCopy(e.previewCodes);
            transfer.push(event.previewCodes.buffer as ArrayBuffer);
          }
          post({ type: 'progress', id, event }, transfer);
        },
      };
      ac.signal.throwIfAborted();
      const fn = api[method as (typeof JOB_METHODS)[number]] as (
        p: unknown,
        o: RunOptions,
      ) => Promise<unknown>;
      value = await fn.call(api, args[0], opts);
    } else if (method === 'encodeImage') {
      value = await api.encodeImage(
        args[0] as Parameters<DimooApi['encodeImage']>[0],
        args[1] as Parameters<DimooApi['encodeImage']>[1],
      );
    } else if (method === 'decodeTokens') {
      value = await api.decodeTokens(args[0] as Parameters<DimooApi['decodeTokens']>[0]);
    } else {
      throw new Error(`unknown method ${String(method)}`);
    }
    const out = prepareResult(value);
    post({ type: 'result', id, value: out.value }, out.transfer);
  } catch (e) {
    // An abort shows up as whatever the engine threw; report it uniformly.
    const err = ac.signal.aborted
      ? { message: 'The operation was aborted', name: 'AbortError' }
      : toWire(e);
    post({ type: 'error', id, error: err });
  } finally {
    jobs.delete(id);
  }
}

async function main(): Promise<void> {
  let api: DimooApi;
  try {
    const mod = (await import(init.moduleUrl)) as Record<
      string,
      { load(dir: string, o: unknown): Promise<DimooApi> }
    >;
    const cls = mod[init.exportName];
    if (!cls || typeof cls.load !== 'function')
      throw new Error(`${init.moduleUrl} has no export ${init.exportName} with a static load()`);
    const onProgress = (event: LoadProgress): void => post({ type: 'load-progress', event });
    api = await cls.load(init.dir, { ...init.loadOptions, onProgress });
  } catch (e) {
    post({ type: 'load-error', error: toWire(e) });
    return;
  }
  port!.on('message', (msg: ToWorker) => {
    if (msg.type === 'call') void runCall(api, msg);
    else if (msg.type === 'abort')
      jobs.get(msg.id)?.abort(new DOMException('The operation was aborted', 'AbortError'));
    else if (msg.type === 'dispose') {
      for (const ac of jobs.values()) ac.abort();
      void api.dispose().finally(() => {
        post({ type: 'disposed' });
        port!.close();
      });
    }
  });
  post({ type: 'ready', info: api.info() });
}

void main();
