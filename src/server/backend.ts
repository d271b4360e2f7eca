/**
 * Where jobs run. Routes validate a request, build a JobSpec and hand it to
 * a JobBackend; they never see whether the model is in this process
 * (`LocalBackend`) or behind a Redis queue on other machines
 * (`cluster/queue-backend.ts`). Both hand back `Job` objects whose status,
 * progress, previews and result events the routes stream as they are.
 */
import type { DimooApi, TaskDefaults } from '../pipelines/types.js';
import type { FastifyBaseLogger } from 'fastify';
import { RequestError } from './errors.js';
import type { JobSpec } from './job-spec.js';
import { Job, JobQueue } from './jobs.js';
import type { ServerLimits } from './limits.js';
import { BlobStore, type ResultStore } from './store.js';
import { runJobSpec } from './tasks.js';

/** A model a request can name. */
export interface ModelEntry {
  id: string;
  hasVq: boolean;
  /** Pixels per token side and codebook size: what a token grid for this model must fit. */
  vqScale: number;
  codebookSize: number;
  /** The checkpoint's request defaults (sizes, understanding lengths). */
  defaults: TaskDefaults;
  device: string;
  /** Unix seconds (for /v1/models). */
  created: number;
  /** Live workers serving it (queue mode). */
  workers?: number;
}

export interface SubmitOptions {
  /** Logged with the job (sizes, steps). */
  meta?: Record<string, unknown>;
  /** Who asked (a hash of the API key), for per-key limits. */
  owner?: string;
}

export interface ModelLoad {
  model: string;
  waiting: number;
  running: number;
  workers: number;
}

export interface BackendHealth {
  ok: boolean;
  body: Record<string, unknown>;
}

export interface JobBackend {
  /**
   * The model a request's `model` field names; absent, empty or "dimoo" mean
   * the default one. Unknown: 404; known but nothing can run it now: 503.
   */
  resolveModel(field: unknown): Promise<ModelEntry>;
  /** Models that can take jobs now. */
  models(): Promise<ModelEntry[]>;
  /** What /v1/models lists: the models, then each alias (under its own id) that reaches one. */
  catalog(): Promise<ModelEntry[]>;
  /** Queues a job, or throws 429 (queue full) / 503 (nothing to run it). */
  submit(model: ModelEntry, spec: JobSpec, opts?: SubmitOptions): Promise<Job>;
  get(id: string): Promise<Job | undefined>;
  /** Waiting: dropped at once; running: aborted at the next step. */
  cancel(job: Job): Promise<void>;
  /** 1 = next to run; 0 when running or finished. */
  position(job: Job): Promise<number>;
  health(): Promise<BackendHealth>;
  /** Queue depth and live workers per model (for /metrics). */
  snapshot(): Promise<ModelLoad[]>;
  /** Result PNGs, readable by `/v1/files/...`. */
  readonly store: ResultStore;
  close(): Promise<void>;
}

export function modelNotFound(field: unknown, available: string[]): RequestError {
  return new RequestError(
    `model ${JSON.stringify(field)} is not served here (available: ${available.join(', ') || 'none'})`,
    'model_not_found',
    404,
    'model',
  );
}

/** One model in this process: today's embedded server. */
export class LocalBackend implements JobBackend {
  readonly store: BlobStore;
  /** The in-process queue (tests look at it). */
  readonly queue: JobQueue;
  private readonly entry: ModelEntry;
  private readonly aliases: string[];

  constructor(
    private readonly api: DimooApi,
    private readonly limits: ServerLimits,
    private readonly log: FastifyBaseLogger,
    aliases: string[] = [],
  ) {
    const info = api.info();
    this.store = new BlobStore(limits.storeBytes, limits.retentionMs);
    this.queue = new JobQueue({
      maxQueue: limits.maxQueue,
      jobTimeoutMs: limits.jobTimeoutMs,
      retentionMs: limits.retentionMs,
      log,
    });
    this.entry = {
      id: info.name,
      hasVq: info.hasVq,
      vqScale: info.vqScale,
      codebookSize: info.codebookSize,
      defaults: info.defaults,
      device: info.device,
      created: Math.floor(Date.now() / 1000),
    };
    this.aliases = [info.name, 'dimoo', ...aliases];
  }

  async resolveModel(field: unknown): Promise<ModelEntry> {
    if (field === undefined || field === null || field === '') return this.entry;
    if (typeof field !== 'string' || !this.aliases.includes(field))
      throw modelNotFound(field, this.aliases);
    return this.entry;
  }

  async models(): Promise<ModelEntry[]> {
    return [this.entry];
  }

  async catalog(): Promise<ModelEntry[]> {
    // The checkpoint's own name first, then every alias a request may use ("dimoo" is implied).
    return [...new Set([this.entry.id, ...this.aliases.slice(2)])].map((id) => ({
      ...this.entry,
      id,
    }));
  }

  async submit(_model: ModelEntry, spec: JobSpec, opts: SubmitOptions = {}): Promise<Job> {
    const env = { api: this.api, store: this.store, log: this.log };
    return this.queue.submit(spec.task, (ctx) => runJobSpec(env, ctx, spec), opts.meta ?? {});
  }

  async get(id: string): Promise<Job | undefined> {
    return this.queue.get(id);
  }

  async cancel(job: Job): Promise<void> {
    this.queue.cancel(job);
  }

  async position(job: Job): Promise<number> {
    return this.queue.position(job);
  }

  async health(): Promise<BackendHealth> {
    const info = this.api.info();
    // A WorkerDimoo whose thread died cannot run anything: say so to load balancers.
    const alive = (this.api as { alive?: boolean }).alive !== false;
    return {
      ok: alive,
      body: {
        status: alive ? 'ok' : 'model worker stopped',
        model: info.name,
        has_vq: info.hasVq,
        device: info.device,
        // The model's own picture size (its generation_config.json): the web page starts there.
        default_size: [info.defaults.t2i.width, info.defaults.t2i.height],
        queue: {
          running: this.queue.running ? 1 : 0,
          waiting: this.queue.waitingCount,
          max_waiting: this.limits.maxQueue,
        },
      },
    };
  }

  async snapshot(): Promise<ModelLoad[]> {
    return [
      {
        model: this.entry.id,
        waiting: this.queue.waitingCount,
        running: this.queue.running ? 1 : 0,
        workers: (this.api as { alive?: boolean }).alive === false ? 0 : 1,
      },
    ];
  }

  close(): Promise<void> {
    return this.queue.close();
  }
}

/**
 * Adds what every backend needs around `submit`: per-API-key limits on
 * unfinished jobs (counted by this API server) and a hook that sees every job
 * (metrics).
 */
export class AccountedBackend implements JobBackend {
  private readonly unfinished = new Map<string, number>();

  constructor(
    readonly inner: JobBackend,
    private readonly maxJobsPerKey: number,
    private readonly onJob: (model: ModelEntry, job: Job) => void,
  ) {}

  get store(): ResultStore {
    return this.inner.store;
  }

  async submit(model: ModelEntry, spec: JobSpec, opts: SubmitOptions = {}): Promise<Job> {
    const owner = opts.owner;
    if (this.maxJobsPerKey > 0 && owner !== undefined) {
      const n = this.unfinished.get(owner) ?? 0;
      if (n >= this.maxJobsPerKey)
        throw new RequestError(
          `this API key already has ${n} unfinished jobs (limit ${this.maxJobsPerKey}); retry when one is done`,
          'E_KEY_LIMIT',
          429,
          undefined,
          { 'retry-after': '5' },
        );
    }
    const job = await this.inner.submit(model, spec, opts);
    if (owner !== undefined) {
      this.unfinished.set(owner, (this.unfinished.get(owner) ?? 0) + 1);
      void job.done.then(() => {
        const left = (this.unfinished.get(owner) ?? 1) - 1;
        if (left > 0) this.unfinished.set(owner, left);
        else this.unfinished.delete(owner);
      });
    }
    this.onJob(model, job);
    return job;
  }

  resolveModel(field: unknown): Promise<ModelEntry> {
    return this.inner.resolveModel(field);
  }
  models(): Promise<ModelEntry[]> {
    return this.inner.models();
  }
  catalog(): Promise<ModelEntry[]> {
    return this.inner.catalog();
  }
  get(id: string): Promise<Job | undefined> {
    return this.inner.get(id);
  }
  cancel(job: Job): Promise<void> {
    return this.inner.cancel(job);
  }
  position(job: Job): Promise<number> {
    return this.inner.position(job);
  }
  health(): Promise<BackendHealth> {
    return this.inner.health();
  }
  snapshot(): Promise<ModelLoad[]> {
    return this.inner.snapshot();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
