/**
 * `createServer`: the fastify app around a job backend (one model loaded in
 * this process, or a Redis queue in front of model workers). Routes live in
 * routes-*.ts; this file wires limits, authentication, CORS, logging and the
 * error format shared by every route.
 */
import { timingSafeEqual } from 'node:crypto';
import cors from '@fastify/cors';
import multipart from '@fastify/multipart';
import Fastify, {
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyServerOptions,
} from 'fastify';
import type { DimooApi } from '../pipelines/types.js';
import { AccountedBackend, LocalBackend, type JobBackend } from './backend.js';
import { digest, presentedKey, sendFailure, type ServerState } from './context.js';
import { clientErrorResponse, frameworkError, RequestError } from './errors.js';
import { JobQueue } from './jobs.js';
import { checkBrowserOrigin } from './origin.js';
import { DEFAULT_LIMITS, TASK_DEFAULTS, type ServerLimits } from './limits.js';
import { ServerMetrics } from './metrics.js';
import { registerNativeRoutes } from './routes-native.js';
import { registerOpenAiRoutes } from './routes-openai.js';
import { registerWebRoutes } from './routes-web.js';

export interface ServerOptions {
  /** The loaded model (a `WorkerDimoo` in production, so inference stays off the event loop). */
  api?: DimooApi;
  /** Where jobs run instead of `api` (e.g. a Redis queue; see cluster/). Closed with the app. */
  backend?: (limits: ServerLimits, log: FastifyBaseLogger) => JobBackend;
  /** Require `Authorization: Bearer <key>` (or `X-Api-Key`) on the API. */
  apiKey?: string;
  /** Allow cross-origin browser calls: true = any origin, or a list of origins. Off by default. */
  cors?: boolean | string | string[];
  limits?: Partial<ServerLimits>;
  /** fastify/pino logger settings; false (default here) for none. */
  logger?: FastifyServerOptions['logger'];
  /** Serve the web page at / (default true). */
  web?: boolean;
  /** Default preview interval in steps for native jobs (default 4). */
  previewEvery?: number;
  /** Names `model` fields may use besides the checkpoint's own name. */
  modelAliases?: string[];
}

/** Routes anyone may call even with an API key set: the page, its assets, health, and capability URLs of results. */
function isPublic(url: string): boolean {
  const path = url.split('?')[0]!;
  return (
    path === '/' ||
    path === '/index.html' ||
    path === '/favicon.ico' ||
    path === '/healthz' ||
    path.startsWith('/static/') ||
    path.startsWith('/v1/files/')
  );
}

export async function createServer(opts: ServerOptions): Promise<FastifyInstance> {
  const limits: ServerLimits = { ...DEFAULT_LIMITS, ...opts.limits };
  const app = Fastify({
    logger: opts.logger ?? false,
    bodyLimit: limits.bodyBytes,
    // Job ids and log lines use this; clients may pass their own for tracing.
    requestIdHeader: 'x-request-id',
    return503OnClosing: true,
    // Errors raised before any route or hook runs leave in the documented shape too.
    frameworkErrors: (err, _req, reply) => {
      void sendFailure(reply, frameworkError(err));
    },
    clientErrorHandler: (err, socket) => {
      if ((err as NodeJS.ErrnoException).code === 'ECONNRESET' || socket.destroyed) return;
      if (socket.writable) socket.write(clientErrorResponse(err as NodeJS.ErrnoException));
      socket.destroy();
    },
  });
  let inner: JobBackend;
  if (opts.backend) inner = opts.backend(limits, app.log);
  else if (opts.api) inner = new LocalBackend(opts.api, limits, app.log, opts.modelAliases);
  else throw new Error('createServer: needs api or backend');
  const metrics = new ServerMetrics(inner);
  const jobs = new AccountedBackend(inner, limits.maxJobsPerKey, (m, job) =>
    metrics.watch(m.id, job),
  );
  app.decorate('dimoo', {
    jobs,
    queue:
      inner instanceof LocalBackend
        ? inner.queue
        : new JobQueue({ maxQueue: 0, jobTimeoutMs: 1, retentionMs: 1 }),
    store: jobs.store,
    log: app.log,
    limits,
    previewEvery: opts.previewEvery ?? TASK_DEFAULTS.previewEvery,
    startedAt: Date.now(),
  } satisfies ServerState);

  if (opts.cors) {
    await app.register(cors, {
      origin: opts.cors === true ? true : opts.cors,
      methods: ['GET', 'POST', 'DELETE', 'OPTIONS'],
      allowedHeaders: ['authorization', 'content-type', 'x-api-key', 'x-request-id'],
      exposedHeaders: ['retry-after', 'x-request-id'],
      maxAge: 600,
    });
  }
  await app.register(multipart, {
    limits: {
      fileSize: limits.uploadBytes,
      files: 3,
      fields: 40,
      parts: 50,
      fieldSize: Math.max(limits.maxPromptChars * 4, 4096),
      fieldNameSize: 100,
      headerPairs: 100,
    },
    throwFileSizeLimit: true,
  });

  const allowedOrigins =
    opts.cors === true ? true : new Set([opts.cors ?? []].flat().filter((o) => o !== false));
  app.addHook('onRequest', async (req, reply) => {
    reply.header('x-content-type-options', 'nosniff');
    reply.header('x-request-id', req.id);
    if (!opts.apiKey) {
      // No key: any web page the user visits could otherwise drive this server
      // (simple cross-origin POSTs need no preflight; a rebound DNS name reaches it).
      checkBrowserOrigin(req.headers, req.socket.localAddress, allowedOrigins);
      return;
    }
    if (req.method === 'OPTIONS' || isPublic(req.url)) return;
    const key = presentedKey(req.headers);
    if (key === undefined || !timingSafeEqual(digest(key), digest(opts.apiKey))) {
      reply.header('www-authenticate', 'Bearer');
      throw new RequestError(
        key === undefined
          ? 'missing API key: send "Authorization: Bearer <key>"'
          : 'invalid API key',
        'invalid_api_key',
        401,
      );
    }
  });

  app.setErrorHandler((err, _req, reply) => sendFailure(reply, err));
  app.setNotFoundHandler((req, reply) =>
    sendFailure(
      reply,
      new RequestError(`no route for ${req.method} ${req.url.split('?')[0]}`, 'E_NOT_FOUND', 404),
    ),
  );
  // preClose runs before fastify waits for in-flight requests: cancelling the
  // jobs first lets those requests end now (with a JSON error) instead of
  // after every running and queued job has finished.
  app.addHook('preClose', async () => {
    await jobs.close();
  });

  app.get('/metrics', async (_req, reply) =>
    reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()),
  );
  registerOpenAiRoutes(app);
  registerNativeRoutes(app);
  if (opts.web !== false) registerWebRoutes(app);
  return app;
}
