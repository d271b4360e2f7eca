/**
 * Security checks on a real server: no file outside the served set can be
 * reached, uploads are bounded, the API key guards the API, CORS is off
 * unless asked, errors never carry stack traces. The model is the in-process
 * fake (these checks do not depend on model output).
 */
import assert from 'node:assert/strict';
import * as http from 'node:http';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import sharp from 'sharp';
import type { DimooApi } from '../src/pipelines/types.js';
import { FakeDimoo } from './helpers/fake-dimoo.js';
import { createServer, type ServerOptions } from '../src/server/app.js';
import { startServer } from '../src/server/start.js';

let api: DimooApi;
const apps: FastifyInstance[] = [];

async function serve(
  opts: Partial<ServerOptions> = {},
): Promise<{ host: string; port: number; base: string }> {
  const app = await createServer({ api, ...opts });
  await app.listen({ host: '127.0.0.1', port: 0 });
  apps.push(app);
  const port = (app.server.address() as { port: number }).port;
  return { host: '127.0.0.1', port, base: `http://127.0.0.1:${port}` };
}

/** A request with the path sent exactly as written (fetch would normalise "..", so it cannot test traversal). */
function rawGet(
  port: number,
  rawPath: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, path: rawPath, method: 'GET', headers },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode!,
            body: Buffer.concat(chunks).toString('utf8'),
            headers: res.headers,
          }),
        );
      },
    );
    req.on('error', reject);
    req.end();
  });
}

before(async () => {
  api = await FakeDimoo.load('fake', { stepMs: 1 });
});
after(async () => {
  for (const a of apps) await a.close();
  await api.dispose();
});

describe('security: file-serving routes', () => {
  let port: number;
  before(async () => {
    ({ port } = await serve());
  });

  it('serves the page with a strict CSP and nosniff', async () => {
    const r = await rawGet(port, '/');
    assert.equal(r.status, 200);
    assert.match(r.body, /<title>DiMOO<\/title>/);
    assert.match(String(r.headers['content-security-policy']), /default-src 'none'/);
    assert.equal(r.headers['x-content-type-options'], 'nosniff');
    assert.equal(r.headers['x-frame-options'], 'DENY');
    const js = await rawGet(port, '/static/app.js');
    assert.equal(js.status, 200);
    assert.match(String(js.headers['content-type']), /text\/javascript/);
  });

  const traversals = [
    '/static/../package.json',
    '/static/..%2fpackage.json',
    '/static/..%2Fpackage.json',
    '/static/%2e%2e%2fpackage.json',
    '/static/%2e%2e/%2e%2e/package.json',
    '/static/....//....//package.json',
    '/static/..%5cpackage.json',
    '/static/..\\..\\package.json',
    '/static/%252e%252e%252fpackage.json',
    '/static/app.js%00.png',
    '/static/.%2e/.%2e/.%2e/.%2e/etc/passwd',
    '/static/%2fetc%2fpasswd',
    '/static//etc/passwd',
    '/static/index.html/..%2f..%2f..%2fpackage.json',
    '/../package.json',
    '/%2e%2e/package.json',
    '/src/web/static/app.js',
    '/v1/files/../../package.json',
    '/v1/files/..%2f..%2fpackage.json',
    '/v1/files/%2e%2e%2f%2e%2e%2fetc%2fpasswd',
    '/v1/files/00000000000000000000000000000000.png',
    '/v1/files/00000000000000000000000000000000.png%00',
    '/v1/jobs/..%2f..%2fpackage.json',
  ];
  for (const p of traversals) {
    it(`refuses ${p}`, async () => {
      const r = await rawGet(port, p);
      assert.ok([400, 404].includes(r.status), `${p}: status ${r.status}`);
      assert.doesNotMatch(r.body, /"name":\s*"dimoo"|root:x:0:0|onnxruntime/);
      assert.match(String(r.headers['content-type']), /application\/json/);
      assert.doesNotMatch(r.body, /\n\s+at /);
    });
  }
});

describe('security: oversized uploads and bodies', () => {
  let base: string;
  before(async () => {
    ({ base } = await serve({
      limits: { uploadBytes: 64 * 1024, bodyBytes: 256 * 1024, uploadPixels: 1_000_000 },
    }));
  });

  it('refuses an oversized multipart file with 413 and stays healthy', async () => {
    const f = new FormData();
    f.append('prompt', 'x');
    f.append('image', new Blob([new Uint8Array(200 * 1024)], { type: 'image/png' }), 'big.png');
    const r = await fetch(base + '/v1/images/edits', { method: 'POST', body: f });
    assert.equal(r.status, 413);
    assert.equal(
      ((await r.json()) as { error: { dimoo_code: string } }).error.dimoo_code,
      'E_TOO_LARGE',
    );
    assert.equal((await fetch(base + '/healthz')).status, 200);
  });

  it('refuses an oversized JSON body (data URL) with 413', async () => {
    const r = await fetch(base + '/v1/chat/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        messages: [
          {
            role: 'user',
            content: [
              {
                type: 'image_url',
                image_url: { url: 'data:image/png;base64,' + 'A'.repeat(300_000) },
              },
            ],
          },
        ],
      }),
    });
    assert.equal(r.status, 413);
  });

  it('refuses an oversized text field', async () => {
    const f = new FormData();
    f.append('prompt', 'p'.repeat(40_000));
    const r = await fetch(base + '/v1/images/edits', { method: 'POST', body: f });
    assert.equal(r.status, 413);
  });

  it('refuses a small file that decodes to too many pixels (decompression bomb) with 400', async () => {
    // A few KiB of PNG that decodes to 3 megapixels: refused from its header, before decoding.
    const bomb = await sharp({
      create: { width: 3000, height: 1000, channels: 3, background: { r: 0, g: 0, b: 0 } },
    })
      .png({ compressionLevel: 9 })
      .toBuffer();
    assert.ok(bomb.length < 64 * 1024);
    const f = new FormData();
    f.append('prompt', 'x');
    f.append('image', new Blob([new Uint8Array(bomb)], { type: 'image/png' }), 'bomb.png');
    const r = await fetch(base + '/v1/images/edits', { method: 'POST', body: f });
    assert.equal(r.status, 400);
    assert.match(
      ((await r.json()) as { error: { message: string } }).error.message,
      /larger than allowed/,
    );
  });
});

describe('security: API key', () => {
  const KEY = 'sk-test-0123456789';
  let base: string;
  let port: number;
  before(async () => {
    ({ base, port } = await serve({ apiKey: KEY }));
  });

  const guarded: [string, string, unknown?][] = [
    ['GET', '/v1/models'],
    ['GET', '/v1/models/dimoo-fake'],
    ['POST', '/v1/images/generations', { prompt: 'x', size: '32x32', steps: 1 }],
    ['POST', '/v1/images/edits', {}],
    ['POST', '/v1/chat/completions', {}],
    ['POST', '/v1/jobs', { task: 'generate', prompt: 'x', size: '32x32', steps: 1 }],
    ['GET', '/v1/jobs/job_000000000000000000000000'],
    ['GET', '/v1/jobs/job_000000000000000000000000/events'],
    ['POST', '/v1/jobs/job_000000000000000000000000/cancel', {}],
    ['DELETE', '/v1/jobs/job_000000000000000000000000'],
    ['POST', '/v1/tokens/encode', {}],
    ['POST', '/v1/tokens/decode', {}],
  ];

  for (const [method, path, body] of guarded) {
    it(`${method} ${path} needs the key`, async () => {
      const init = (h: Record<string, string>): RequestInit => ({
        method,
        headers: body !== undefined ? { 'content-type': 'application/json', ...h } : h,
        body: body !== undefined ? JSON.stringify(body) : undefined,
      });
      const none = await fetch(base + path, init({}));
      assert.equal(none.status, 401);
      assert.equal(none.headers.get('www-authenticate'), 'Bearer');
      const b = (await none.json()) as { error: { code: string; type: string } };
      assert.equal(b.error.code, 'invalid_api_key');
      assert.equal(b.error.type, 'authentication_error');
      assert.equal(
        (await fetch(base + path, init({ authorization: `Bearer ${KEY}x` }))).status,
        401,
      );
      assert.equal((await fetch(base + path, init({ authorization: `Basic ${KEY}` }))).status, 401);
      const ok = await fetch(base + path, init({ authorization: `Bearer ${KEY}` }));
      assert.notEqual(ok.status, 401);
      await ok.body?.cancel();
    });
  }

  it('accepts X-Api-Key too, and leaves the page, health and result URLs open', async () => {
    assert.equal((await fetch(base + '/v1/models', { headers: { 'x-api-key': KEY } })).status, 200);
    for (const p of ['/', '/static/app.js', '/static/style.css', '/healthz'])
      assert.equal((await rawGet(port, p)).status, 200, p);
    const r = await fetch(base + '/v1/images/generations', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
      body: JSON.stringify({ prompt: 'x', size: '32x32', steps: 1, response_format: 'url' }),
    });
    const url = ((await r.json()) as { data: { url: string }[] }).data[0]!.url;
    // Result URLs are unguessable capabilities (128 random bits), like OpenAI's.
    assert.equal((await fetch(url)).status, 200);
  });
});

describe('security: CORS, binding, errors', () => {
  it('sends no CORS headers by default', async () => {
    const { base } = await serve();
    const r = await fetch(base + '/v1/models', { headers: { origin: 'http://evil.example' } });
    assert.equal(r.headers.get('access-control-allow-origin'), null);
    const pre = await fetch(base + '/v1/jobs', {
      method: 'OPTIONS',
      headers: { origin: 'http://evil.example', 'access-control-request-method': 'POST' },
    });
    assert.equal(pre.headers.get('access-control-allow-origin'), null);
  });

  it('allows only the listed origins when CORS is asked for, preflight included, even with an API key', async () => {
    const { base } = await serve({ cors: ['http://app.example'], apiKey: 'k' });
    const pre = await fetch(base + '/v1/jobs', {
      method: 'OPTIONS',
      headers: {
        origin: 'http://app.example',
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization,content-type',
      },
    });
    assert.ok(pre.status < 300, String(pre.status));
    assert.equal(pre.headers.get('access-control-allow-origin'), 'http://app.example');
    const other = await fetch(base + '/v1/models', {
      headers: { origin: 'http://evil.example', authorization: 'Bearer k' },
    });
    assert.equal(other.headers.get('access-control-allow-origin'), null);
  });

  it('binds to 127.0.0.1 by default', async () => {
    const s = await startServer({
      modelDir: 'fake',
      port: 0,
      logger: false,
      loadModel: (d) => FakeDimoo.load(d),
    });
    try {
      const addr = s.app.server.address() as { address: string };
      assert.equal(addr.address, '127.0.0.1');
      assert.match(s.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    } finally {
      await s.close();
    }
  });

  it('reports a dead model worker on /healthz with 503', async () => {
    const dead = Object.create(api, { alive: { value: false } }) as DimooApi;
    const { base } = await serve({ api: dead });
    const r = await fetch(base + '/healthz');
    assert.equal(r.status, 503);
    assert.equal(((await r.json()) as { status: string }).status, 'model worker stopped');
  });

  it('answers internal failures with a bare 500: no message details, no stack', async () => {
    const broken: DimooApi = Object.create(api) as DimooApi;
    broken.generate = async () => {
      throw new Error('secret internal detail at /home/user/file.ts:12');
    };
    broken.info = () => api.info();
    const { base } = await serve({ api: broken });
    const r = await fetch(base + '/v1/images/generations', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: 'x', size: '32x32', steps: 1 }),
    });
    assert.equal(r.status, 500);
    const text = await r.text();
    assert.doesNotMatch(text, /secret|\/home|at /);
    assert.equal(
      (JSON.parse(text) as { error: { dimoo_code: string } }).error.dimoo_code,
      'E_INTERNAL',
    );
  });
});
