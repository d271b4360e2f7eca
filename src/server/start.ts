/**
 * `startServer`: load a checkpoint on a worker thread and serve it.
 */
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import type { DimooApi, LoadOptions } from '../pipelines/types.js';
import { createServer, type ServerOptions } from './app.js';
import type { ServerLimits } from './limits.js';

export interface StartOptions {
  /** Checkpoint to load in this process (not with `queue`). */
  modelDir?: string;
  /** Queue jobs on this Redis for `dimoo worker` processes instead of loading a model here. */
  queue?: QueueServeOptions;
  /** Default 127.0.0.1: nothing outside this machine can reach the server unless asked. */
  host?: string;
  /** Default 8080; 0 picks a free port. */
  port?: number;
  apiKey?: string;
  cors?: boolean | string | string[];
  threads?: number;
  device?: LoadOptions['device'];
  /** LoRA adapters applied to the served model. */
  lora?: LoadOptions['lora'];
  limits?: Partial<ServerLimits>;
  previewEvery?: number;
  /** Default: JSON lines at level info (pino). */
  logger?: FastifyServerOptions['logger'];
  /**
   * Model names requests may use besides the checkpoint's (e.g. `dall-e-3` for
   * apps with a fixed name). In queue mode `NAME=MODEL` names the model an
   * alias stands for (default: the default model); embedded, MODEL is ignored.
   */
  modelAliases?: string[];
  /** How to open the checkpoint (default: `WorkerDimoo.load`). */
  loadModel?: (dir: string, opts: LoadOptions) => Promise<DimooApi>;
}

export interface QueueServeOptions {
  url: string;
  defaultModel?: string;
  resultsDir?: string;
  resultTtlMs?: number;
}

export interface RunningServer {
  app: FastifyInstance;
  /** The model loaded here (absent in queue mode). */
  api?: DimooApi;
  /** What the server serves, for the start-up line. */
  label: string;
  /** Base URL, e.g. http://127.0.0.1:8080 */
  url: string;
  /** Cancels jobs, stops listening and releases the model. */
  close(): Promise<void>;
}

/** `NAME` or `NAME=MODEL` -> name -> the model it stands for (undefined: the default one). */
function parseAliases(list: string[]): Map<string, string | undefined> {
  const m = new Map<string, string | undefined>();
  for (const a of list) {
    const i = a.indexOf('=');
    if (i < 0) m.set(a, undefined);
    else m.set(a.slice(0, i), a.slice(i + 1));
  }
  return m;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

export async function startServer(o: StartOptions): Promise<RunningServer> {
  const host = o.host ?? '127.0.0.1';
  const port = o.port ?? 8080;
  const load =
    o.loadModel ??
    (async (dir: string, lo: LoadOptions) => {
      const { WorkerDimoo } = await import('../runtime/worker-dimoo.js');
      return WorkerDimoo.load(dir, lo);
    });
  const lo: LoadOptions = {};
  if (o.threads !== undefined) lo.threads = o.threads;
  if (o.device !== undefined) lo.device = o.device;
  if (o.lora !== undefined && o.lora.length > 0) lo.lora = o.lora;
  let api: DimooApi | undefined;
  let backend: ServerOptions['backend'];
  if (o.queue) {
    const q = o.queue;
    const { QueueBackend } = await import('./cluster/queue-backend.js');
    const { parseRedisUrl } = await import('./cluster/redis.js');
    const redis = parseRedisUrl(q.url);
    backend = (limits, log) =>
      new QueueBackend({
        redis,
        limits,
        log,
        ...(q.defaultModel !== undefined ? { defaultModel: q.defaultModel } : {}),
        ...(q.resultsDir !== undefined ? { resultsDir: q.resultsDir } : {}),
        ...(q.resultTtlMs !== undefined ? { resultTtlMs: q.resultTtlMs } : {}),
        ...(o.modelAliases?.length ? { aliases: parseAliases(o.modelAliases) } : {}),
      });
  } else {
    if (!o.modelDir) throw new Error('startServer: needs modelDir or queue');
    api = await load(o.modelDir, lo);
  }
  let app: FastifyInstance;
  try {
    const so: ServerOptions = {
      ...(api ? { api } : { backend }),
      logger: o.logger ?? { level: process.env['DIMOO_LOG_LEVEL'] ?? 'info' },
    };
    if (o.apiKey) so.apiKey = o.apiKey;
    if (o.cors) so.cors = o.cors;
    if (o.limits) so.limits = o.limits;
    if (o.previewEvery !== undefined) so.previewEvery = o.previewEvery;
    if (o.modelAliases?.length && api) so.modelAliases = [...parseAliases(o.modelAliases).keys()];
    app = await createServer(so);
    await app.listen({ host, port });
  } catch (e) {
    await api?.dispose();
    throw e;
  }
  if (!LOOPBACK.has(host) && !o.apiKey) {
    app.log.warn(
      { host },
      'listening beyond this machine without an API key: anyone who can reach it can use the model',
    );
  }
  const addr = app.server.address();
  const actualPort = typeof addr === 'object' && addr ? addr.port : port;
  const shownHost = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host;
  const label = api
    ? api.info().name
    : `the models of ${o.queue!.url.replace(/\/\/[^@/]*@/, '//')}`;
  if (api) app.log.info({ model: label, dir: o.modelDir }, 'model loaded');
  let closing: Promise<void> | null = null;
  return {
    app,
    ...(api ? { api } : {}),
    label,
    url: `http://${shownHost}:${actualPort}`,
    close: () =>
      (closing ??= (async () => {
        try {
          await app.close();
        } finally {
          await api?.dispose();
        }
      })()),
  };
}
