/**
 * `--max-jobs-per-key`: unfinished jobs per API key, counted by the API
 * server in front of any backend (here the embedded one, fake model).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { createServer } from '../src/server/app.js';
import { FakeDimoo } from './helpers/fake-dimoo.js';
import { json, readSse } from './helpers/cluster.js';

describe('server: per-API-key job limit', () => {
  let app: FastifyInstance;
  let base: string;
  before(async () => {
    const api = await FakeDimoo.load('fake-dir', { stepMs: 2 });
    app = await createServer({
      api,
      apiKey: 'k1',
      limits: { maxJobsPerKey: 1, maxSteps: 100_000 },
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
  });
  after(async () => {
    await app.close();
  });

  const submit = (steps: number) =>
    fetch(`${base}/v1/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer k1' },
      body: JSON.stringify({ task: 'generate', prompt: 'x', size: '32x32', steps, seed: 1 }),
    });

  it('refuses a second unfinished job of the same key with 429, accepts one again when it is done', async () => {
    const first = await json(await submit(5000));
    const second = await submit(4);
    assert.equal(second.status, 429);
    assert.equal((await json(second)).error.dimoo_code, 'E_KEY_LIMIT');
    assert.ok(Number(second.headers.get('retry-after')) > 0);
    await fetch(`${base}/v1/jobs/${first.id}/cancel`, {
      method: 'POST',
      headers: { authorization: 'Bearer k1' },
    });
    const events = await readSse(
      await fetch(`${base}${first.events_url}`, { headers: { authorization: 'Bearer k1' } }),
    );
    assert.equal(events.at(-1)!.event, 'cancelled');
    const third = await submit(4);
    assert.equal(third.status, 202);
  });
});
