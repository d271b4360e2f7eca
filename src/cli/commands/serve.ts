/**
 * `dimoo serve`: the commander command that starts the server. The CLI
 * passes its context (output streams, model loader, Ctrl-C signal); without
 * one, the process's own are used. The server itself is imported only when
 * the command runs.
 */
import {
  DEFAULT_MODEL_ENV,
  resolveModel,
  SHIPPED_MODEL_PATH,
} from '../../checkpoint/default-model.js';
import type { Writable } from 'node:stream';
import { Command, InvalidArgumentError } from 'commander';
import { DimooError } from '../../errors.js';
import type { DimooApi, LoadOptions } from '../../pipelines/types.js';
import type { ServerLimits } from '../../server/limits.js';
import type { RunningServer } from '../../server/start.js';
import { parseLoraRef, type LoraRef } from '../../checkpoint/lora.js';

export interface ServeContext {
  stdout: Writable;
  stderr: Writable;
  env: NodeJS.ProcessEnv;
  /** Aborted on Ctrl-C: the server then shuts down cleanly. */
  signal: AbortSignal;
  loadModel: (dir: string, opts: LoadOptions) => Promise<DimooApi>;
}

interface ServeFlags {
  model?: string;
  modelAlias?: string[];
  host: string;
  port: number;
  apiKey?: string;
  cors?: boolean | string;
  threads?: number;
  lora?: LoraRef[];
  device?: 'cpu' | 'webgpu';
  maxQueue?: number;
  maxPixels?: number;
  maxSteps?: number;
  maxN?: number;
  maxUploadMb?: number;
  previewEvery?: number;
  logLevel: string;
}

function int(flag: string, min: number, max: number) {
  return (raw: string): number => {
    const n = Number(raw);
    if (!/^\d+$/.test(raw.trim()) || n < min || n > max)
      throw new InvalidArgumentError(`${flag} must be an integer from ${min} to ${max}`);
    return n;
  };
}

/** Resolves when the server stopped (after the signal fired). */
function waitForStop(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });
}

function processContext(): ServeContext {
  const ac = new AbortController();
  const stop = (): void => ac.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    env: process.env,
    signal: ac.signal,
    loadModel: async (dir, opts) => {
      const { WorkerDimoo } = await import('../../runtime/worker-dimoo.js');
      return WorkerDimoo.load(dir, opts);
    },
  };
}

export function registerServeCommand(
  program: Command,
  ctx?: ServeContext,
  onListening?: (s: RunningServer) => void,
): Command {
  return program
    .command('serve')
    .description('serve the model over HTTP: OpenAI-compatible API, job API and a web page')
    .option(
      '--model <dir>',
      `checkpoint folder (default: $${DEFAULT_MODEL_ENV}, else the shipped shapes model, ${SHIPPED_MODEL_PATH})`,
    )
    .option('--host <addr>', 'address to listen on', '127.0.0.1')
    .option('--port <n>', 'port to listen on (0: any free port)', int('--port', 0, 65535), 8080)
    .option(
      '--api-key <key>',
      'require this key as "Authorization: Bearer <key>" (default: env DIMOO_API_KEY)',
    )
    .option(
      '--cors [origins]',
      'allow browser calls from other origins: any, or a comma-separated list',
    )
    .option('--threads <n>', 'CPU threads for ONNX Runtime', int('--threads', 1, 1024))
    .option(
      '--lora <dir[:scale]>',
      'add a LoRA adapter (PEFT folder) on the fly; repeat for several',
      (raw: string, prev: LoraRef[] | undefined) => [...(prev ?? []), parseLoraRef(raw)],
    )
    .option('--device <cpu|webgpu>', 'execution device')
    .option(
      '--max-queue <n>',
      'jobs allowed to wait behind the running one',
      int('--max-queue', 0, 10000),
    )
    .option('--max-pixels <n>', 'largest output image in pixels', int('--max-pixels', 256, 1 << 26))
    .option('--max-steps <n>', 'most sampling steps per image', int('--max-steps', 1, 100000))
    .option('--max-n <n>', 'most images per request', int('--max-n', 1, 64))
    .option('--max-upload-mb <n>', 'largest uploaded file in MiB', int('--max-upload-mb', 1, 1024))
    .option(
      '--preview-every <k>',
      'preview image every k steps in job events (0: none)',
      int('--preview-every', 0, 100000),
    )
    .option('--log-level <level>', 'fatal, error, warn, info, debug or trace', 'info')
    .option(
      '--model-alias <name>',
      'another model name requests may use, e.g. dall-e-3 (repeatable; NAME=MODEL also accepted)',
      (v: string, prev: string[] = []) => {
        const [name, target] = v.split('=');
        if (!name || !/^[\w.:-]+$/.test(name))
          throw new DimooError(`--model-alias ${v}: expected NAME or NAME=MODEL`, 'E_PARAM');
        void target;
        return [...prev, name];
      },
    )
    .action(async (f: ServeFlags) => {
      const c = ctx ?? processContext();
      if (f.device !== undefined && f.device !== 'cpu' && f.device !== 'webgpu')
        throw new DimooError('--device must be cpu or webgpu', 'E_PARAM');
      const limits: Partial<ServerLimits> = {};
      if (f.maxQueue !== undefined) limits.maxQueue = f.maxQueue;
      if (f.maxPixels !== undefined) limits.maxPixels = f.maxPixels;
      if (f.maxSteps !== undefined) limits.maxSteps = f.maxSteps;
      if (f.maxN !== undefined) limits.maxN = f.maxN;
      if (f.maxUploadMb !== undefined) limits.uploadBytes = f.maxUploadMb * 1024 * 1024;
      const cors =
        f.cors === undefined || f.cors === false
          ? undefined
          : f.cors === true
            ? true
            : f.cors
                .split(',')
                .map((s: string) => s.trim())
                .filter(Boolean);
      const apiKey = f.apiKey ?? (c.env['DIMOO_API_KEY'] || undefined);
      // Loaded here so other commands (and --help) never load fastify and sharp.
      const { startServer } = await import('../../server/start.js');
      const server = await startServer({
        modelDir: resolveModel(f.model, c.env),
        host: f.host,
        port: f.port,
        limits,
        loadModel: c.loadModel,
        logger: { level: f.logLevel },
        ...(apiKey ? { apiKey } : {}),
        ...(cors ? { cors } : {}),
        ...(f.threads !== undefined ? { threads: f.threads } : {}),
        ...(f.device ? { device: f.device } : {}),
        ...(f.lora ? { lora: f.lora } : {}),
        ...(f.previewEvery !== undefined ? { previewEvery: f.previewEvery } : {}),
        ...(f.modelAlias?.length ? { modelAliases: f.modelAlias } : {}),
      });
      c.stderr.write(
        `dimoo: serving ${server.api.info().name} at ${server.url}/ (open it in a browser; Ctrl-C stops)\n`,
      );
      onListening?.(server);
      await waitForStop(c.signal);
      c.stderr.write('dimoo: stopping (cancelling running jobs)\n');
      await server.close();
    });
}
