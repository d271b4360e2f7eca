/**
 * `dimoo serve --queue redis://...`: jobs go to a BullMQ queue per model and
 * run on `dimoo worker` processes anywhere that reaches the same Redis.
 *
 * The server keeps a `Job` view of each job it watches (those it queued, and
 * those a client looked up by id), fed by BullMQ's queue events (active,
 * progress with previews, completed, failed, stalled); a slow poll of
 * unfinished views backs the events up across Redis restarts. Views are only
 * a cache: the job itself (state, progress, result) lives in Redis, so a
 * restarted server finds it by id.
 */
import type { FastifyBaseLogger } from 'fastify';
import { Job as BullJob, Queue, QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';
import {
  modelNotFound,
  type BackendHealth,
  type JobBackend,
  type ModelEntry,
  type ModelLoad,
  type SubmitOptions,
} from '../backend.js';
import { RequestError } from '../errors.js';
import { needsVq, specToWire, type JobSpec } from '../job-spec.js';
import { Job, newJobId, type JobProgress } from '../jobs.js';
import type { ServerLimits } from '../limits.js';
import type { ResultStore } from '../store.js';
import { DEFAULT_PREFIX, keys, queueName } from './keys.js';
import { blockingConnection, failFastConnection, ready, type RedisTarget } from './redis.js';
import { liveWorkers, type WorkerRecord } from './registry.js';
import { DirResultStore, RedisResultStore } from './result-stores.js';
import { parseFailure } from './worker.js';

export interface QueueBackendOptions {
  redis: RedisTarget;
  limits: ServerLimits;
  log: FastifyBaseLogger;
  /** Model for requests without `model` when several are served. */
  defaultModel?: string;
  /** Other names `model` may use: alias -> the model it stands for (undefined: as if none was named). */
  aliases?: ReadonlyMap<string, string | undefined>;
  /** Results folder shared with the workers (default: results in Redis). */
  resultsDir?: string;
  /** How long results and finished jobs are kept (default: limits.retentionMs). */
  resultTtlMs?: number;
  prefix?: string;
  /** Poll interval for unfinished job views (default 2 s). */
  reconcileMs?: number;
}

interface ModelQueue {
  queue: Queue;
  events: QueueEvents;
  /** The events' own connection: BullMQ does not close connections it was given. */
  eventsConn: Redis;
}

const NOOP_RUNNER = async (): Promise<never> => {
  throw new Error('a queued job runs on a worker');
};

function unavailable(what: string, e?: unknown): RequestError {
  const detail = e instanceof Error && e.message ? ` (${e.message})` : '';
  return new RequestError(
    `the job queue is unavailable: ${what}${detail}; retry shortly`,
    'E_QUEUE_UNAVAILABLE',
    503,
    undefined,
    { 'retry-after': '5' },
  );
}

export class QueueBackend implements JobBackend {
  readonly store: ResultStore;
  private readonly prefix: string;
  private readonly cmd: Redis;
  private readonly queues = new Map<string, ModelQueue>();
  private readonly views = new Map<string, Job>();
  /** Which model each watched job belongs to. */
  private readonly jobModel = new Map<string, string>();
  private readonly ttlMs: number;
  private workersCache: { at: number; list: WorkerRecord[] } | null = null;
  private readonly reconcileTimer: NodeJS.Timeout;
  private avgMs = 5000;
  private closed = false;

  constructor(private readonly o: QueueBackendOptions) {
    this.prefix = o.prefix ?? DEFAULT_PREFIX;
    this.ttlMs = o.resultTtlMs ?? o.limits.retentionMs;
    this.cmd = failFastConnection(o.redis, 'dimoo-api');
    this.cmd.on('error', () => undefined); // reconnects on its own; requests meanwhile get 503
    this.store = o.resultsDir
      ? new DirResultStore(o.resultsDir, this.ttlMs)
      : new RedisResultStore(this.cmd, this.prefix, this.ttlMs);
    this.reconcileTimer = setInterval(() => void this.reconcile(), o.reconcileMs ?? 2000);
    this.reconcileTimer.unref();
  }

  /**
   * Live workers (cached for half a second: every request asks). An empty list is
   * never served from the cache, so a worker that has just come up is seen at once.
   */
  async workers(): Promise<WorkerRecord[]> {
    const now = Date.now();
    if (this.workersCache && this.workersCache.list.length > 0 && now - this.workersCache.at < 500)
      return this.workersCache.list;
    await this.connected();
    let list: WorkerRecord[];
    try {
      list = await liveWorkers(this.cmd, this.prefix);
    } catch (e) {
      throw unavailable('Redis did not answer', e);
    }
    this.workersCache = { at: now, list };
    for (const w of list) this.ensureQueue(w.model);
    return list;
  }

  /** A new server's connection may still be opening: wait a moment; a lost one fails fast with 503. */
  private async connected(): Promise<void> {
    if (this.cmd.status === 'ready') return;
    await ready(this.cmd, 1000).catch(() => {
      throw unavailable('Redis is not connected');
    });
  }

  async models(): Promise<ModelEntry[]> {
    const byModel = new Map<string, ModelEntry>();
    for (const w of await this.workers()) {
      const m = byModel.get(w.model);
      if (m) {
        m.workers = (m.workers ?? 0) + 1;
        m.created = Math.min(m.created, Math.floor(w.started_at / 1000));
      } else
        byModel.set(w.model, {
          id: w.model,
          hasVq: w.has_vq,
          vqScale: w.vq_scale,
          codebookSize: w.codebook_size,
          defaults: w.defaults,
          device: w.device,
          created: Math.floor(w.started_at / 1000),
          workers: 1,
        });
    }
    return [...byModel.values()].sort((a, b) => a.id.localeCompare(b.id));
  }

  async catalog(): Promise<ModelEntry[]> {
    const live = await this.models();
    const out = [...live];
    for (const alias of this.o.aliases?.keys() ?? []) {
      const m = await this.resolveModel(alias).catch(() => undefined);
      if (m && !out.some((x) => x.id === alias)) out.push({ ...m, id: alias });
    }
    return out;
  }

  async resolveModel(field: unknown): Promise<ModelEntry> {
    const live = await this.models();
    let name: string;
    if (typeof field === 'string' && this.o.aliases?.has(field)) {
      const target = this.o.aliases.get(field);
      if (target === undefined) field = undefined;
      else if (target !== field) field = target;
    }
    if (field === undefined || field === null || field === '' || field === 'dimoo') {
      if (this.o.defaultModel) name = this.o.defaultModel;
      else if (live.length === 1) return live[0]!;
      else if (live.length === 0) throw this.noWorkers(undefined);
      else
        throw new RequestError(
          `model: several models are served (${live.map((m) => m.id).join(', ')}); name one`,
          'E_PARAM',
          400,
          'model',
        );
    } else if (typeof field !== 'string')
      throw modelNotFound(
        field,
        live.map((m) => m.id),
      );
    else name = field;
    const m = live.find((x) => x.id === name);
    if (m) return m;
    // A model some worker served before (or the declared default) is only down; anything else does not exist.
    let known = name === this.o.defaultModel;
    if (!known) {
      try {
        known = (await this.cmd.sismember(keys.models(this.prefix), name)) === 1;
      } catch (e) {
        throw unavailable('Redis did not answer', e);
      }
    }
    if (!known)
      throw modelNotFound(
        name,
        live.map((x) => x.id),
      );
    throw this.noWorkers(name);
  }

  private noWorkers(name: string | undefined): RequestError {
    return new RequestError(
      name === undefined
        ? 'no model worker is connected to the job queue; retry when one is up'
        : `no live worker serves model ${JSON.stringify(name)} now; retry when one is up`,
      'E_NO_WORKERS',
      503,
      'model',
      { 'retry-after': '10' },
    );
  }

  private ensureQueue(model: string): ModelQueue {
    let q = this.queues.get(model);
    if (q) return q;
    const name = queueName(model);
    const queue = new Queue(name, { connection: this.cmd, prefix: this.prefix });
    queue.on('error', () => undefined);
    const eventsConn = blockingConnection(this.o.redis, `dimoo-api-events-${name}`);
    const events = new QueueEvents(name, { connection: eventsConn, prefix: this.prefix });
    events.on('error', () => undefined);
    events.on('active', ({ jobId }) => {
      const v = this.views.get(jobId);
      if (!v || v.finished) return;
      v.status = 'running';
      v.startedAt = Date.now();
      v.emit('started', { started_at: v.startedAt });
    });
    events.on('waiting', ({ jobId, prev }) => {
      // A stalled job (its worker died) is back in the queue: it will run again from the start.
      const v = this.views.get(jobId);
      if (v && !v.finished && prev) {
        v.status = 'queued';
        v.emit('queued', { requeued: true });
      }
    });
    events.on('progress', ({ jobId, data }) => {
      const v = this.views.get(jobId);
      if (v && !v.finished) applyProgress(v, data);
    });
    events.on('completed', ({ jobId, returnvalue }) => {
      const v = this.views.get(jobId);
      if (v && !v.finished) this.finishView(v, 'completed', returnvalue, undefined);
    });
    events.on('failed', ({ jobId, failedReason }) => {
      const v = this.views.get(jobId);
      if (v && !v.finished) this.finishView(v, 'failed', undefined, failedReason);
    });
    q = { queue, events, eventsConn };
    this.queues.set(model, q);
    return q;
  }

  private finishView(
    v: Job,
    state: 'completed' | 'failed' | 'cancelled',
    result: unknown,
    failedReason: string | undefined,
  ): void {
    if (v.finished) return;
    if (v.startedAt !== undefined) {
      const ms = Date.now() - v.startedAt;
      this.avgMs = 0.7 * this.avgMs + 0.3 * ms;
    }
    if (state === 'completed') {
      v.result = result;
      v.finish('succeeded');
    } else if (state === 'cancelled') {
      v.cancelRequested = true;
      v.finish('cancelled');
    } else {
      const f = parseFailure(failedReason);
      if (f.cancelled) {
        v.cancelRequested = true;
        v.finish('cancelled');
      } else {
        v.error = { ...f.error, param: f.error.param ?? null };
        v.errorStatus = f.status;
        v.finish('failed');
      }
    }
    // Finished views are dropped after a while; the job itself stays in Redis for its TTL.
    setTimeout(() => this.views.delete(v.id), 60_000).unref();
  }

  async submit(model: ModelEntry, spec: JobSpec, opts: SubmitOptions = {}): Promise<Job> {
    if (this.closed) throw new RequestError('the server is shutting down', 'E_SHUTDOWN', 503);
    if (needsVq(spec) && !model.hasVq)
      throw new RequestError('this model has no VQ-VAE', 'E_NO_VQ', 400);
    const { queue } = this.ensureQueue(model.id);
    let waiting: number;
    try {
      const c = await queue.getJobCounts('wait', 'prioritized', 'delayed');
      waiting = Object.values(c).reduce((a, b) => a + b, 0);
    } catch (e) {
      throw unavailable('Redis did not answer', e);
    }
    if (waiting >= this.o.limits.maxQueue) {
      const s = this.retryAfter(waiting, model.workers ?? 1);
      throw new RequestError(
        `the job queue of ${model.id} is full (${waiting} waiting); retry in about ${s} s`,
        'E_QUEUE_FULL',
        429,
        undefined,
        { 'retry-after': String(s) },
      );
    }
    const id = newJobId();
    const view = new Job(spec.task, NOOP_RUNNER, opts.meta ?? {}, id);
    this.views.set(id, view);
    this.jobModel.set(id, model.id);
    const ttlS = Math.ceil(this.ttlMs / 1000);
    try {
      await queue.add(
        spec.task,
        { ...specToWire(spec), meta: opts.meta ?? {} },
        {
          jobId: id,
          removeOnComplete: { age: ttlS },
          removeOnFail: { age: ttlS },
        },
      );
    } catch (e) {
      this.views.delete(id);
      throw unavailable('the job could not be queued', e);
    }
    view.emit('queued', { position: waiting + 1 });
    return view;
  }

  private retryAfter(waiting: number, workers: number): number {
    return Math.max(
      1,
      Math.min(3600, Math.ceil(((waiting + 1) * this.avgMs) / Math.max(1, workers) / 1000)),
    );
  }

  /** The BullMQ job and its model, searching every model's queue when the job was queued elsewhere. */
  private async findBull(id: string): Promise<{ job: BullJob; model: string } | undefined> {
    const known = this.jobModel.get(id);
    await this.connected();
    let models: string[];
    try {
      models = known ? [known] : await this.cmd.smembers(keys.models(this.prefix));
    } catch (e) {
      throw unavailable('Redis did not answer', e);
    }
    for (const model of models) {
      const { queue } = this.ensureQueue(model);
      let job: BullJob | undefined;
      try {
        job = await BullJob.fromId(queue, id);
      } catch (e) {
        throw unavailable('Redis did not answer', e);
      }
      if (job) {
        this.jobModel.set(id, model);
        return { job, model };
      }
    }
    return undefined;
  }

  async get(id: string): Promise<Job | undefined> {
    const have = this.views.get(id);
    if (have) return have;
    const found = await this.findBull(id);
    if (!found) return this.fromTombstone(id);
    // Register before reading the state, so no event falls between the two.
    const view = new Job(found.job.name, NOOP_RUNNER, {}, id);
    view.createdAt = found.job.timestamp;
    this.views.set(id, view);
    await this.syncView(view, found.job, this.ensureQueue(found.model).queue);
    return view;
  }

  private async fromTombstone(id: string): Promise<Job | undefined> {
    await this.connected();
    let raw: string | null;
    try {
      raw = await this.cmd.get(keys.tombstone(this.prefix, id));
    } catch (e) {
      throw unavailable('Redis did not answer', e);
    }
    if (!raw) return undefined;
    const t = JSON.parse(raw) as { task: string; created_at: number };
    const view = new Job(t.task, NOOP_RUNNER, {}, id);
    view.createdAt = t.created_at;
    view.cancelRequested = true;
    view.finish('cancelled');
    return view;
  }

  /** Brings a view up to the job's state in Redis (never backwards). */
  private async syncView(view: Job, job: BullJob, queue: Queue): Promise<void> {
    const state = await job.getState();
    if (view.finished) return;
    if ((state === 'completed' || state === 'failed') && job.finishedOn === undefined) {
      // Read before it finished (the state is newer than the job's fields): read its result now.
      job = (await BullJob.fromId(queue, job.id!)) ?? job;
      if (view.finished) return;
    }
    if (job.processedOn) view.startedAt = job.processedOn;
    if (job.progress && typeof job.progress === 'object') applyProgress(view, job.progress);
    if (state === 'completed') this.finishView(view, 'completed', job.returnvalue, undefined);
    else if (state === 'failed') this.finishView(view, 'failed', undefined, job.failedReason);
    else if (state === 'active') view.status = 'running';
    else view.status = 'queued';
  }

  /** Backs up the events: an event lost while Redis was away must not leave a client waiting forever. */
  private async reconcile(): Promise<void> {
    if (this.cmd.status !== 'ready') return;
    for (const v of [...this.views.values()]) {
      if (v.finished) continue;
      const model = this.jobModel.get(v.id);
      if (!model) continue;
      try {
        const { queue } = this.ensureQueue(model);
        const job = await BullJob.fromId(queue, v.id);
        if (job) await this.syncView(v, job, queue);
        else if (!v.finished) {
          const t = await this.fromTombstone(v.id);
          if (t) this.finishView(v, 'cancelled', undefined, undefined);
        }
      } catch {
        return; // Redis went away again; next round.
      }
    }
  }

  async cancel(view: Job): Promise<void> {
    if (view.finished) return;
    view.cancelRequested = true;
    const found = await this.findBull(view.id);
    if (!found) return;
    const ttl = Math.ceil(this.ttlMs);
    try {
      await this.cmd.set(keys.cancelled(this.prefix, view.id), '1', 'PX', ttl);
      await this.cmd.publish(keys.cancelChannel(this.prefix), view.id);
      const state = await found.job.getState();
      if (state === 'waiting' || state === 'prioritized' || state === 'delayed') {
        try {
          await found.job.remove();
        } catch {
          return; // A worker took it meanwhile: it sees the cancel mark and stops at once.
        }
        await this.cmd.set(
          keys.tombstone(this.prefix, view.id),
          JSON.stringify({ task: view.task, created_at: view.createdAt }),
          'PX',
          ttl,
        );
        this.finishView(view, 'cancelled', undefined, undefined);
      }
    } catch (e) {
      throw unavailable('the cancel could not be sent', e);
    }
  }

  async position(view: Job): Promise<number> {
    if (view.status !== 'queued') return 0;
    const model = this.jobModel.get(view.id);
    if (!model) return 1;
    try {
      // BullMQ pushes new jobs on the left and takes from the right.
      const key = `${this.prefix}:${queueName(model)}:wait`;
      const [len, idx] = await Promise.all([this.cmd.llen(key), this.cmd.lpos(key, view.id)]);
      return idx === null ? 1 : len - idx;
    } catch {
      return 1;
    }
  }

  async health(): Promise<BackendHealth> {
    let models: ModelEntry[];
    try {
      models = await this.models();
    } catch {
      return { ok: false, body: { status: 'job queue unreachable', queue: this.o.redis.display } };
    }
    const out = [];
    for (const m of models) {
      const c = await this.ensureQueue(m.id)
        .queue.getJobCounts('wait', 'active')
        .catch(() => ({ wait: -1, active: -1 }));
      out.push({
        id: m.id,
        workers: m.workers,
        has_vq: m.hasVq,
        device: m.device,
        waiting: c['wait'],
        running: c['active'],
      });
    }
    return {
      ok: true,
      body: {
        status: 'ok',
        // The embedded server's fields (the web page shows them), summed over the live models.
        model: out.map((m) => m.id).join(', ') || 'none (no live worker)',
        device: [...new Set(out.map((m) => m.device))].join(', ') || 'none',
        has_vq: out.length > 0 && out.every((m) => m.has_vq),
        queue: this.o.redis.display,
        models: out,
        max_waiting: this.o.limits.maxQueue,
      },
    };
  }

  /** Queue depth and workers per live model, for /metrics. */
  async snapshot(): Promise<ModelLoad[]> {
    const res = [];
    for (const m of await this.models()) {
      const c = await this.ensureQueue(m.id).queue.getJobCounts('wait', 'prioritized', 'active');
      res.push({
        model: m.id,
        waiting: (c['wait'] ?? 0) + (c['prioritized'] ?? 0),
        running: c['active'] ?? 0,
        workers: m.workers ?? 0,
      });
    }
    return res;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.reconcileTimer);
    // Jobs stay queued in Redis: another (or a restarted) server serves their results.
    for (const { queue, events, eventsConn } of this.queues.values()) {
      await events.close().catch(() => undefined);
      await queue.close().catch(() => undefined);
      eventsConn.disconnect();
    }
    await this.cmd.quit().catch(() => undefined);
    this.cmd.disconnect();
  }
}

function applyProgress(v: Job, data: unknown): void {
  if (!data || typeof data !== 'object') return;
  const d = data as Record<string, unknown>;
  if (d['kind'] === 'preview') {
    v.lastPreview = {
      step: Number(d['step']),
      total: Number(d['total']),
      image: String(d['image']),
    };
    v.emit('preview', v.lastPreview);
  } else if (d['kind'] === 'progress') {
    const { kind: _k, ...p } = d;
    void _k;
    if (v.status === 'queued') v.status = 'running';
    v.progress = p as unknown as JobProgress;
    v.emit('progress', v.progress);
  }
}
