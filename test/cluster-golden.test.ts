/* eslint-disable @typescript-eslint/no-explicit-any -- response JSON is checked field by field */
/**
 * The whole cluster as separate processes: a real redis-server, one
 * `dimoo serve --queue` and two `dimoo worker` processes on the golden tiny
 * checkpoint. 20 mixed jobs; one worker is SIGKILLed while it runs one.
 * Every job must finish once, with exactly the output the embedded
 * (single-process) server gives for the same request.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import sharp from 'sharp';
import { WorkerDimoo } from '../src/runtime/worker-dimoo.js';
import { createServer } from '../src/server/app.js';
import { dimoo, FAST_QUEUE, json, post, readSse, type Proc } from './helpers/cluster.js';
import { goldenCheckpointDir } from './helpers/golden.js';
import { TestRedis } from './helpers/redis.js';

/** A hang fails the suite (and frees the test run) instead of blocking it; generous for a loaded machine. */
const LIMIT_MS = 10 * 60_000;

async function dataUrl(w: number, h: number): Promise<string> {
  const px = Buffer.alloc(w * h * 3);
  for (let i = 0; i < w * h; i++) {
    px[i * 3] = (i * 7) % 256;
    px[i * 3 + 1] = (i * 13) % 256;
    px[i * 3 + 2] = 200;
  }
  const png = await sharp(px, { raw: { width: w, height: h, channels: 3 } })
    .png()
    .toBuffer();
  return `data:image/png;base64,${png.toString('base64')}`;
}

async function runTo(base: string, body: unknown): Promise<any> {
  const r = await post(base, '/v1/jobs', body);
  const j = await json(r);
  assert.equal(r.status, 202, JSON.stringify(j));
  const last = (await readSse(await fetch(base + j.events_url))).at(-1)!;
  assert.equal(last.event, 'done', JSON.stringify(last.data));
  return last.data.result;
}

/** What must match between runs: tokens of images, text of answers. */
function output(result: any): unknown {
  return result.text !== undefined ? { text: result.text } : { tokens: result.tokens };
}

describe(
  'queue: API server + two golden workers as processes, one SIGKILLed mid-job',
  { timeout: LIMIT_MS },
  () => {
    let redis: TestRedis;
    const procs: Proc[] = [];
    let api: WorkerDimoo;
    let embedded: FastifyInstance;

    before(async () => {
      redis = await TestRedis.start();
      api = await WorkerDimoo.load(goldenCheckpointDir(), { threads: 1 });
      embedded = await createServer({ api, limits: { maxQueue: 64 } });
      await embedded.listen({ host: '127.0.0.1', port: 0 });
    });
    after(async () => {
      for (const p of procs) await p.kill('SIGKILL');
      await embedded.close();
      await api.dispose();
      await redis.dispose();
    });

    it('20 mixed jobs all complete once, token for token as in one process', async () => {
      const ebase = `http://127.0.0.1:${(embedded.server.address() as { port: number }).port}`;
      const img = await dataUrl(64, 48);
      const grid = (
        await runTo(ebase, { task: 'generate', prompt: 'a bird', size: '64x48', steps: 4, seed: 1 })
      ).tokens;
      const bodies: any[] = [];
      for (let i = 0; i < 20; i++) {
        const k = i % 5;
        if (k === 0)
          bodies.push({
            task: 'generate',
            prompt: `a red fox ${i}`,
            size: '64x48',
            // Long enough that a kill at step 2 lands while the job still runs: at 48
            // steps (~0.2 s of work on the tiny model) a loaded CI machine once
            // delivered the step-2 progress event after the worker had finished the
            // job, so nothing failed over. 240 is within the server's maxSteps (256).
            steps: 240,
            seed: i,
            temperature: 0,
          });
        else if (k === 1)
          bodies.push({
            task: 'generate',
            prompt: `a boat ${i}`,
            size: '48x48',
            steps: 12,
            seed: 100 + i,
          });
        else if (k === 2)
          bodies.push({
            task: 'retouch',
            image: { tokens: grid },
            mask: { cells: grid.codes.map((_: number, c: number) => (c % 3 === 0 ? 1 : 0)) },
            prompt: 'a cat',
            steps: 8,
            seed: i,
          });
        else if (k === 3)
          bodies.push({
            task: 'inpaint',
            image: { data_url: img },
            mask: { rects: [{ x: 0, y: 0, width: 32, height: 16 }] },
            prompt: 'sun',
            steps: 8,
            seed: i,
          });
        else
          bodies.push({
            task: 'understand',
            image: { tokens: grid },
            question: `what is it ${i} ?`,
            max_tokens: 16,
            block_length: 8,
            steps: 8,
          });
      }
      const expected: unknown[] = [];
      for (const b of bodies) expected.push(output(await runTo(ebase, b)));

      const serve = dimoo([
        'serve',
        '--queue',
        redis.url,
        '--port',
        '0',
        '--max-queue',
        '64',
        '--log-level',
        'warn',
      ]);
      procs.push(serve);
      const line = await serve.waitLine((l) => /serving .* at http/.test(l), 'the API server');
      const base = /at (http:\/\/[^/ ]+)\//.exec(line)![1]!;
      const workerArgs = [
        'worker',
        '--queue',
        redis.url,
        '--model',
        goldenCheckpointDir(),
        '--threads',
        '1',
        ...FAST_QUEUE,
      ];
      const w1 = dimoo(workerArgs);
      const w2 = dimoo(workerArgs);
      procs.push(w1, w2);
      for (const w of [w1, w2]) await w.waitLine((l) => l.includes('"worker ready"'), 'a worker');

      const ids: string[] = [];
      for (const b of bodies) {
        const r = await post(base, '/v1/jobs', b);
        const j = await json(r);
        assert.equal(r.status, 202, JSON.stringify(j));
        ids.push(j.id);
      }
      const long = new Set(ids.filter((_, i) => bodies[i].steps === 240));
      const streamsDone = Promise.all(
        ids.map(async (id) => readSse(await fetch(`${base}/v1/jobs/${id}/events`))),
      );
      // Kill a worker the moment its own log says a long job started: the
      // worker's stdout is the earliest and most direct signal (a progress
      // event goes Redis -> API -> SSE and, on a loaded machine, can arrive
      // after the job has already finished on the victim).
      // (A line printed before this watch began counts only if its job is still running.)
      const startedLong = (w: Proc, l: string): boolean =>
        l.includes('"job started"') &&
        [...long].some(
          (id) =>
            l.includes(id) && !w.records().some((r) => r.job === id && r.msg === 'job finished'),
        );
      const victim = await new Promise<Proc>((resolve) => {
        const stops: (() => void)[] = [];
        let chosen = false; // a line already printed fires before the other worker is watched
        for (const w of [w1, w2])
          stops.push(
            w.onFirstLine(
              (l) => startedLong(w, l),
              () => {
                if (chosen) return;
                chosen = true;
                stops.forEach((s) => s());
                w.proc.kill('SIGKILL');
                resolve(w);
              },
            ),
          );
        if (chosen) stops.forEach((s) => s());
      });
      assert.equal(await victim.exited, null, 'killed by the signal');
      await victim.closed;
      const survivor = victim === w1 ? w2 : w1;
      // Judged from the victim's whole log: the jobs it started and never finished.
      const vrecs = victim.records();
      const cut = vrecs
        .filter((r) => r.msg === 'job started')
        .map((r) => r.job as string)
        .filter((id) => !vrecs.some((r) => r.job === id && r.msg === 'job finished'));
      assert.ok(cut.length >= 1, 'the victim was killed while it ran a job');
      const streams = await streamsDone;
      for (let i = 0; i < ids.length; i++) {
        const terminal = streams[i]!.filter((e) =>
          ['done', 'failed', 'cancelled'].includes(e.event),
        );
        assert.equal(terminal.length, 1, `job ${i}: one final event`);
        assert.equal(terminal[0]!.event, 'done', `job ${i}: ${JSON.stringify(terminal[0]!.data)}`);
        assert.deepEqual(
          output(terminal[0]!.data.result),
          expected[i],
          `job ${i} (${bodies[i].task})`,
        );
        // Also by id, as a client that lost its stream would ask.
        const st = await json(await fetch(`${base}/v1/jobs/${ids[i]}`));
        assert.equal(st.status, 'succeeded');
      }
      // No job finished twice across the workers; the killed one finished on the survivor.
      const finished = [...w1.records(), ...w2.records()].filter((r) => r.msg === 'job finished');
      assert.equal(new Set(finished.map((r) => r.job)).size, finished.length);
      assert.equal(finished.length, 20);
      for (const id of cut)
        assert.ok(
          survivor.records().some((r) => r.job === id && r.msg === 'job finished'),
          `job ${id}, cut off by the kill, finished on the survivor`,
        );
      // Images of the cluster are served by the API server.
      const img0 = streams[0]!.at(-1)!.data.result.image_url;
      assert.equal((await fetch(base + img0)).status, 200);
    });
  },
);
