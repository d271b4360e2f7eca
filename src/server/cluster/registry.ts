/**
 * Which workers are alive, for /v1/models, 503s and metrics. Each worker
 * refreshes a key with its model facts every `heartbeatMs`; the key expires
 * after three missed beats, so a killed worker drops out by itself.
 */
import { hostname } from 'node:os';
import type { Redis } from 'ioredis';
import type { ModelInfo, TaskDefaults } from '../../pipelines/types.js';
import { keys } from './keys.js';

export interface WorkerRecord {
  id: string;
  model: string;
  has_vq: boolean;
  /** The token grid's scale and codebook size (requests' token grids are checked against them). */
  vq_scale: number;
  codebook_size: number;
  /** The checkpoint's request defaults (its generation_config.json). */
  defaults: TaskDefaults;
  device: string;
  concurrency: number;
  host: string;
  pid: number;
  started_at: number;
}

export const DEFAULT_HEARTBEAT_MS = 2000;

/** Keeps this worker's key alive until `stop`. */
export class Heartbeat {
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    readonly record: WorkerRecord,
    private readonly everyMs = DEFAULT_HEARTBEAT_MS,
  ) {}

  static record(
    info: Pick<ModelInfo, 'name' | 'hasVq' | 'vqScale' | 'codebookSize' | 'device' | 'defaults'>,
    concurrency: number,
    id: string,
  ): WorkerRecord {
    return {
      id,
      model: info.name,
      has_vq: info.hasVq,
      vq_scale: info.vqScale,
      codebook_size: info.codebookSize,
      defaults: info.defaults,
      device: info.device,
      concurrency,
      host: hostname(),
      pid: process.pid,
      started_at: Date.now(),
    };
  }

  async start(): Promise<void> {
    await this.redis.sadd(keys.models(this.prefix), this.record.model);
    await this.beat();
    this.timer = setInterval(() => void this.beat().catch(() => undefined), this.everyMs);
    this.timer.unref();
  }

  private async beat(): Promise<void> {
    await this.redis.set(
      keys.worker(this.prefix, this.record.id),
      JSON.stringify(this.record),
      'PX',
      this.everyMs * 3,
    );
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.redis.del(keys.worker(this.prefix, this.record.id)).catch(() => undefined);
  }
}

/** Live workers, read with SCAN (a deployment has tens of workers, not millions). */
export async function liveWorkers(redis: Redis, prefix: string): Promise<WorkerRecord[]> {
  const found: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(
      cursor,
      'MATCH',
      keys.workerPattern(prefix),
      'COUNT',
      1000,
    );
    cursor = next;
    found.push(...batch);
  } while (cursor !== '0');
  if (found.length === 0) return [];
  const vals = await redis.mget(...found);
  const out: WorkerRecord[] = [];
  for (const v of vals) {
    if (!v) continue;
    try {
      const r = JSON.parse(v) as WorkerRecord;
      if (
        typeof r.model === 'string' &&
        typeof r.id === 'string' &&
        Number.isSafeInteger(r.vq_scale) &&
        Number.isSafeInteger(r.codebook_size) &&
        typeof r.defaults === 'object' &&
        r.defaults !== null
      )
        out.push(r);
    } catch {
      // A foreign or damaged key is not a worker.
    }
  }
  return out;
}
