/**
 * `npm run bench -- --only cluster`: the job queue (Redis + BullMQ) measured
 * with real processes on this machine.
 *
 * - Throughput: jobs per minute with 1 and with 2 single-threaded `dimoo
 *   worker` processes behind one API server (the small random checkpoint,
 *   understanding jobs: it has no VQ-VAE). Same jobs, measured in one run.
 * - Added latency: one job at a time, wall time from POST to the final event
 *   through the queue minus the same through the embedded server (golden tiny
 *   checkpoint, 1-step jobs, so the model's share is small and equal in both).
 */
import * as os from 'node:os';
import type { FastifyInstance } from 'fastify';
import { WorkerDimoo } from '../src/runtime/worker-dimoo.js';
import { createServer } from '../src/server/app.js';
import { QueueBackend } from '../src/server/cluster/queue-backend.js';
import { parseRedisUrl } from '../src/server/cluster/redis.js';
import { dimoo, json, post, readSse, type Proc } from '../test/helpers/cluster.js';
import { TestRedis } from '../test/helpers/redis.js';

export interface ClusterRow {
  jobs: number;
  jobsPerMin1: number;
  jobsPerMin2: number;
  speedup: number;
  latencyJobs: number;
  embeddedMedianMs: number;
  queueMedianMs: number;
  addedLatencyMs: number;
  loadavg: number[];
}

async function listen(app: FastifyInstance): Promise<string> {
  await app.listen({ host: '127.0.0.1', port: 0 });
  return `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
}

async function runJob(base: string, body: unknown): Promise<void> {
  const r = await post(base, '/v1/jobs', body);
  const j = await json(r);
  if (r.status !== 202) throw new Error(`job refused: ${JSON.stringify(j)}`);
  const last = (await readSse(await fetch(base + j.events_url))).at(-1)!;
  if (last.event !== 'done') throw new Error(`job ${last.event}: ${JSON.stringify(last.data)}`);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function workers(url: string, dir: string, n: number): Promise<Proc[]> {
  const ps = Array.from({ length: n }, () =>
    dimoo(['worker', '--queue', url, '--model', dir, '--threads', '1', '--log-level', 'warn']),
  );
  for (const p of ps)
    await p.waitLine((l) => l.includes('dimoo: worker'), 'a worker to start', 600_000);
  return ps;
}

export async function benchCluster(opts: {
  smallDir: string;
  goldenDir: string;
  jobs?: number;
  latencyJobs?: number;
  log: (s: string) => void;
}): Promise<ClusterRow> {
  const J = opts.jobs ?? 8;
  const L = opts.latencyJobs ?? 20;
  const redis = await TestRedis.start();
  const procs: Proc[] = [];
  const apps: FastifyInstance[] = [];
  try {
    const qapp = await createServer({
      backend: (limits, log) => new QueueBackend({ redis: parseRedisUrl(redis.url), limits, log }),
      limits: { maxQueue: 1000 },
    });
    apps.push(qapp);
    const qbase = await listen(qapp);
    const grid = {
      width: 256,
      height: 256,
      codes: Array.from({ length: 256 }, (_, i) => (i * 37) % 8192),
    };
    const job = (i: number) => ({
      task: 'understand',
      image: { tokens: grid },
      question: `what is in picture ${i}?`,
      max_tokens: 32,
      block_length: 32,
      steps: 16,
      use_cache: false,
    });
    const throughput = async (n: number): Promise<number> => {
      const ws = await workers(redis.url, opts.smallDir, n);
      procs.push(...ws);
      // Warm-up: every worker runs one job first (session start-up is not throughput).
      await Promise.all(Array.from({ length: n }, (_, i) => runJob(qbase, job(1000 + i))));
      const t0 = performance.now();
      await Promise.all(Array.from({ length: J }, (_, i) => runJob(qbase, job(i))));
      const min = (performance.now() - t0) / 60000;
      for (const w of ws) await w.kill('SIGTERM');
      return J / min;
    };
    opts.log(`cluster: ${J} understanding jobs (small preset) on 1 worker`);
    const one = await throughput(1);
    opts.log(`cluster: ${J} understanding jobs on 2 workers`);
    const two = await throughput(2);

    opts.log(
      `cluster: added latency, ${L} one-step jobs one at a time (golden tiny), embedded vs queue`,
    );
    const api = await WorkerDimoo.load(opts.goldenDir, { threads: 1 });
    const eapp = await createServer({ api });
    apps.push(eapp);
    const ebase = await listen(eapp);
    procs.push(...(await workers(redis.url, opts.goldenDir, 1)));
    const tiny = (i: number) => ({
      task: 'generate',
      prompt: `dot ${i}`,
      size: '16x16',
      steps: 1,
      seed: i,
      preview_every: 0,
    });
    const time = async (base: string): Promise<number[]> => {
      await runJob(base, tiny(999)); // warm-up
      const ms: number[] = [];
      for (let i = 0; i < L; i++) {
        const t0 = performance.now();
        await runJob(base, tiny(i));
        ms.push(performance.now() - t0);
      }
      return ms;
    };
    // Interleaved halves, so a change in machine load hits both sides alike.
    const e1 = await time(ebase);
    const q1 = await time(qbase);
    const e2 = await time(ebase);
    const q2 = await time(qbase);
    await api.dispose();
    const em = median([...e1, ...e2]);
    const qm = median([...q1, ...q2]);
    return {
      jobs: J,
      jobsPerMin1: one,
      jobsPerMin2: two,
      speedup: two / one,
      latencyJobs: 2 * L,
      embeddedMedianMs: em,
      queueMedianMs: qm,
      addedLatencyMs: qm - em,
      loadavg: os.loadavg(),
    };
  } finally {
    for (const p of procs) await p.kill('SIGTERM');
    for (const a of apps) await a.close();
    await redis.dispose();
  }
}
