/**
 * `startServer`: load a checkpoint on a worker thread and serve it.
 */
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import type { DimooApi, LoadOptions } from '../pipelines/types.js';
import { createServer, type ServerOptions } from './app.js';
import type { ServerLimits } from './limits.js';

export interface StartOptions {
  modelDir: string;
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
  /** How to open the checkpoint (default: `WorkerDimoo.load`). */
  loadModel?: (dir: string, opts: LoadOptions) => Promise<DimooApi>;
}

export interface RunningServer {
  app: FastifyInstance;
  api: DimooApi;
  /** Base URL, e.g. http://127.0.0.1:8080 */
  url: string;
  /** Cancels jobs, stops listening and releases the model. */
  close(): Promise<void>;
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
  const api = await load(o.modelDir, lo);
  let app: FastifyInstance;
  try {
    const so: ServerOptions = {
      api,
      logger: o.logger ?? { level: process.env['DIMOO_LOG_LEVEL'] ?? 'info' },
    };
    if (o.apiKey) so.apiKey = o.apiKey;
    if (o.cors) so.cors = o.cors;
    if (o.limits) so.limits = o.limits;
    if (o.previewEvery !== undefined) so.previewEvery = o.previewEvery;
    app = await createServer(so);
    await app.listen({ host, port });
  } catch (e) {
    await api.dispose();
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
  app.log.info({ model: api.info().name, dir: o.modelDir }, 'model loaded');
  let closing: Promise<void> | null = null;
  return {
    app,
    api,
    url: `http://${shownHost}:${actualPort}`,
    close: () =>
      (closing ??= (async () => {
        try {
          await app.close();
        } finally {
          await api.dispose();
        }
      })()),
  };
}
