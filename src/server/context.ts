/**
 * What every route shares: the server state on `app.dimoo`, the error
 * reply, waiting on a job for a synchronous request, and the `model` field
 * check. Route files import this, never app.ts (which imports them).
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import { RequestError, toHttpFailure } from './errors.js';
import type { Job, JobQueue } from './jobs.js';
import type { ServerLimits } from './limits.js';
import type { TaskEnv } from './tasks.js';

export interface ServerState extends TaskEnv {
  queue: JobQueue;
  limits: ServerLimits;
  previewEvery: number;
  modelIds: string[];
  startedAt: number;
}

declare module 'fastify' {
  interface FastifyInstance {
    dimoo: ServerState;
  }
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
      app.dimoo.queue.cancel(job);
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
  throw new RequestError(err.message, err.code, job.errorStatus ?? 400, err.param ?? undefined);
}

export function checkModelField(app: FastifyInstance, model: unknown): void {
  if (model === undefined || model === null || model === '') return;
  if (typeof model !== 'string' || !app.dimoo.modelIds.includes(model)) {
    throw new RequestError(
      `model ${JSON.stringify(model)} is not served here (available: ${app.dimoo.modelIds.join(', ')})`,
      'model_not_found',
      404,
      'model',
    );
  }
}
