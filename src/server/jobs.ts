/**
 * The job queue: one job at a time on the model, a bounded number waiting,
 * every job cancellable (waiting: dropped at once; running: aborted between
 * steps, and counted as finished only when the model has really stopped, so
 * two jobs never share the model).
 */
import { randomBytes } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import { toHttpFailure, RequestError, type ErrorBody } from './errors.js';

const unixSeconds = (ms: number): number => Math.floor(ms / 1000);

export type JobStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';

export interface JobProgress {
  step: number;
  total: number;
  masked?: number;
  text?: string;
  /** Which answer `text` belongs to, when a job asks for several. */
  index?: number;
}

export interface JobEvent {
  event: 'queued' | 'started' | 'progress' | 'preview' | 'done' | 'failed' | 'cancelled';
  data: unknown;
}

export interface JobContext {
  signal: AbortSignal;
  progress(p: JobProgress): void;
  /** A preview image (data URL) for the step just finished. */
  preview(step: number, total: number, dataUrl: string): void;
  /** Whether anyone is listening for previews (skip decoding otherwise). */
  readonly wantsPreview: boolean;
}

export type JobRunner = (ctx: JobContext) => Promise<unknown>;

type Listener = (e: JobEvent) => void;

const TERMINAL: ReadonlySet<JobStatus> = new Set(['succeeded', 'failed', 'cancelled']);

export const JOB_ID_RE = /^job_[0-9a-f]{24}$/;

export function newJobId(): string {
  return `job_${randomBytes(12).toString('hex')}`;
}

export class Job {
  readonly id: string;
  status: JobStatus = 'queued';
  createdAt = Date.now();
  startedAt?: number;
  finishedAt?: number;
  progress?: JobProgress;
  lastPreview?: { step: number; total: number; image: string };
  result?: unknown;
  error?: ErrorBody;
  /** HTTP status a synchronous caller gets for `error`. */
  errorStatus?: number;
  cancelRequested = false;
  readonly controller = new AbortController();
  /** Settles (never rejects) when the job reaches a terminal status. */
  readonly done: Promise<void>;
  private settle!: () => void;
  private readonly listeners = new Set<Listener>();

  constructor(
    readonly task: string,
    readonly run: JobRunner,
    readonly meta: Record<string, unknown> = {},
    id?: string,
  ) {
    this.id = id ?? newJobId();
    this.done = new Promise((r) => (this.settle = r));
  }

  get finished(): boolean {
    return TERMINAL.has(this.status);
  }

  subscribe(fn: Listener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  get listenerCount(): number {
    return this.listeners.size;
  }

  emit(event: JobEvent['event'], data: unknown): void {
    for (const fn of this.listeners) {
      try {
        fn({ event, data });
      } catch {
        // One broken stream must not affect the job or the other listeners.
      }
    }
  }

  finish(status: 'succeeded' | 'failed' | 'cancelled'): void {
    this.status = status;
    this.finishedAt = Date.now();
    this.emit(status === 'succeeded' ? 'done' : status, this.toJSON());
    this.listeners.clear();
    this.settle();
  }

  toJSON(): Record<string, unknown> {
    return {
      id: this.id,
      object: 'dimoo.job',
      task: this.task,
      status: this.status,
      // Unix seconds, as OpenAI's `created` fields.
      created_at: unixSeconds(this.createdAt),
      started_at: this.startedAt === undefined ? null : unixSeconds(this.startedAt),
      finished_at: this.finishedAt === undefined ? null : unixSeconds(this.finishedAt),
      cancel_requested: this.cancelRequested,
      progress: this.progress ?? null,
      ...(this.result !== undefined ? { result: this.result } : {}),
      ...(this.error ? { error: this.error } : {}),
    };
  }
}

export interface QueueOptions {
  maxQueue: number;
  jobTimeoutMs: number;
  retentionMs: number;
  /** Finished jobs kept for status queries (oldest dropped first). */
  maxFinished?: number;
  log?: FastifyBaseLogger;
}

export class JobQueue {
  private readonly waiting: Job[] = [];
  private current: Job | null = null;
  private readonly jobs = new Map<string, Job>();
  /** Moving average of job durations, for Retry-After. */
  private avgMs = 5000;
  private closed = false;

  constructor(private readonly opts: QueueOptions) {}

  get running(): Job | null {
    return this.current;
  }

  get waitingCount(): number {
    return this.waiting.length;
  }

  /** Seconds a client refused with 429 should wait before trying again. */
  retryAfterSeconds(): number {
    return Math.max(1, Math.min(3600, Math.ceil(((this.waiting.length + 1) * this.avgMs) / 1000)));
  }

  /** Queues a job, or throws a 429 RequestError when the queue is full. */
  submit(task: string, run: JobRunner, meta: Record<string, unknown> = {}): Job {
    if (this.closed) throw new RequestError('the server is shutting down', 'E_SHUTDOWN', 503);
    if (this.waiting.length >= this.opts.maxQueue && this.current !== null) {
      const s = this.retryAfterSeconds();
      throw new RequestError(
        `the job queue is full (${this.opts.maxQueue} waiting); retry in about ${s} s`,
        'E_QUEUE_FULL',
        429,
        undefined,
        { 'retry-after': String(s) },
      );
    }
    const job = new Job(task, run, meta);
    this.jobs.set(job.id, job);
    this.waiting.push(job);
    this.prune();
    job.emit('queued', { position: this.waiting.length });
    queueMicrotask(() => this.pump());
    return job;
  }

  get(id: string): Job | undefined {
    return this.jobs.get(id);
  }

  /** Position in the queue (1 = next), 0 when running or finished. */
  position(job: Job): number {
    return this.waiting.indexOf(job) + 1;
  }

  cancel(job: Job): void {
    if (job.finished) return;
    job.cancelRequested = true;
    const i = this.waiting.indexOf(job);
    if (i >= 0) {
      this.waiting.splice(i, 1);
      job.finish('cancelled');
      return;
    }
    job.controller.abort(new DOMException('cancelled', 'AbortError'));
  }

  /** Cancels everything and waits for the running job to stop. */
  async close(): Promise<void> {
    this.closed = true;
    for (const j of [...this.waiting]) this.cancel(j);
    const cur = this.current;
    if (cur) {
      this.cancel(cur);
      await cur.done;
    }
  }

  private pump(): void {
    if (this.current || this.waiting.length === 0) return;
    const job = this.waiting.shift()!;
    this.current = job;
    void this.execute(job).finally(() => {
      this.current = null;
      this.pump();
    });
  }

  private async execute(job: Job): Promise<void> {
    const log = this.opts.log;
    job.status = 'running';
    job.startedAt = Date.now();
    job.emit('started', { started_at: unixSeconds(job.startedAt) });
    log?.info({ job: job.id, task: job.task, ...job.meta }, 'job started');
    const timer = setTimeout(
      () =>
        job.controller.abort(
          new RequestError(
            `the job ran longer than ${Math.round(this.opts.jobTimeoutMs / 1000)} s`,
            'E_TIMEOUT',
            408,
          ),
        ),
      this.opts.jobTimeoutMs,
    );
    const ctx: JobContext = {
      signal: job.controller.signal,
      progress: (p) => {
        job.progress = p;
        job.emit('progress', p);
      },
      preview: (step, total, image) => {
        if (job.finished) return;
        job.lastPreview = { step, total, image };
        job.emit('preview', job.lastPreview);
      },
      get wantsPreview() {
        return job.listenerCount > 0;
      },
    };
    try {
      job.result = await job.run(ctx);
      job.finish('succeeded');
    } catch (e) {
      const reason: unknown = job.controller.signal.aborted ? job.controller.signal.reason : e;
      if (job.controller.signal.aborted && !(reason instanceof RequestError)) {
        job.finish('cancelled');
      } else {
        const f = toHttpFailure(reason);
        job.error = f.body.error;
        job.errorStatus = f.status;
        if (f.internal) log?.error({ job: job.id, err: reason }, 'job failed');
        job.finish('failed');
      }
    } finally {
      clearTimeout(timer);
    }
    const ms = job.finishedAt! - job.startedAt;
    this.avgMs = 0.7 * this.avgMs + 0.3 * ms;
    log?.info({ job: job.id, task: job.task, status: job.status, ms }, 'job finished');
  }

  /** Drops finished jobs that are too old or too many. */
  private prune(): void {
    const max = this.opts.maxFinished ?? 512;
    const cutoff = Date.now() - this.opts.retentionMs;
    let finished = 0;
    for (const j of this.jobs.values()) if (j.finished) finished++;
    for (const [id, j] of this.jobs) {
      if (!j.finished) continue;
      if (j.finishedAt! < cutoff || finished > max) {
        this.jobs.delete(id);
        finished--;
      }
    }
  }
}
