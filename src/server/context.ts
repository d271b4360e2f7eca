/**
 * What every route shares: the server state on `app.dimoo`, the error
 * reply, waiting on a job for a synchronous request, and who sent a request.
 * Route files import this, never app.ts (which imports them).
 */
import { createHash } from 'node:crypto';
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { JobBackend } from './backend.js';
import { RequestError, toHttpFailure } from './errors.js';
import type { Job, JobQueue } from './jobs.js';
import type { ServerLimits } from './limits.js';
import type { ResultStore } from './store.js';

export interface ServerState {
  /** Where jobs run: the model in this process, or a Redis queue (cluster/). */
  jobs: JobBackend;
  /** Embedded mode's in-process queue (in queue mode an idle one: jobs are in Redis). */
  queue: JobQueue;
  store: ResultStore;
  log: FastifyBaseLogger;
  limits: ServerLimits;
  previewEvery: number;
  startedAt: number;
}

declare module 'fastify' {
  interface FastifyInstance {
    dimoo: ServerState;
  }
}

export function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** The API key a request presents (Bearer or X-Api-Key), if any. */
export function presentedKey(
  headers: Record<string, string | string[] | undefined>,
): string | undefined {
  const auth = headers['authorization'];
  if (typeof auth === 'string') {
    const m = /^Bearer\s+(.+)$/i.exec(auth.trim());
    if (m) return m[1]!.trim();
  }
  const x = headers['x-api-key'];
  return typeof x === 'string' ? x.trim() : undefined;
}

/** Who sent a request, for per-key limits: a short hash of its API key (never the key itself). */
export function ownerOf(req: FastifyRequest): string | undefined {
  const key = presentedKey(req.headers);
  return key === undefined ? undefined : digest(key).toString('hex').slice(0, 16);
}

export function sendFailure(reply: FastifyReply, e: unknown): FastifyReply {
  const f = toHttpFailure(e);
  for (const [k, v] of Object.entries(f.headers)) reply.header(k, v);
  if (f.internal) reply.log.error({ err: e }, 'request failed');
  return reply.code(f.status).send(f.body);
}

/**
 * Waits for a job on behalf of a synchronous request; if the client goes
 * away first, the job is cancelled (nobody would get its result).
 */
export async function awaitJob(
  app: FastifyInstance,
  job: Job,
  reply: FastifyReply,
): Promise<unknown> {
  const onClose = (): void => {
    if (!reply.raw.writableFinished && !job.finished) {
      reply.log.info({ job: job.id }, 'client went away; cancelling its job');
      void app.dimoo.jobs.cancel(job).catch(() => undefined);
    }
  };
  reply.raw.on('close', onClose);
  try {
    await job.done;
  } finally {
    reply.raw.off('close', onClose);
  }
  if (job.status === 'succeeded') return job.result;
  if (job.status === 'cancelled')
    throw new RequestError('the job was cancelled', 'E_CANCELLED', 409);
  const err = job.error!;
  throw new RequestError(
    err.message,
    err.dimoo_code,
    job.errorStatus ?? 400,
    err.param ?? undefined,
  );
}
