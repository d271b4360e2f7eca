/**
 * `dimoo worker --queue redis://HOST:PORT[/DB] --model DIR`: a model worker
 * for `dimoo serve --queue`. SIGTERM (or Ctrl-C) stops taking jobs, finishes
 * the running ones (past `--drain-timeout`, hands them back to the queue) and
 * exits 0.
 */
import type { Writable } from 'node:stream';
import { Command, InvalidArgumentError, Option } from 'commander';
import { DimooError } from '../../errors.js';
import type { DimooApi, LoadOptions } from '../../pipelines/types.js';
import { parseLoraRef, type LoraRef } from '../../checkpoint/lora.js';
import type { RunningQueueWorker, WorkerLog } from '../../server/cluster/worker.js';

/** The server's defaults (limits.ts), repeated so --help loads no server code. */
const RESULTS_TTL_S = 3600;
const JOB_TIMEOUT_S = 900;

export interface WorkerCommandContext {
  stdout: Writable;
  stderr: Writable;
  /** Aborted on Ctrl-C. */
  signal: AbortSignal;
  loadModel: (dir: string, opts: LoadOptions) => Promise<DimooApi>;
}

interface WorkerFlags {
  queue: string;
  model: string;
  concurrency: number;
  threads?: number;
  device?: string;
  lora?: LoraRef[];
  results?: string;
  resultsTtl: number;
  jobTimeout: number;
  drainTimeout?: number;
  logLevel: string;
  lockMs?: number;
  stalledMs?: number;
  heartbeatMs?: number;
}

function int(flag: string, min: number, max: number) {
  return (raw: string): number => {
    const n = Number(raw);
    if (!/^\d+$/.test(raw.trim()) || n < min || n > max)
      throw new InvalidArgumentError(`${flag} must be an integer from ${min} to ${max}`);
    return n;
  };
}

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** JSON lines like the server's (pino's shape: level number, time, msg). */
export function jsonLog(out: Writable, level: string): WorkerLog {
  const min = LEVELS.indexOf(level);
  const num: Record<string, number> = { error: 50, warn: 40, info: 30 };
  const line = (lv: string) => (o: object, msg?: string) => {
    if (min < 0 || LEVELS.indexOf(lv) > min || level === 'silent') return;
    const rec: Record<string, unknown> = { level: num[lv], time: Date.now(), ...o, msg };
    if (rec['err'] instanceof Error) rec['err'] = { message: (rec['err'] as Error).message };
    out.write(JSON.stringify(rec) + '\n');
  };
  return { info: line('info'), warn: line('warn'), error: line('error') };
}

export function registerWorkerCommand(program: Command, ctx: WorkerCommandContext): Command {
  return (
    program
      .command('worker')
      .description('run jobs for one model from a Redis job queue (see `dimoo serve --queue`)')
      .addOption(
        new Option('--queue <url>', 'Redis URL: redis://HOST:PORT[/DB]')
          .env('DIMOO_QUEUE')
          .makeOptionMandatory(),
      )
      .requiredOption('--model <dir>', 'checkpoint folder')
      .option(
        '--concurrency <n>',
        'jobs at once (each loads its own copy of the model)',
        int('--concurrency', 1, 64),
        1,
      )
      .option(
        '--threads <n>',
        'CPU threads for ONNX Runtime (per model copy)',
        int('--threads', 1, 1024),
      )
      .option('--device <cpu|webgpu>', 'execution device')
      .option(
        '--lora <dir[:scale]>',
        'add a LoRA adapter (PEFT folder) on the fly; repeat for several',
        (raw: string, prev: LoraRef[] | undefined) => [...(prev ?? []), parseLoraRef(raw)],
      )
      .option(
        '--results <dir>',
        'write result PNGs to this folder shared with the API servers (default: in Redis)',
      )
      .option(
        '--results-ttl <s>',
        'keep results this many seconds',
        int('--results-ttl', 1, 30 * 86400),
        RESULTS_TTL_S,
      )
      .option(
        '--job-timeout <s>',
        'cancel a job running longer than this',
        int('--job-timeout', 1, 7 * 86400),
        JOB_TIMEOUT_S,
      )
      .option(
        '--drain-timeout <s>',
        'on SIGTERM, hand running jobs back to the queue after this long (default: finish them)',
        int('--drain-timeout', 0, 86400),
      )
      .option('--log-level <level>', 'fatal, error, warn, info or silent', 'info')
      // Queue timings: tests shorten them; operators rarely need to.
      .addOption(
        new Option('--lock-ms <ms>').argParser(int('--lock-ms', 100, 3_600_000)).hideHelp(),
      )
      .addOption(
        new Option('--stalled-ms <ms>').argParser(int('--stalled-ms', 100, 3_600_000)).hideHelp(),
      )
      .addOption(
        new Option('--heartbeat-ms <ms>').argParser(int('--heartbeat-ms', 50, 600_000)).hideHelp(),
      )
      .action(async (f: WorkerFlags) => {
        if (f.device !== undefined && f.device !== 'cpu' && f.device !== 'webgpu')
          throw new DimooError('--device must be cpu or webgpu', 'E_PARAM');
        // Loaded here so other commands (and --help) never load BullMQ, fastify or sharp.
        const { parseRedisUrl } = await import('../../server/cluster/redis.js');
        const { startQueueWorker } = await import('../../server/cluster/worker.js');
        const redis = parseRedisUrl(f.queue);
        const log = jsonLog(ctx.stdout, f.logLevel);
        const lo: LoadOptions = {};
        if (f.threads !== undefined) lo.threads = f.threads;
        if (f.device !== undefined) lo.device = f.device as 'cpu' | 'webgpu';
        if (f.lora !== undefined && f.lora.length > 0) lo.lora = f.lora;
        const models: DimooApi[] = [];
        let worker: RunningQueueWorker | null = null;
        try {
          for (let i = 0; i < f.concurrency; i++) models.push(await ctx.loadModel(f.model, lo));
          worker = await startQueueWorker({
            redis,
            models,
            resultTtlMs: f.resultsTtl * 1000,
            jobTimeoutMs: f.jobTimeout * 1000,
            log,
            ...(f.results !== undefined ? { resultsDir: f.results } : {}),
            ...(f.drainTimeout !== undefined ? { drainMs: f.drainTimeout * 1000 } : {}),
            ...(f.lockMs !== undefined ? { lockDurationMs: f.lockMs } : {}),
            ...(f.stalledMs !== undefined ? { stalledIntervalMs: f.stalledMs } : {}),
            ...(f.heartbeatMs !== undefined ? { heartbeatMs: f.heartbeatMs } : {}),
          });
          ctx.stderr.write(
            `dimoo: worker ${worker.id} serving ${worker.model} from ${redis.display} (SIGTERM or Ctrl-C stops after the running job)\n`,
          );
          await new Promise<void>((resolve) => {
            const done = (): void => {
              process.off('SIGTERM', done);
              resolve();
            };
            process.once('SIGTERM', done);
            if (ctx.signal.aborted) done();
            else ctx.signal.addEventListener('abort', done, { once: true });
          });
          ctx.stderr.write('dimoo: worker stopping (finishing running jobs)\n');
        } finally {
          await worker?.stop();
          for (const m of models) await m.dispose().catch(() => undefined);
        }
      })
  );
}
