/**
 * A model worker: takes jobs for its model from the Redis queue (BullMQ) and
 * runs them with the same executor as the embedded server (`runJobSpec`).
 *
 * - Each slot of `concurrency` is its own loaded model (its own thread), so
 *   two jobs never share one model.
 * - Progress and previews go out as BullMQ job progress; result PNGs go to
 *   the shared result store; the job's return value is the client's JSON.
 * - Cancels arrive on a pub/sub channel and abort the job between two steps.
 * - A payload that is not a valid job fails that job with the problem named;
 *   the worker keeps serving.
 * - `stop()` takes no new jobs, lets running ones finish (or, past
 *   `drainMs`, hands them back to the queue for another worker), and closes.
 * - A worker that dies loses its lock; BullMQ's stalled check on the other
 *   workers puts the job back in the queue.
 */
import { randomBytes } from 'node:crypto';
import { UnrecoverableError, WaitingError, Worker, type Job as BullJob } from 'bullmq';
import type { Redis } from 'ioredis';
import type { DimooApi } from '../../pipelines/types.js';
import { isErrorCode } from '../../errors.js';
import { errorBody, RequestError, toHttpFailure, type ErrorBody } from '../errors.js';
import { specFromWire } from '../job-spec.js';
import type { JobContext, JobProgress } from '../jobs.js';
import type { ResultStore } from '../store.js';
import { runJobSpec, type TaskEnv } from '../tasks.js';
import { DEFAULT_PREFIX, keys, queueName } from './keys.js';
import { blockingConnection, failFastConnection, ready, type RedisTarget } from './redis.js';
import { Heartbeat } from './registry.js';
import { DirResultStore, RedisResultStore } from './result-stores.js';

/** The few logger methods used (pino's and fastify's loggers fit). */
export interface WorkerLog {
  info(o: object, msg?: string): void;
  warn(o: object, msg?: string): void;
  error(o: object, msg?: string): void;
}

export interface QueueTimings {
  /** How long a job's lock lasts without renewal (default 30 s). A dead worker's job is reclaimed after about this long. */
  lockDurationMs?: number;
  /** How often workers look for stalled jobs (default 30 s). */
  stalledIntervalMs?: number;
  /** Registry heartbeat (default 2 s; a worker counts as gone after 3 missed). */
  heartbeatMs?: number;
}

export interface QueueWorkerOptions extends QueueTimings {
  redis: RedisTarget;
  /** One loaded model per concurrency slot (all of the same checkpoint). */
  models: DimooApi[];
  /** Results: kept in Redis for `resultTtlMs` (default) or written to this shared folder. */
  resultsDir?: string;
  resultTtlMs: number;
  jobTimeoutMs: number;
  /** On stop, hand running jobs back after this long (default: wait for them). */
  drainMs?: number;
  prefix?: string;
  log: WorkerLog;
}

export interface RunningQueueWorker {
  id: string;
  model: string;
  /** Stops taking jobs, finishes (or hands back) running ones, disconnects. Does not dispose the models. */
  stop(): Promise<void>;
}

/** The failure a job records: JSON so the API server can give the client the same error as an embedded run. */
export interface WireFailure {
  status: number;
  error: ErrorBody;
  cancelled?: boolean;
}

const CANCELLED = 'cancelled by the client';
const HANDBACK = 'worker stopping: job handed back';

export async function startQueueWorker(o: QueueWorkerOptions): Promise<RunningQueueWorker> {
  if (o.models.length === 0) throw new Error('startQueueWorker: no model');
  const prefix = o.prefix ?? DEFAULT_PREFIX;
  const info = o.models[0]!.info();
  const id = `w_${randomBytes(6).toString('hex')}`;
  const cmd = failFastConnection(o.redis, `dimoo-worker-${id}`);
  const bullConn = blockingConnection(o.redis, `dimoo-worker-${id}-bull`);
  const sub = blockingConnection(o.redis, `dimoo-worker-${id}-sub`);
  for (const r of [cmd, bullConn, sub]) r.on('error', () => undefined); // reconnects on its own
  await ready(cmd);
  const store: ResultStore = o.resultsDir
    ? new DirResultStore(o.resultsDir, o.resultTtlMs)
    : new RedisResultStore(cmd, prefix, o.resultTtlMs);

  const free = [...o.models];
  const running = new Map<string, AbortController>();

  await sub.subscribe(keys.cancelChannel(prefix));
  sub.on('message', (_ch: string, jobId: string) => {
    running.get(jobId)?.abort(new DOMException(CANCELLED, 'AbortError'));
  });

  const processor = async (job: BullJob, token?: string): Promise<unknown> => {
    const jobId = job.id!;
    const ac = new AbortController();
    running.set(jobId, ac);
    const api = free.pop()!;
    const t0 = Date.now();
    const timer = setTimeout(
      () =>
        ac.abort(
          new RequestError(
            `the job ran longer than ${Math.round(o.jobTimeoutMs / 1000)} s`,
            'E_TIMEOUT',
            408,
          ),
        ),
      o.jobTimeoutMs,
    );
    try {
      if ((await cmd.exists(keys.cancelled(prefix, jobId))) === 1) throw abortReason(CANCELLED);
      const spec = specFromWire(job.data);
      o.log.info({ job: jobId, task: spec.task, attempt: job.attemptsStarted }, 'job started');
      const env: TaskEnv = { api, store, log: o.log as TaskEnv['log'] };
      // Progress updates are fire-and-forget (one connection keeps them in order); a lost one is not worth failing a job for.
      const send = (p: unknown): void =>
        void job.updateProgress(p as object).catch(() => undefined);
      const ctx: JobContext = {
        signal: ac.signal,
        progress: (p: JobProgress) => send({ kind: 'progress', ...p }),
        preview: (step, total, image) => send({ kind: 'preview', step, total, image }),
        wantsPreview: true,
      };
      const result = await runJobSpec(env, ctx, spec);
      o.log.info({ job: jobId, task: spec.task, ms: Date.now() - t0 }, 'job finished');
      return result;
    } catch (e) {
      const reason: unknown = ac.signal.aborted ? ac.signal.reason : e;
      if (isAbort(reason, HANDBACK) && token) {
        await job.moveToWait(token);
        o.log.info({ job: jobId }, 'job handed back to the queue');
        throw new WaitingError();
      }
      const failure: WireFailure = isAbort(reason, CANCELLED)
        ? {
            status: 409,
            error: errorBody(409, 'the job was cancelled', 'E_CANCELLED'),
            cancelled: true,
          }
        : (() => {
            const f = toHttpFailure(reason);
            if (f.internal) o.log.error({ job: jobId, err: reason }, 'job failed');
            else
              o.log.warn(
                { job: jobId, code: f.body.error.dimoo_code, msg: f.body.error.message },
                'job failed',
              );
            return {
              status: f.status,
              error: { ...f.body.error, param: f.body.error.param ?? null },
            };
          })();
      // Unrecoverable: a job that failed on its own terms is not retried (a dead worker's job is, by the stalled check).
      throw new UnrecoverableError(JSON.stringify(failure));
    } finally {
      clearTimeout(timer);
      running.delete(jobId);
      free.push(api);
    }
  };

  const worker = new Worker(queueName(info.name), processor, {
    connection: bullConn,
    prefix,
    concurrency: o.models.length,
    maxStalledCount: 2,
    ...(o.lockDurationMs !== undefined ? { lockDuration: o.lockDurationMs } : {}),
    ...(o.stalledIntervalMs !== undefined ? { stalledInterval: o.stalledIntervalMs } : {}),
    autorun: false,
  });
  worker.on('error', (err) => o.log.warn({ err: String(err) }, 'queue worker error (retrying)'));
  void worker.run().catch((err: unknown) => o.log.error({ err }, 'queue worker stopped'));
  await worker.waitUntilReady();

  const hb = new Heartbeat(cmd, prefix, Heartbeat.record(info, o.models.length, id), o.heartbeatMs);
  await hb.start();
  o.log.info(
    { worker: id, model: info.name, queue: o.redis.display, concurrency: o.models.length },
    'worker ready',
  );

  let stopping: Promise<void> | null = null;
  return {
    id,
    model: info.name,
    stop: () =>
      (stopping ??= (async () => {
        await hb.stop();
        const drain = worker.close();
        let timer: NodeJS.Timeout | undefined;
        if (o.drainMs !== undefined && running.size > 0) {
          timer = setTimeout(() => {
            for (const ac of running.values()) ac.abort(new DOMException(HANDBACK, 'AbortError'));
          }, o.drainMs);
        }
        await drain;
        clearTimeout(timer);
        // BullMQ does not close connections it was given; a quit fails while Redis is away, so disconnect too.
        for (const r of [sub, cmd, bullConn]) {
          await r.quit().catch(() => undefined);
          r.disconnect();
        }
      })()),
  };
}

function abortReason(msg: string): DOMException {
  return new DOMException(msg, 'AbortError');
}

function isAbort(e: unknown, msg: string): boolean {
  return e instanceof DOMException && e.name === 'AbortError' && e.message === msg;
}

/** The failure a job recorded, or a generic one for reasons written by someone else. */
export function parseFailure(failedReason: string | undefined): WireFailure {
  try {
    const f = JSON.parse(failedReason ?? '') as WireFailure;
    if (
      typeof f.status === 'number' &&
      typeof f.error?.message === 'string' &&
      isErrorCode(f.error.dimoo_code)
    )
      return { ...f, error: { ...f.error, param: f.error.param ?? null } };
  } catch {
    // Not ours: fall through.
  }
  return {
    status: 500,
    error: errorBody(
      500,
      `the job failed on its worker: ${String(failedReason ?? 'unknown reason').slice(0, 500)}`,
      'E_WORKER',
    ),
  };
}

export type { Redis };
