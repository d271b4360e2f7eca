/**
 * `WorkerDimoo`: the whole DimooApi, run on a worker thread. ONNX Runtime's
 * `run` computes on the calling thread, so a server that ran the model on its
 * main thread could not answer anything (health checks, cancels, progress)
 * while a job runs. Here the main thread only forwards calls and events.
 *
 * Cancellation: the worker's event loop is mostly busy during a job, so an
 * abort is written to a SharedArrayBuffer that the worker reads between
 * sampling steps (a message is sent too, for when the worker is idle).
 * The returned promise settles only when the worker has actually stopped, so
 * a queue that waits for it never runs two jobs at once.
 */
import { resolveModel } from '../checkpoint/default-model.js';
import { Worker } from 'node:worker_threads';
import { DimooError } from '../errors.js';
import { resolveModelDir } from '../checkpoint/hub.js';
import type {
  DimooApi,
  EditParams,
  EncodeOptions,
  GenerateParams,
  ImageInput,
  ImageResult,
  LoadOptions,
  ModelInfo,
  PaintParams,
  RetouchParams,
  RgbImage,
  RunOptions,
  TokenGrid,
  UnderstandParams,
  UnderstandResult,
} from '../pipelines/types.js';
import {
  ABORT_SLOTS,
  fromWire,
  type FromWorker,
  type JobMethod,
  type Method,
  type ToWorker,
  type WorkerInit,
} from './protocol.js';

export interface WorkerDimooOptions extends LoadOptions {
  /** Module exporting the model class (default: the real `Dimoo`); tests pass a fake. */
  moduleUrl?: string | URL;
  /** Name of the export with a static `load(dir, opts)` (default 'Dimoo'). */
  exportName?: string;
  /** Extra options passed to `load` as they are (must be cloneable). */
  extra?: Record<string, unknown>;
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  onProgress?: RunOptions['onProgress'];
  signal?: AbortSignal;
  onAbort?: () => void;
}

/** Under tsx the modules are .ts files; compiled, they are .js next to each other. */
const EXT = import.meta.url.endsWith('.ts') ? '.ts' : '.js';

function sibling(rel: string): URL {
  return new URL(rel + EXT, import.meta.url);
}

function spawn(init: WorkerInit): Worker {
  // Same as models/device.ts (not imported here: it would load ORT on this thread).
  // ORT reads the process environment, which only this thread can change; without
  // this a long command line crashes ORT's telemetry start-up in the worker.
  process.env['ORT_DISABLE_TELEMETRY'] ??= '1';
  const entry = sibling('./worker-entry');
  if (EXT === '.js') return new Worker(entry, { workerData: init });
  // Workers do not inherit tsx's loader hooks (Node 20): register them first, then load the .ts entry.
  const tsxApi = import.meta.resolve('tsx/esm/api');
  const code = `import(${JSON.stringify(tsxApi)}).then((m) => { m.register(); return import(${JSON.stringify(entry.href)}); });`;
  return new Worker(code, { eval: true, workerData: init, execArgv: [] });
}

export class WorkerDimoo implements DimooApi {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly flags: Int32Array;
  private dead: Error | null = null;
  private disposing: Promise<void> | null = null;
  private onDisposed: (() => void) | null = null;

  private constructor(
    private readonly worker: Worker,
    private readonly modelInfo: ModelInfo,
    abortFlags: SharedArrayBuffer,
  ) {
    this.flags = new Int32Array(abortFlags);
    worker.on('message', (m: FromWorker) => this.onMessage(m));
    worker.on('error', (e) =>
      this.fail(new DimooError(`model worker crashed: ${e.message}`, 'E_WORKER')),
    );
    worker.on('exit', (code) =>
      this.fail(new DimooError(`model worker exited (code ${code})`, 'E_WORKER')),
    );
  }

  /**
   * Starts a worker thread and loads the checkpoint in it; resolves when the model is ready.
   * `dir` omitted: the default model ($DIMOO_MODEL, else the shipped shapes model).
   */
  static async load(dir?: string, opts: WorkerDimooOptions = {}): Promise<WorkerDimoo> {
    const abortFlags = new SharedArrayBuffer(ABORT_SLOTS * 4);
    const loadOptions: WorkerInit['loadOptions'] = { ...(opts.extra ?? {}) };
    if (opts.threads !== undefined) loadOptions.threads = opts.threads;
    if (opts.device !== undefined) loadOptions.device = opts.device;
    if (opts.precision !== undefined) loadOptions.precision = opts.precision;
    if (opts.lora !== undefined) loadOptions.lora = opts.lora;
    // A Hugging Face id is resolved (and downloaded) here, so download progress reaches the caller directly.
    const local = await resolveModelDir(resolveModel(dir, process.env, 'dir'), {
      revision: opts.revision,
      token: opts.token,
      onProgress: (p) =>
        opts.onProgress?.({ stage: 'download', done: p.done, total: p.total, detail: p.file }),
    });
    const init: WorkerInit = {
      moduleUrl: String(opts.moduleUrl ?? sibling('../pipelines/dimoo').href),
      exportName: opts.exportName ?? 'Dimoo',
      dir: local,
      loadOptions,
      abortFlags,
    };
    const worker = spawn(init);
    const info = await new Promise<ModelInfo>((resolve, reject) => {
      const onMsg = (m: FromWorker): void => {
        if (m.type === 'load-progress') {
          try {
            opts.onProgress?.(m.event);
          } catch {
            // A throwing listener must not break the load.
          }
        } else if (m.type === 'ready') {
          cleanup();
          resolve(m.info);
        } else if (m.type === 'load-error') {
          cleanup();
          void worker.terminate();
          reject(fromWire(m.error));
        }
      };
      const onErr = (e: Error): void => {
        cleanup();
        reject(new DimooError(`model worker failed to start: ${e.message}`, 'E_WORKER'));
      };
      const onExit = (code: number): void => {
        cleanup();
        reject(new DimooError(`model worker exited during load (code ${code})`, 'E_WORKER'));
      };
      const cleanup = (): void => {
        worker.off('message', onMsg);
        worker.off('error', onErr);
        worker.off('exit', onExit);
      };
      worker.on('message', onMsg);
      worker.on('error', onErr);
      worker.on('exit', onExit);
    });
    return new WorkerDimoo(worker, info, abortFlags);
  }

  private onMessage(m: FromWorker): void {
    if (m.type === 'disposed') {
      this.onDisposed?.();
    } else if (m.type === 'progress') {
      const p = this.pending.get(m.id);
      try {
        p?.onProgress?.(m.event);
      } catch {
        // A throwing listener must not take the job down with it.
      }
    } else if (m.type === 'result' || m.type === 'error') {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (p.onAbort) p.signal?.removeEventListener('abort', p.onAbort);
      if (m.type === 'result') p.resolve(m.value);
      else if (m.error.name === 'AbortError' && p.signal?.aborted) p.reject(p.signal.reason);
      else p.reject(fromWire(m.error));
    }
  }

  private fail(e: Error): void {
    if (this.dead) return;
    this.dead = e;
    for (const p of this.pending.values()) {
      if (p.onAbort) p.signal?.removeEventListener('abort', p.onAbort);
      p.reject(e);
    }
    this.pending.clear();
  }

  private call<T>(method: Method, args: unknown[], opts: RunOptions = {}): Promise<T> {
    if (this.dead) return Promise.reject(this.dead);
    if (this.disposing) return Promise.reject(new DimooError('model is disposed', 'E_WORKER'));
    const { signal } = opts;
    if (signal?.aborted) return Promise.reject(signal.reason);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const p: Pending = {
        resolve: resolve as (v: unknown) => void,
        reject,
        onProgress: opts.onProgress,
        signal,
      };
      if (signal) {
        p.onAbort = () => {
          // The flag is what a busy worker sees; the message covers an idle one.
          Atomics.store(this.flags, id % ABORT_SLOTS, id);
          this.post({ type: 'abort', id });
        };
        signal.addEventListener('abort', p.onAbort, { once: true });
      }
      this.pending.set(id, p);
      this.post({
        type: 'call',
        id,
        method,
        args,
        progress: opts.onProgress !== undefined,
        preview: opts.preview === true,
      });
    });
  }

  private post(m: ToWorker): void {
    this.worker.postMessage(m);
  }

  private job<T>(method: JobMethod, params: unknown, opts?: RunOptions): Promise<T> {
    return this.call<T>(method, [params], opts);
  }

  generate(p: GenerateParams, o?: RunOptions): Promise<ImageResult> {
    return this.job('generate', p, o);
  }
  edit(p: EditParams, o?: RunOptions): Promise<ImageResult> {
    return this.job('edit', p, o);
  }
  inpaint(p: PaintParams, o?: RunOptions): Promise<ImageResult> {
    return this.job('inpaint', p, o);
  }
  outpaint(p: PaintParams, o?: RunOptions): Promise<ImageResult> {
    return this.job('outpaint', p, o);
  }
  retouch(p: RetouchParams, o?: RunOptions): Promise<ImageResult> {
    return this.job('retouch', p, o);
  }
  understand(p: UnderstandParams, o?: RunOptions): Promise<UnderstandResult> {
    return this.job('understand', p, o);
  }
  encodeImage(input: ImageInput, opts?: EncodeOptions): Promise<TokenGrid> {
    return this.call('encodeImage', [input, opts]);
  }
  decodeTokens(grid: TokenGrid): Promise<RgbImage> {
    return this.call('decodeTokens', [grid]);
  }
  info(): ModelInfo {
    return this.modelInfo;
  }

  /** False once the worker thread has died or the model was disposed. */
  get alive(): boolean {
    return this.dead === null;
  }

  /** Calls in flight (a job plus, e.g., preview decodes). */
  get busy(): number {
    return this.pending.size;
  }

  /** Stops running jobs, releases the model and ends the thread. */
  dispose(): Promise<void> {
    if (this.disposing) return this.disposing;
    this.disposing = (async () => {
      if (!this.dead) {
        for (const id of this.pending.keys()) Atomics.store(this.flags, id % ABORT_SLOTS, id);
        const done = new Promise<void>((resolve) => {
          const t = setTimeout(resolve, 5000);
          this.onDisposed = () => {
            clearTimeout(t);
            resolve();
          };
          this.worker.once('exit', () => {
            clearTimeout(t);
            resolve();
          });
        });
        this.post({ type: 'dispose' });
        await done;
      }
      await this.worker.terminate();
      this.fail(new DimooError('model is disposed', 'E_WORKER'));
    })();
    return this.disposing;
  }
}
