/**
 * Regression tests for the server (issue 15, items 4-7): web pages cannot
 * drive a key-less local server, the HTTP layer's own errors keep the
 * documented shape, /v1/jobs refuses before queueing what would fail, and
 * SIGTERM / SIGINT stop `dimoo serve` (and the CLI) cleanly. Signal tests
 * spawn the real CLI and wait on its output lines, never on the clock.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import sharp from 'sharp';
import type { DimooApi } from '../src/pipelines/types.js';
import { FakeDimoo } from './helpers/fake-dimoo.js';
import { createServer, type ServerOptions } from '../src/server/app.js';
import { goldenCheckpointDir } from './helpers/golden.js';

let api: DimooApi;
const apps: FastifyInstance[] = [];

async function serve(opts: Partial<ServerOptions> = {}): Promise<{ port: number; base: string }> {
  const app = await createServer({ api, ...opts });
  await app.listen({ host: '127.0.0.1', port: 0 });
  apps.push(app);
  const port = (app.server.address() as net.AddressInfo).port;
  return { port, base: `http://127.0.0.1:${port}` };
}

before(async () => {
  api = await FakeDimoo.load('fake', { stepMs: 1 });
});
after(async () => {
  for (const a of apps) await a.close();
  await api.dispose();
});

interface Raw {
  status: number;
  body: string;
}

/** One request with exactly these headers (fetch cannot set Host). */
function request(
  port: number,
  method: string,
  p: string,
  headers: Record<string, string>,
  body?: Buffer | string,
): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: p, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode!, body: Buffer.concat(chunks).toString('utf8') }),
      );
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Bytes as they are on the wire: for requests no client library would send. */
function rawSocket(port: number, data: string): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => s.end(data));
    let out = '';
    s.on('data', (d: Buffer) => (out += d.toString('latin1')));
    s.on('error', reject);
    s.on('close', () => {
      const m = /^HTTP\/1\.1 (\d{3})/.exec(out);
      const i = out.indexOf('\r\n\r\n');
      resolve({ status: m ? Number(m[1]) : 0, body: i >= 0 ? out.slice(i + 4) : '' });
    });
  });
}

/** The documented error shape, a 4xx, no stack trace. */
function assertErrorShape(r: Raw, status: number, message?: RegExp): void {
  assert.equal(r.status, status, r.body);
  const b = JSON.parse(r.body) as { error: Record<string, unknown> };
  assert.deepEqual(Object.keys(b), ['error']);
  for (const k of ['message', 'type', 'code']) assert.equal(typeof b.error[k], 'string', r.body);
  assert.ok('param' in b.error, r.body);
  if (message) assert.match(b.error['message'] as string, message);
  assert.doesNotMatch(r.body, /\n\s+at /);
}

function multipartPng(bytes: Buffer): { body: Buffer; type: string } {
  const boundary = '----dimoo15';
  const body = Buffer.concat([
    Buffer.from(
      `--${boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n`,
    ),
    bytes,
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
  return { body, type: `multipart/form-data; boundary=${boundary}` };
}

// ------------------------------------------------------------------ 5. drive-by access

describe('5. without an API key, other web pages and rebound DNS names are refused', () => {
  let port: number;
  let png: Buffer;
  before(async () => {
    ({ port } = await serve());
    png = await sharp({
      create: { width: 32, height: 32, channels: 3, background: { r: 9, g: 99, b: 199 } },
    })
      .png()
      .toBuffer();
  });

  it('a multipart POST from a foreign page (no preflight needed) is a 403', async () => {
    const m = multipartPng(png);
    const r = await request(
      port,
      'POST',
      '/v1/tokens/encode',
      { 'content-type': m.type, origin: 'http://evil.example', host: `127.0.0.1:${port}` },
      m.body,
    );
    assertErrorShape(r, 403, /evil\.example/);
  });

  it('the same request from the server’s own page is served', async () => {
    const m = multipartPng(png);
    const r = await request(
      port,
      'POST',
      '/v1/tokens/encode',
      { 'content-type': m.type, origin: `http://127.0.0.1:${port}`, host: `127.0.0.1:${port}` },
      m.body,
    );
    assert.equal(r.status, 200, r.body);
  });

  it('a foreign Host (DNS rebinding) is a 403, loopback names are served', async () => {
    assertErrorShape(
      await request(port, 'GET', '/v1/models', { host: `attacker.example:${port}` }),
      403,
      /attacker\.example/,
    );
    assertErrorShape(await request(port, 'GET', '/', { host: 'attacker.example' }), 403);
    for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `app.localhost:${port}`]) {
      assert.equal((await request(port, 'GET', '/v1/models', { host })).status, 200, host);
    }
  });

  it('origins listed with --cors are served; an API key lifts the rule', async () => {
    const listed = await serve({ cors: ['http://app.example'] });
    const ok = await request(listed.port, 'GET', '/v1/models', {
      origin: 'http://app.example',
      host: `127.0.0.1:${listed.port}`,
    });
    assert.equal(ok.status, 200, ok.body);
    const other = await request(listed.port, 'GET', '/v1/models', {
      origin: 'http://evil.example',
      host: `127.0.0.1:${listed.port}`,
    });
    assertErrorShape(other, 403);
    const keyed = await serve({ apiKey: 'k' });
    const withKey = await request(keyed.port, 'GET', '/v1/models', {
      origin: 'http://elsewhere.example',
      host: `127.0.0.1:${keyed.port}`,
      authorization: 'Bearer k',
    });
    assert.equal(withKey.status, 200, withKey.body);
  });
});

// ------------------------------------------------------------------ 6. the HTTP layer's own errors

describe("6. fastify's and Node's own errors in the documented shape", () => {
  let port: number;
  before(async () => {
    ({ port } = await serve());
  });
  const H = (p: string, extra = ''): string =>
    `GET ${p} HTTP/1.1\r\nHost: localhost\r\n${extra}\r\n`;
  const post = (headers: string, body: string): string =>
    `POST /v1/images/generations HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n${headers}\r\n${body}`;

  for (const [name, data, status] of [
    ['bad percent-encoding in a static path', H('/static/%'), 400],
    ['bad percent-encoding in a job id', H('/v1/jobs/%zz'), 400],
    ['a route parameter over the length limit (414)', H(`/v1/jobs/${'a'.repeat(300)}`), 414],
    ['a request line over the header limit (431)', H(`/v1/jobs/${'a'.repeat(40_000)}`), 431],
    ['headers over the limit (431)', H('/healthz', `X-A: ${'a'.repeat(40_000)}\r\n`), 431],
    [
      'a malformed chunked body',
      post('Transfer-Encoding: chunked\r\n', 'zz\r\n{}\r\n0\r\n\r\n'),
      400,
    ],
    ['a non-numeric Content-Length', post('Content-Length: abc\r\n', '{}'), 400],
    [
      'two different Content-Lengths',
      post('Content-Length: 2\r\nContent-Length: 3\r\n', '{}'),
      400,
    ],
    ['not HTTP at all', 'HELLO\r\n\r\n', 400],
  ] as const) {
    it(name, async () => assertErrorShape(await rawSocket(port, data), status));
  }
});

// ------------------------------------------------------------------ 7. validate before queueing

describe('7. /v1/jobs refuses before queueing what the synchronous routes refuse', () => {
  let base: string;
  let app: FastifyInstance;
  before(async () => {
    ({ base } = await serve());
    app = apps.at(-1)!;
  });
  const postJson = async (p: string, body: unknown): Promise<Raw> => {
    const r = await fetch(base + p, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    return { status: r.status, body: await r.text() };
  };
  const grid = { width: 64, height: 32, codes: Array.from({ length: 8 }, (_, i) => i) };

  /** A 400 naming `param`, and no job was created for it. */
  async function refused(body: unknown, param: string, message: RegExp): Promise<void> {
    const before = app.dimoo.queue.waitingCount + (app.dimoo.queue.running ? 1 : 0);
    const r = await postJson('/v1/jobs', body);
    assertErrorShape(r, 400, message);
    assert.equal((JSON.parse(r.body) as { error: { param: string } }).error.param, param);
    assert.equal(app.dimoo.queue.waitingCount + (app.dimoo.queue.running ? 1 : 0), before);
  }

  it('a mask of cells that selects none', () =>
    refused(
      { task: 'inpaint', prompt: 'x', image: { tokens: grid }, mask: { cells: Array(8).fill(0) } },
      'mask',
      /no token cell/,
    ));

  it('a retouch mask that selects none', () =>
    refused(
      { task: 'retouch', image: { tokens: grid }, mask: { cells: Array(8).fill(0) } },
      'mask',
      /no token cell/,
    ));

  it('an inpaint ratio of zero, an outpaint ratio that keeps everything', async () => {
    await refused(
      { task: 'inpaint', prompt: 'x', image: { tokens: grid }, mask: { ratio: { h: 0, w: 0 } } },
      'mask',
      /no token cell/,
    );
    await refused(
      { task: 'outpaint', prompt: 'x', image: { tokens: grid }, mask: { ratio: { h: 1, w: 1 } } },
      'mask',
      /no token cell/,
    );
  });

  it('understanding with block_length 3 (does not divide the answer)', async () => {
    const q = { task: 'understand', question: 'what?', image: { tokens: grid } };
    await refused(
      { ...q, max_tokens: 16, block_length: 3 },
      'block_length',
      /multiple of blockLength/,
    );
    await refused({ ...q, max_tokens: 16, block_length: 8, steps: 3 }, 'steps', /number of blocks/);
    const chat = await postJson('/v1/chat/completions', {
      max_tokens: 16,
      block_length: 3,
      messages: [{ role: 'user', content: 'what?' }],
    });
    assert.equal(chat.status, 400, chat.body);
  });

  it('steps next to timesteps (or cfg_scale next to guidance) is a conflict, not a guess', async () => {
    await refused(
      { task: 'generate', prompt: 'x', size: '32x32', steps: 4, timesteps: 8 },
      'timesteps',
      /only one/,
    );
    await refused(
      { task: 'generate', prompt: 'x', size: '32x32', cfg_scale: 1, guidance: 2 },
      'guidance',
      /only one/,
    );
    assertErrorShape(
      await postJson('/v1/images/generations', {
        prompt: 'x',
        size: '32x32',
        steps: 4,
        timesteps: 8,
      }),
      400,
      /only one/,
    );
  });

  it('valid masks are still queued', async () => {
    const r = await postJson('/v1/jobs', {
      task: 'inpaint',
      prompt: 'x',
      image: { tokens: grid },
      mask: { cells: [0, 1, 0, 0, 0, 0, 0, 0] },
      steps: 2,
    });
    assert.equal(r.status, 202, r.body);
  });
});

// ------------------------------------------------------------------ 4. signals

const CLI_JS = path.resolve('dist/src/cli/main.js');
const MODEL = goldenCheckpointDir();

interface Spawned {
  child: ChildProcessWithoutNullStreams;
  stderr: () => string;
  /** Resolves with the first stderr match of `re` (an event: a line the process printed). */
  waitFor: (re: RegExp) => Promise<RegExpExecArray>;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function spawnCli(args: string[]): Spawned {
  const child = spawn(process.execPath, [CLI_JS, ...args], {
    env: { ...process.env, DIMOO_DEBUG: '' },
  });
  let err = '';
  const waiters: { re: RegExp; resolve: (m: RegExpExecArray) => void }[] = [];
  const check = (): void => {
    for (const w of [...waiters]) {
      const m = w.re.exec(err);
      if (m) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(m);
      }
    }
  };
  child.stderr.on('data', (d: Buffer) => {
    err += d.toString();
    check();
  });
  child.stdout.resume();
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal })),
  );
  return {
    child,
    stderr: () => err,
    waitFor: (re) =>
      new Promise((resolve, reject) => {
        waiters.push({ re, resolve });
        check();
        void exit.then(() => reject(new Error(`exited before ${re}:\n${err}`)));
      }),
    exit,
  };
}

/** Exit status as a shell reports it (a death by signal is 128 + its number). */
function shellStatus(e: { code: number | null; signal: NodeJS.Signals | null }): number {
  if (e.signal) return 128 + (e.signal === 'SIGINT' ? 2 : e.signal === 'SIGTERM' ? 15 : 100);
  return e.code!;
}

/** Starts `dimoo serve` on a free port; resolves with its base URL once it says it serves. */
async function startServe(): Promise<Spawned & { base: string }> {
  const s = spawnCli([
    'serve',
    '--model',
    MODEL,
    '--port',
    '0',
    '--threads',
    '1',
    '--log-level',
    'warn',
  ]);
  const m = await s.waitFor(/serving \S+ at (http:\/\/\S+?)\/? /);
  return { ...s, base: m[1]!.replace(/\/$/, '') };
}

/** Posts a long generation; resolves once its job runs (first progress event on its stream). */
async function startLongJob(base: string): Promise<string> {
  const r = await fetch(`${base}/v1/jobs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      task: 'generate',
      prompt: 'x',
      size: '512x512',
      steps: 256,
      preview_every: 0,
    }),
  });
  const j = (await r.json()) as { id: string; events_url: string };
  assert.equal(r.status, 202);
  const ev = await fetch(base + j.events_url);
  const reader = ev.body!.getReader();
  let text = '';
  while (!/event: progress/.test(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`event stream ended before any progress:\n${text}`);
    text += Buffer.from(value).toString();
  }
  void reader.cancel();
  return j.id;
}

describe('4. signals: clean shutdown, a second Ctrl-C quits at once', () => {
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    it(`${sig} on a busy server: jobs cancelled, waiting clients get JSON errors, exit 0`, async () => {
      const s = await startServe();
      try {
        await startLongJob(s.base);
        // A synchronous request queued behind the running job.
        const sync = fetch(`${s.base}/v1/images/generations`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ prompt: 'y', size: '512x512', steps: 256 }),
        });
        // Queued means the server has it: wait for /healthz to say so (a reply, not a delay).
        for (;;) {
          const h = (await (await fetch(`${s.base}/healthz`)).json()) as {
            queue: { waiting: number };
          };
          if (h.queue.waiting === 1) break;
        }
        s.child.kill(sig);
        const res = await sync;
        const body = (await res.json()) as { error?: { message: string } };
        assert.ok(res.status >= 400 && res.status < 600, `status ${res.status}`);
        assert.equal(typeof body.error?.message, 'string', JSON.stringify(body));
        const e = await s.exit;
        assert.deepEqual(e, { code: 0, signal: null }, s.stderr());
        assert.doesNotMatch(s.stderr(), /terminate called|Napi::Error/);
      } finally {
        s.child.kill('SIGKILL');
      }
    });
  }

  it('a second Ctrl-C while the server samples exits 130, not 134', async () => {
    const s = await startServe();
    try {
      await startLongJob(s.base);
      s.child.kill('SIGINT');
      await s.waitFor(/Ctrl-C again/);
      s.child.kill('SIGINT');
      const e = await s.exit;
      assert.equal(shellStatus(e), 130, `${JSON.stringify(e)}\n${s.stderr()}`);
      assert.doesNotMatch(s.stderr(), /terminate called|Napi::Error/);
    } finally {
      s.child.kill('SIGKILL');
    }
  });

  it('a second Ctrl-C while the CLI samples exits 130, not 134', async () => {
    const out = path.join(process.cwd(), 'dist', `.sigint-${process.pid}.png`);
    const s = spawnCli([
      'generate',
      '--model',
      MODEL,
      '--prompt',
      'a cat',
      '--width',
      '512',
      '--height',
      '512',
      '--timesteps',
      '256',
      '--threads',
      '1',
      '--out',
      out,
      '--progress',
    ]);
    try {
      await s.waitFor(/\d+\/256/);
      s.child.kill('SIGINT');
      await s.waitFor(/Ctrl-C again/);
      s.child.kill('SIGINT');
      const e = await s.exit;
      assert.equal(shellStatus(e), 130, `${JSON.stringify(e)}\n${s.stderr()}`);
      assert.doesNotMatch(s.stderr(), /terminate called|Napi::Error/);
    } finally {
      s.child.kill('SIGKILL');
    }
  });
});
