/**
 * Names in Redis shared by the API server and the workers. BullMQ keeps its
 * own keys under `<prefix>:<queue>:...`; ours sit beside them.
 */
export const DEFAULT_PREFIX = 'dimoo';

/** BullMQ refuses ':' in queue names; model names are folder names and may hold anything. */
export function queueName(model: string): string {
  return `model.${model.replace(/[^A-Za-z0-9._-]/g, '_')}`;
}

export const keys = {
  /** One per live worker, JSON, expires unless refreshed. */
  worker: (p: string, id: string) => `${p}:worker:${id}`,
  workerPattern: (p: string) => `${p}:worker:*`,
  /** Every model a worker ever served (to find a job by id after a restart). */
  models: (p: string) => `${p}:models`,
  /** Set when a job is cancelled, so a worker that picks it up later drops it. */
  cancelled: (p: string, jobId: string) => `${p}:cancelled:${jobId}`,
  /** Channel on which cancels reach the worker running the job. */
  cancelChannel: (p: string) => `${p}:cancel`,
  /** Final status of a job removed from its queue (cancelled while waiting). */
  tombstone: (p: string, jobId: string) => `${p}:tomb:${jobId}`,
  /** Result PNGs (when results live in Redis). */
  file: (p: string, name: string) => `${p}:file:${name}`,
};
