/**
 * `npm run soak`: memory under sustained load (not in CI). Serves the golden
 * tiny model on a worker thread, sends N requests (default 20 000: mostly
 * tiny text-to-image calls, some by URL, some as native jobs with an event
 * stream) with a few in flight, and samples the process RSS (the model's
 * worker thread included) after a GC every N/20 requests. Prints the curve
 * and the growth over the second half, where a bounded server levels off.
 *
 *   npm run soak -- [--requests N] [--concurrency C] [--json FILE]
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { WorkerDimoo } from '../src/runtime/worker-dimoo.js';
import { createServer } from '../src/server/app.js';

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}

const N = arg('requests', 20_000);
const C = arg('concurrency', 4);
const jsonOut = (() => {
  const i = process.argv.indexOf('--json');
  return i >= 0 ? process.argv[i + 1] : undefined;
})();
const MODEL = path.resolve('../shared/golden/dimoo-tiny');

const gc = (globalThis as { gc?: () => void }).gc;

function rssMb(): number {
  gc?.();
  return process.memoryUsage().rss / 2 ** 20;
}

async function one(base: string, i: number): Promise<void> {
  const kind = i % 10;
  let res: Response;
  if (kind === 9) {
    // A native job, followed to its end through the event stream.
    res = await fetch(`${base}/v1/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        task: 'generate',
        prompt: `soak ${i}`,
        size: '32x32',
        steps: 1,
        seed: i,
      }),
    });
    const j = (await res.json()) as { events_url: string };
    if (res.status !== 202) throw new Error(`job ${i}: HTTP ${res.status}`);
    const ev = await fetch(base + j.events_url);
    const text = await ev.text();
    if (!/event: done/.test(text)) throw new Error(`job ${i} did not finish:\n${text.slice(-300)}`);
    return;
  }
  res = await fetch(`${base}/v1/images/generations`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      prompt: `soak ${i}`,
      size: '32x32',
      steps: 1,
      seed: i,
      response_format: kind === 8 ? 'url' : 'b64_json',
    }),
  });
  const body = await res.text();
  if (res.status !== 200) throw new Error(`request ${i}: HTTP ${res.status} ${body.slice(0, 200)}`);
}

async function main(): Promise<void> {
  if (!gc) process.stderr.write('soak: run with --expose-gc for steadier numbers\n');
  const api = await WorkerDimoo.load(MODEL, { threads: 1 });
  const app = await createServer({ api, limits: { maxQueue: C * 2 } });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
  // Warm-up: sessions, allocator pools and JIT settle before the baseline.
  for (let i = 0; i < 50; i++) await one(base, i);
  const every = Math.max(1, Math.floor(N / 20));
  const curve: { requests: number; rssMb: number; storeFiles: number; seconds: number }[] = [];
  const t0 = performance.now();
  const sample = (done: number): void => {
    const p = {
      requests: done,
      rssMb: Math.round(rssMb() * 10) / 10,
      storeFiles: app.dimoo.store.size.files,
      seconds: Math.round((performance.now() - t0) / 100) / 10,
    };
    curve.push(p);
    process.stdout.write(
      `${String(p.requests).padStart(6)} requests  rss ${p.rssMb.toFixed(1).padStart(7)} MB  store ${p.storeFiles} files  ${p.seconds} s\n`,
    );
  };
  sample(0);
  let next = 0;
  let done = 0;
  const worker = async (): Promise<void> => {
    while (next < N) {
      const i = next++;
      await one(base, i + 50);
      done++;
      if (done % every === 0) sample(done);
    }
  };
  await Promise.all(Array.from({ length: C }, worker));
  await app.close();
  await api.dispose();
  const half = curve[Math.floor(curve.length / 2)]!;
  const last = curve.at(-1)!;
  const perReqKb = ((last.rssMb - half.rssMb) * 1024) / Math.max(1, last.requests - half.requests);
  const summary = {
    requests: N,
    concurrency: C,
    rssStartMb: curve[0]!.rssMb,
    rssHalfMb: half.rssMb,
    rssEndMb: last.rssMb,
    secondHalfKbPerRequest: Math.round(perReqKb * 100) / 100,
    seconds: last.seconds,
    curve,
  };
  process.stdout.write(
    `\nRSS ${summary.rssStartMb} -> ${summary.rssHalfMb} (half) -> ${summary.rssEndMb} MB; ` +
      `second half ${summary.secondHalfKbPerRequest} KB/request over ${last.requests - half.requests} requests\n`,
  );
  if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify(summary, null, 2));
}

main().catch((e: unknown) => {
  process.stderr.write(`soak failed: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
