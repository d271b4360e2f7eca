/* eslint-disable @typescript-eslint/no-explicit-any -- response JSON is checked field by field */
/**
 * `dimoo serve --queue` + `dimoo worker` against a real redis-server (its
 * own port and folder), with the fake model in worker processes so jobs are
 * fast: the HTTP API through the queue, and the faults the issue lists.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Queue, QueueEvents } from 'bullmq';
import { Redis } from 'ioredis';
import sharp from 'sharp';
import type { FastifyInstance } from 'fastify';
import { createServer } from '../src/server/app.js';
import { QueueBackend } from '../src/server/cluster/queue-backend.js';
import { queueName } from '../src/server/cluster/keys.js';
import { parseRedisUrl } from '../src/server/cluster/redis.js';
import type { ServerLimits } from '../src/server/limits.js';
import { fakeWorker, json, post, readSse, until, type Proc } from './helpers/cluster.js';
import { TestRedis } from './helpers/redis.js';

/** A hang fails the suite (and frees the test run) instead of blocking it; generous for a loaded machine. */
const LIMIT_MS = 10 * 60_000;

const MODEL = 'dimoo-fake';

async function apiServer(
  redis: TestRedis,
  limits: Partial<ServerLimits> = {},
  resultsDir?: string,
  aliases?: Map<string, string | undefined>,
): Promise<{ app: FastifyInstance; base: string }> {
  const app = await createServer({
    backend: (l, log) =>
      new QueueBackend({
        redis: parseRedisUrl(redis.url),
        limits: l,
        log,
        reconcileMs: 250,
        ...(resultsDir ? { resultsDir } : {}),
        ...(aliases ? { aliases } : {}),
      }),
    limits: { maxSteps: 100_000, ...limits },
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  return { app, base: `http://127.0.0.1:${(app.server.address() as { port: number }).port}` };
}

async function createJob(base: string, body: unknown): Promise<any> {
  const res = await post(base, '/v1/jobs', body);
  const j = await json(res);
  assert.equal(res.status, 202, JSON.stringify(j));
  return j;
}

async function finalOf(base: string, id: string): Promise<any> {
  const events = await readSse(await fetch(`${base}/v1/jobs/${id}/events`));
  return events.at(-1)!;
}

const gen = (seed: number, steps = 8, extra: Record<string, unknown> = {}) => ({
  task: 'generate',
  prompt: `a test image ${seed}`,
  size: '64x64',
  steps,
  seed,
  ...extra,
});

describe('queue: the HTTP API through Redis and workers', { timeout: LIMIT_MS }, () => {
  let redis: TestRedis;
  let base: string;
  let app: FastifyInstance;
  const workers: Proc[] = [];

  before(async () => {
    redis = await TestRedis.start();
    ({ app, base } = await apiServer(
      redis,
      { maxQueue: 2 },
      undefined,
      new Map([
        ['dall-e-3', undefined],
        ['gpt-4o', MODEL],
        ['nowhere', 'no-such-model'],
      ]),
    ));
  });
  after(async () => {
    for (const w of workers) await w.kill('SIGKILL');
    await app.close();
    await redis.dispose();
  });

  it('answers 503 with Retry-After while no worker serves a model', async () => {
    const r = await post(base, '/v1/jobs', gen(1));
    const b = await json(r);
    assert.equal(r.status, 503, JSON.stringify(b));
    assert.equal(b.error.dimoo_code, 'E_NO_WORKERS');
    assert.ok(Number(r.headers.get('retry-after')) > 0);
    const m = await json(await fetch(base + '/v1/models'));
    assert.deepEqual(m.data, []);
  });

  it('lists the model once a worker is up; runs jobs with progress, previews and a stored PNG', async () => {
    workers.push(await fakeWorker(redis.url, 5));
    const m = await json(await fetch(base + '/v1/models'));
    // The model, then the aliases that reach it.
    assert.deepEqual(
      m.data.map((x: any) => x.id),
      [MODEL, 'dall-e-3', 'gpt-4o'],
    );
    const h = await json(await fetch(base + '/healthz'));
    assert.equal(h.status, 'ok');
    assert.equal(h.model, MODEL);
    assert.equal(h.models[0].workers, 1);
    const j = await createJob(base, gen(7, 8, { preview_every: 2 }));
    assert.equal(j.status, 'queued');
    const events = await readSse(await fetch(base + j.events_url));
    const kinds = events.map((e) => e.event);
    assert.equal(kinds.at(-1), 'done', JSON.stringify(events.at(-1)));
    assert.ok(kinds.includes('progress'), kinds.join(','));
    assert.ok(kinds.includes('preview'), kinds.join(','));
    const done = events.at(-1)!.data;
    assert.equal(done.status, 'succeeded');
    assert.equal(done.result.tokens.codes.length, 16);
    assert.equal(done.result.seed, 7);
    const png = await fetch(base + done.result.image_url);
    assert.equal(png.status, 200);
    assert.equal(png.headers.get('content-type'), 'image/png');
    // The same request again gives the same tokens (same seed, any worker).
    const again = await finalOf(base, (await createJob(base, gen(7, 8))).id);
    assert.deepEqual(again.data.result.tokens, done.result.tokens);
  });

  it('OpenAI routes: no model field goes to the only model; unknown models are 404', async () => {
    const r = await post(base, '/v1/images/generations', {
      prompt: 'a fox',
      size: '32x32',
      steps: 4,
      seed: 3,
      n: 2,
    });
    const b = await json(r);
    assert.equal(r.status, 200, JSON.stringify(b));
    assert.equal(b.data.length, 2);
    assert.deepEqual(
      b.data.map((d: any) => d.seed),
      [3, 4],
    );
    assert.ok(Buffer.from(b.data[0].b64_json, 'base64').subarray(1, 4).toString() === 'PNG');
    const u = await post(base, '/v1/images/generations', { prompt: 'x', model: 'no-such' });
    assert.equal(u.status, 404);
    assert.equal((await json(u)).error.code, 'model_not_found');
  });

  it('OpenAI extras through the queue: aliases, webp by URL, partial images, chat with n = 2 streamed', async () => {
    const models = await json(await fetch(base + '/v1/models'));
    // An alias whose model has no worker is not listed.
    assert.deepEqual(
      models.data.map((x: any) => x.id),
      [MODEL, 'dall-e-3', 'gpt-4o'],
    );
    assert.equal((await json(await fetch(base + '/v1/models/gpt-4o'))).id, 'gpt-4o');
    const webp = await post(base, '/v1/images/generations', {
      model: 'dall-e-3',
      prompt: 'a fox',
      size: '32x32',
      steps: 4,
      output_format: 'webp',
      response_format: 'url',
    });
    const wb = await json(webp);
    assert.equal(webp.status, 200, JSON.stringify(wb));
    const file = await fetch(wb.data[0].url);
    assert.equal(file.status, 200);
    assert.equal(file.headers.get('content-type'), 'image/webp');
    assert.equal(
      Buffer.from(await file.arrayBuffer())
        .subarray(8, 12)
        .toString(),
      'WEBP',
    );

    const stream = await post(base, '/v1/images/generations', {
      prompt: 'a fox',
      size: '32x32',
      steps: 6,
      seed: 5,
      stream: true,
      partial_images: 2,
    });
    const ev = await readSse(stream);
    const partial = ev.filter((e) => e.event === 'image_generation.partial_image');
    const completed = ev.filter((e) => e.event === 'image_generation.completed');
    assert.ok(partial.length >= 1 && partial.length <= 2, ev.map((e) => e.event).join(','));
    assert.equal(completed.length, 1);
    assert.equal(
      Buffer.from(completed[0]!.data.b64_json, 'base64').subarray(1, 4).toString(),
      'PNG',
    );

    const png = await sharp({
      create: { width: 32, height: 32, channels: 3, background: { r: 200, g: 30, b: 30 } },
    })
      .png()
      .toBuffer();
    const chat = {
      model: 'gpt-4o',
      n: 2,
      steps: 4,
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'what is this?' },
            {
              type: 'image_url',
              image_url: { url: `data:image/png;base64,${png.toString('base64')}` },
            },
          ],
        },
      ],
    };
    const plain = await json(await post(base, '/v1/chat/completions', chat));
    assert.equal(plain.model, MODEL);
    assert.equal(plain.choices.length, 2);
    const chunks = await readSse(
      await post(base, '/v1/chat/completions', { ...chat, stream: true }),
    );
    assert.equal(chunks.at(-1)!.data, '[DONE]');
    const texts = ['', ''];
    for (const c of chunks.slice(0, -1))
      for (const ch of c.data.choices) texts[ch.index] += ch.delta.content ?? '';
    assert.deepEqual(
      texts,
      plain.choices.map((c: any) => c.message.content),
    );
    // Understanding with several images, and with none, travels through the queue as well.
    const grid = { width: 32, height: 32, codes: [1, 2, 3, 4] };
    for (const images of [[{ tokens: grid }, { tokens: grid }], []]) {
      const j = await createJob(base, {
        task: 'understand',
        question: 'what?',
        images,
        max_tokens: 8,
        block_length: 8,
        steps: 2,
      });
      const last = await finalOf(base, j.id);
      assert.equal(last.event, 'done', JSON.stringify(last.data));
      assert.match(last.data.result.text, new RegExp(`^${images.length} images show`));
    }
    const gone = await post(base, '/v1/images/generations', { model: 'nowhere', prompt: 'x' });
    assert.equal(gone.status, 404);
  });

  it('cancels a running job within a step, and the worker takes the next one', async () => {
    const slow = await createJob(base, gen(11, 4000));
    const res = await fetch(base + slow.events_url);
    let cancelled = false;
    const events = await readSse(res, (e) => {
      if (e.event === 'progress' && !cancelled) {
        cancelled = true;
        void fetch(`${base}/v1/jobs/${slow.id}/cancel`, { method: 'POST' });
      }
    });
    const last = events.at(-1)!;
    assert.equal(last.event, 'cancelled', JSON.stringify(last.data));
    const steps = events.filter((e) => e.event === 'progress').map((e) => e.data.step);
    assert.ok(Math.max(...steps) < 4000, 'stopped before the end');
    const next = await finalOf(base, (await createJob(base, gen(12, 4))).id);
    assert.equal(next.event, 'done');
  });

  it('cancels a queued job at once; 429 with Retry-After past --max-queue', async () => {
    const running = await createJob(base, gen(20, 4000));
    await until(
      async () => (await json(await fetch(`${base}/v1/jobs/${running.id}`))).status === 'running',
      'the first job to start',
    );
    const q1 = await createJob(base, gen(21, 4));
    const q2 = await createJob(base, gen(22, 4));
    assert.equal(q1.queue_position, 1);
    assert.equal(q2.queue_position, 2);
    const full = await post(base, '/v1/jobs', gen(23, 4));
    assert.equal(full.status, 429);
    assert.equal((await json(full)).error.dimoo_code, 'E_QUEUE_FULL');
    assert.ok(Number(full.headers.get('retry-after')) >= 1);
    const c = await json(await fetch(`${base}/v1/jobs/${q2.id}`, { method: 'DELETE' }));
    assert.equal(c.status, 'cancelled');
    await fetch(`${base}/v1/jobs/${running.id}/cancel`, { method: 'POST' });
    assert.equal((await finalOf(base, running.id)).event, 'cancelled');
    assert.equal((await finalOf(base, q1.id)).event, 'done');
    assert.equal((await json(await fetch(`${base}/v1/jobs/${q2.id}`))).status, 'cancelled');
  });

  it('a bad payload from a foreign producer fails that job with the field named; the worker keeps serving', async () => {
    const conn = new Redis(redis.url, { maxRetriesPerRequest: null });
    const name = queueName(MODEL);
    const q = new Queue(name, { connection: conn, prefix: 'dimoo' });
    const evConn = conn.duplicate();
    // From the stream's start ('$' would miss a failure that happens before the first read).
    const ev = new QueueEvents(name, { connection: evConn, prefix: 'dimoo', lastEventId: '0-0' });
    await ev.waitUntilReady();
    try {
      const failed = new Promise<string>((resolve) =>
        ev.on('failed', ({ jobId, failedReason }) => {
          if (jobId === 'foreign-1') resolve(failedReason);
        }),
      );
      await q.add(
        'generate',
        { v: 1, task: 'generate', params: { prompt: 42 } },
        { jobId: 'foreign-1' },
      );
      const reason = JSON.parse(await failed);
      assert.equal(reason.error.dimoo_code, 'E_JOB_PAYLOAD');
      assert.match(reason.error.message, /params\.prompt/);
      const garbage = new Promise<string>((resolve) =>
        ev.on('failed', ({ jobId, failedReason }) => {
          if (jobId === 'foreign-2') resolve(failedReason);
        }),
      );
      await q.add('x', 'not even an object' as never, { jobId: 'foreign-2' });
      assert.match(JSON.parse(await garbage).error.message, /bad job payload/);
    } finally {
      await ev.close();
      await q.close();
      await conn.quit();
      await evConn.quit();
    }
    assert.equal((await finalOf(base, (await createJob(base, gen(30, 4))).id)).event, 'done');
  });

  it('/metrics: queue depth, live workers, jobs by outcome, durations', async () => {
    const r = await fetch(base + '/metrics');
    assert.equal(r.status, 200);
    const t = await r.text();
    assert.match(t, new RegExp(`dimoo_live_workers\\{model="${MODEL}"\\} 1`));
    assert.match(t, new RegExp(`dimoo_queue_waiting_jobs\\{model="${MODEL}"\\} 0`));
    assert.match(
      t,
      /dimoo_jobs_total\{model="dimoo-fake",task="generate",outcome="succeeded"\} [1-9]/,
    );
    assert.match(
      t,
      /dimoo_jobs_total\{model="dimoo-fake",task="generate",outcome="cancelled"\} [1-9]/,
    );
    assert.match(t, /dimoo_job_run_seconds_count\{model="dimoo-fake",task="generate"\} [1-9]/);
    assert.match(t, /dimoo_step_seconds_count\{model="dimoo-fake",task="generate"\} [1-9]/);
  });

  it('SIGTERM on a worker: it finishes its running job, then exits 0', async () => {
    const w = workers.pop()!;
    const j = await createJob(base, gen(40, 60));
    const res = await fetch(base + j.events_url);
    let signalled = false;
    const events = await readSse(res, (e) => {
      if (e.event === 'progress' && !signalled) {
        signalled = true;
        w.proc.kill('SIGTERM');
      }
    });
    assert.equal(events.at(-1)!.event, 'done', JSON.stringify(events.at(-1)!.data));
    assert.equal(events.at(-1)!.data.result.tokens.codes.length, 16);
    assert.equal(await w.exited, 0);
  });
});

describe('queue: faults', { timeout: LIMIT_MS }, () => {
  let redis: TestRedis;
  const workers: Proc[] = [];
  const apps: FastifyInstance[] = [];

  before(async () => {
    redis = await TestRedis.start();
  });
  after(async () => {
    for (const w of workers) await w.kill('SIGKILL');
    for (const a of apps) await a.close();
    await redis.dispose();
  });

  it('a worker SIGKILLed mid-job: the job completes on another worker, once, with the same tokens', async () => {
    const { app, base } = await apiServer(redis);
    apps.push(app);
    const a = await fakeWorker(redis.url, 20);
    workers.push(a);
    const ref = await finalOf(base, (await createJob(base, gen(50, 30))).id);
    assert.equal(ref.event, 'done');
    const b = await fakeWorker(redis.url, 20);
    workers.push(b);
    const j = await createJob(base, gen(50, 30));
    let killed = false;
    const hit: { victim?: Proc } = {};
    const all = await readSse(await fetch(base + j.events_url), (e) => {
      if (e.event === 'progress' && e.data.step >= 3 && !killed) {
        killed = true;
        // Whichever worker runs it dies.
        hit.victim = [a, b].find((w) =>
          w.records().some((r) => r.job === j.id && r.msg === 'job started'),
        );
        hit.victim?.proc.kill('SIGKILL');
      }
    });
    assert.ok(killed && hit.victim, 'a worker was killed mid-job');
    const last = all.at(-1)!;
    assert.equal(last.event, 'done', JSON.stringify(last.data));
    assert.equal(all.filter((e) => ['done', 'failed', 'cancelled'].includes(e.event)).length, 1);
    assert.deepEqual(last.data.result.tokens, ref.data.result.tokens);
    const survivor = hit.victim === a ? b : a;
    assert.equal(
      survivor.records().filter((r) => r.job === j.id && r.msg === 'job finished').length,
      1,
    );
  });

  it('Redis away: 503 meanwhile; back: the server and workers recover without restarts', async () => {
    const { app, base } = await apiServer(redis);
    apps.push(app);
    if (workers.every((w) => w.proc.exitCode !== null || w.proc.signalCode !== null))
      workers.push(await fakeWorker(redis.url, 5));
    await redis.stop();
    await until(
      async () => (await fetch(base + '/v1/models')).status === 503,
      'a 503 from /v1/models',
    );
    const r = await post(base, '/v1/jobs', gen(60, 4));
    assert.equal(r.status, 503);
    assert.ok(Number(r.headers.get('retry-after')) > 0);
    assert.equal((await fetch(base + '/healthz')).status, 503);
    await redis.launch();
    await until(
      async () => (await json(await fetch(base + '/v1/models'))).data.length === 1,
      'the worker to be listed again',
    );
    assert.equal((await fetch(base + '/healthz')).status, 200);
    assert.equal((await finalOf(base, (await createJob(base, gen(61, 4))).id)).event, 'done');
  });

  it('the API server restarting: queued jobs survive and their results are fetched by id', async () => {
    const first = await apiServer(redis);
    const live = workers.filter((w) => w.proc.exitCode === null && w.proc.signalCode === null);
    assert.ok(live.length >= 1);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await createJob(first.base, gen(70 + i, 40))).id);
    await first.app.close();
    const second = await apiServer(redis);
    apps.push(second.app);
    for (const id of ids) {
      const last = await finalOf(second.base, id);
      assert.equal(last.event, 'done', JSON.stringify(last.data));
      const png = await fetch(second.base + last.data.result.image_url);
      assert.equal(png.status, 200);
    }
    const j = await json(await fetch(`${second.base}/v1/jobs/${ids[0]}`));
    assert.equal(j.status, 'succeeded');
    assert.equal((await fetch(`${second.base}/v1/jobs/job_${'0'.repeat(24)}`)).status, 404);
  });
});

describe('queue: results in a shared folder (--results DIR)', { timeout: LIMIT_MS }, () => {
  it('the worker writes the PNG there and the API server serves it', async () => {
    const redis = await TestRedis.start();
    const dir = mkdtempSync(join(tmpdir(), 'dimoo-results-'));
    const { app, base } = await apiServer(redis, {}, dir);
    const w = await fakeWorker(redis.url, 2, ['--results', dir]);
    try {
      const last = await finalOf(base, (await createJob(base, gen(80, 4))).id);
      assert.equal(last.event, 'done');
      const name = String(last.data.result.image_url).split('/').pop()!;
      assert.ok(readdirSync(dir).includes(name), 'the PNG is in the folder');
      const png = await fetch(base + last.data.result.image_url);
      assert.equal(png.status, 200);
      assert.deepEqual(Buffer.from(await png.arrayBuffer()), readFileSync(join(dir, name)));
    } finally {
      await w.kill('SIGKILL');
      await app.close();
      await redis.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
