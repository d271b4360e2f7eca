/* eslint-disable @typescript-eslint/no-explicit-any -- response JSON is checked field by field */
/**
 * API tests against a real server on 127.0.0.1 with the golden tiny
 * checkpoint (its VQ-VAE decodes real images, 16 px per token).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import sharp from 'sharp';
import { readPngText } from '../src/image/png-text.js';
import { parseParameters } from '../src/pipelines/parameters.js';
import type { TokenGrid } from '../src/pipelines/types.js';
import { WorkerDimoo } from '../src/runtime/worker-dimoo.js';
import { createServer, type ServerOptions } from '../src/server/app.js';
import { runDimoo } from './helpers/cli.js';
import { goldenCheckpointDir } from './helpers/golden.js';

let api: WorkerDimoo;
const servers: FastifyInstance[] = [];

async function serve(opts: Partial<ServerOptions> = {}): Promise<string> {
  const app = await createServer({ api, ...opts });
  await app.listen({ host: '127.0.0.1', port: 0 });
  servers.push(app);
  const a = app.server.address() as { port: number };
  return `http://127.0.0.1:${a.port}`;
}

async function json(res: Response): Promise<any> {
  const text = await res.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`not JSON (${res.status}): ${text.slice(0, 200)}`);
  }
}

function post(
  base: string,
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<Response> {
  return fetch(base + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
}

async function expectError(res: Response, status: number, code?: string | RegExp): Promise<any> {
  const b = await json(res);
  assert.equal(res.status, status, JSON.stringify(b));
  assert.equal(typeof b.error?.message, 'string');
  assert.equal(typeof b.error?.type, 'string');
  // Our code travels in dimoo_code; `code` is the OpenAI-style one that OpenAI clients read.
  const ours = /^[a-z_]+$/.test(typeof code === 'string' ? code : '')
    ? b.error.code
    : b.error.dimoo_code;
  if (code instanceof RegExp) assert.match(ours, code);
  else if (code) assert.equal(ours, code);
  assert.match(b.error.code, /^[a-z_]+$/, `OpenAI-style code, got ${b.error.code}`);
  assert.ok(!/\n\s+at /.test(JSON.stringify(b)), 'no stack trace');
  return b.error;
}

async function png(
  width: number,
  height: number,
  fill: (x: number, y: number) => [number, number, number, number],
): Promise<Buffer> {
  const data = Buffer.alloc(width * height * 4);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) data.set(fill(x, y), (y * width + x) * 4);
  return sharp(data, { raw: { width, height, channels: 4 } })
    .png()
    .toBuffer();
}

const opaque = (x: number, y: number): [number, number, number, number] => [
  (x * 4) % 256,
  (y * 4) % 256,
  128,
  255,
];

function form(
  parts: Record<string, string | { data: Buffer; name?: string; type?: string }>,
): FormData {
  const f = new FormData();
  for (const [k, v] of Object.entries(parts)) {
    if (typeof v === 'string') f.append(k, v);
    else
      f.append(
        k,
        new Blob([new Uint8Array(v.data)], { type: v.type ?? 'image/png' }),
        v.name ?? `${k}.png`,
      );
  }
  return f;
}

async function pngSize(b64OrBuf: string | Buffer): Promise<[number, number]> {
  const m = await sharp(
    typeof b64OrBuf === 'string' ? Buffer.from(b64OrBuf, 'base64') : b64OrBuf,
  ).metadata();
  return [m.width!, m.height!];
}

/** Reads an SSE response into events until it ends. */
async function sseEvents(res: Response): Promise<{ event: string; data: string }[]> {
  assert.match(res.headers.get('content-type') ?? '', /text\/event-stream/);
  const text = await res.text();
  const out: { event: string; data: string }[] = [];
  for (const block of text.split('\n\n')) {
    if (!block.trim() || block.startsWith(':')) continue;
    let event = 'message';
    const data: string[] = [];
    for (const line of block.split('\n')) {
      if (line.startsWith('event: ')) event = line.slice(7);
      else if (line.startsWith('data: ')) data.push(line.slice(6));
    }
    out.push({ event, data: data.join('\n') });
  }
  return out;
}

async function waitFor(pred: () => Promise<boolean>, ms = 20000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await pred()) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error('timed out waiting');
}

async function runJob(base: string, body: unknown): Promise<any> {
  const res = await post(base, '/v1/jobs', body);
  const j = await json(res);
  assert.equal(res.status, 202, JSON.stringify(j));
  const events = await sseEvents(await fetch(base + j.events_url));
  const last = events.at(-1)!;
  assert.equal(last.event, 'done', last.data);
  return JSON.parse(last.data);
}

before(async () => {
  api = await WorkerDimoo.load(goldenCheckpointDir());
});
after(async () => {
  for (const s of servers) await s.close();
  await api.dispose();
});

describe('server: health and models', () => {
  let base: string;
  before(async () => {
    base = await serve();
  });

  it('GET /healthz reports the model and the queue', async () => {
    const r = await fetch(base + '/healthz');
    const b = await json(r);
    assert.equal(r.status, 200);
    assert.equal(b.status, 'ok');
    assert.equal(b.model, 'dimoo-tiny');
    assert.equal(b.has_vq, true);
    assert.deepEqual(b.queue, { running: 0, waiting: 0, max_waiting: 8 });
  });

  it('GET /v1/models lists the checkpoint; unknown ids are 404', async () => {
    const b = await json(await fetch(base + '/v1/models'));
    assert.equal(b.object, 'list');
    assert.equal(b.data[0].id, 'dimoo-tiny');
    assert.equal((await json(await fetch(base + '/v1/models/dimoo-tiny'))).id, 'dimoo-tiny');
    await expectError(await fetch(base + '/v1/models/gpt-4'), 404, 'model_not_found');
  });

  it('unknown routes are JSON 404s', async () => {
    await expectError(await fetch(base + '/v1/nope'), 404, 'E_NOT_FOUND');
  });
});

describe('server: POST /v1/images/generations', () => {
  let base: string;
  before(async () => {
    base = await serve({ limits: { maxN: 2, maxSteps: 16, maxPixels: 128 * 128, maxSide: 256 } });
  });

  it('returns b64_json PNGs of the asked size, reproducible by seed', async () => {
    const body = { model: 'dimoo-tiny', prompt: 'a red fox', size: '64x48', steps: 4, seed: 7 };
    const a = await json(await post(base, '/v1/images/generations', body));
    assert.equal(a.data.length, 1);
    assert.deepEqual(await pngSize(a.data[0].b64_json), [64, 48]);
    assert.equal(a.data[0].seed, 7);
    assert.equal(typeof a.created, 'number');
    // The PNG says how it was made (the CLI's `parameters` text chunk), so it can be made again.
    const { prompt, settings } = parseParameters(
      readPngText(Buffer.from(a.data[0].b64_json, 'base64')).parameters ?? '',
    );
    assert.equal(prompt, 'a red fox');
    assert.equal(settings['Task'], 'generate');
    assert.equal(settings['Seed'], '7');
    assert.equal(settings['Steps'], '4');
    assert.equal(settings['Size'], '64x48');
    const b = await json(await post(base, '/v1/images/generations', body));
    assert.equal(a.data[0].b64_json, b.data[0].b64_json);
  });

  it('returns URLs into the server store for response_format url, and n images', async () => {
    const r = await json(
      await post(base, '/v1/images/generations', {
        prompt: 'a red fox',
        size: '32x32',
        steps: 4,
        n: 2,
        seed: 3,
        response_format: 'url',
        cfg_scale: 2,
        temperature: 1,
        use_cache: true,
      }),
    );
    assert.equal(r.data.length, 2);
    assert.deepEqual(
      r.data.map((d: any) => d.seed),
      [3, 4],
    );
    for (const d of r.data) {
      assert.match(d.url, /^http:\/\/127\.0\.0\.1:\d+\/v1\/files\/[0-9a-f]{32}\.png$/);
      const f = await fetch(d.url);
      assert.equal(f.status, 200);
      assert.equal(f.headers.get('content-type'), 'image/png');
      assert.deepEqual(await pngSize(Buffer.from(await f.arrayBuffer())), [32, 32]);
    }
  });

  it('refuses bad fields and every limit with a 400 naming the field', async () => {
    const g = (b: unknown) => post(base, '/v1/images/generations', b);
    assert.equal((await expectError(await g({ size: '32x32' }), 400, 'E_PARAM')).param, 'prompt');
    assert.equal(
      (await expectError(await g({ prompt: 'x', size: '30x32' }), 400, 'E_PARAM')).param,
      'size',
    );
    assert.equal(
      (await expectError(await g({ prompt: 'x', size: 'big' }), 400, 'E_PARAM')).param,
      'size',
    );
    assert.match(
      (await expectError(await g({ prompt: 'x', size: '256x256' }), 400, 'E_LIMIT')).message,
      /over the server limit of 16384/,
    );
    assert.match(
      (await expectError(await g({ prompt: 'x', size: '512x16' }), 400, 'E_LIMIT')).message,
      /side over the server limit of 256/,
    );
    assert.match(
      (await expectError(await g({ prompt: 'x', size: '32x32', steps: 17 }), 400, 'E_LIMIT'))
        .message,
      /maxSteps/,
    );
    assert.match(
      (await expectError(await g({ prompt: 'x', size: '32x32', n: 3 }), 400, 'E_LIMIT')).message,
      /maxN/,
    );
    await expectError(await g({ prompt: 'x', size: '32x32', steps: 4, n: 0 }), 400, 'E_PARAM');
    await expectError(
      await g({ prompt: 'x', size: '32x32', steps: 4, response_format: 'jpeg' }),
      400,
      'E_PARAM',
    );
    await expectError(await g({ prompt: 'x', size: '32x32', steps: 4, seed: -1 }), 400, 'E_PARAM');
    await expectError(
      await g({ prompt: 'x', size: '32x32', steps: 4, use_cache: 'maybe' }),
      400,
      'E_PARAM',
    );
    await expectError(await g({ prompt: 'x'.repeat(5000), size: '32x32' }), 400, 'E_LIMIT');
    await expectError(await g({ prompt: 'x', model: 'dall-e-3' }), 404, 'model_not_found');
    await expectError(await g([1, 2]), 400, 'E_PARAM');
    const bad = await fetch(base + '/v1/images/generations', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"prompt": ',
    });
    await expectError(bad, 400, 'E_JSON');
  });
});

describe('server: POST /v1/images/edits', () => {
  let base: string;
  let image: Buffer;
  before(async () => {
    base = await serve({ limits: { uploadBytes: 200_000, maxPixels: 128 * 128 } });
    image = await png(64, 48, opaque);
  });
  const edit = (parts: Parameters<typeof form>[0]) =>
    fetch(base + '/v1/images/edits', { method: 'POST', body: form(parts) });

  it('without a mask runs the image-to-image task with the edit type', async () => {
    const r = await edit({
      image: { data: image },
      prompt: 'add a hat',
      edit_type: 'edit_add',
      steps: '4',
      seed: '1',
    });
    const b = await json(r);
    assert.equal(r.status, 200, JSON.stringify(b));
    assert.equal(b.data.length, 1);
    const [w, h] = await pngSize(b.data[0].b64_json);
    assert.ok(w % 16 === 0 && h % 16 === 0);
  });

  it('with a mask (transparent = regenerate) inpaints at the image size', async () => {
    const mask = await png(64, 48, (x) => (x < 32 ? [0, 0, 0, 0] : [0, 0, 0, 255]));
    for (const task of ['inpaint', 'retouch', 'outpaint']) {
      const r = await edit({
        image: { data: image },
        mask: { data: mask },
        prompt: 'a wall',
        task,
        steps: '4',
        seed: '2',
        response_format: 'url',
      });
      const b = await json(r);
      assert.equal(r.status, 200, JSON.stringify(b));
      const f = await fetch(b.data[0].url);
      assert.deepEqual(await pngSize(Buffer.from(await f.arrayBuffer())), [64, 48]);
    }
  });

  it('an upload off the 16-px grid gives the same tokens as `dimoo edit` on the same file', async () => {
    // The server hands the decoded pixels to the library, whose image processor
    // crops them as the CLI's run does; equal pixels out = equal tokens decoded.
    const upload = await png(70, 50, opaque);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-edit-parity-'));
    try {
      const file = path.join(dir, 'upload.png');
      fs.writeFileSync(file, upload);
      const args = { prompt: 'add a hat', edit_type: 'edit_add', steps: '3', seed: '5' };
      const r = await edit({ image: { data: upload }, ...args });
      const b = await json(r);
      assert.equal(r.status, 200, JSON.stringify(b));
      const out = path.join(dir, 'cli.png');
      const tokensOut = path.join(dir, 'cli.json');
      const c = runDimoo([
        'edit',
        '--model',
        goldenCheckpointDir(),
        '--image',
        file,
        '--prompt',
        args.prompt,
        '--edit-type',
        args.edit_type,
        '--timesteps',
        args.steps,
        '--seed',
        args.seed,
        '--out',
        out,
        '--tokens-out',
        tokensOut,
      ]);
      assert.equal(c.code, 0, c.stderr);
      const raw = (png: Buffer | string) => sharp(png).raw().toBuffer({ resolveWithObject: true });
      const served = await raw(Buffer.from(b.data[0].b64_json, 'base64'));
      const local = await raw(out);
      assert.deepEqual(
        [served.info.width, served.info.height],
        [local.info.width, local.info.height],
      );
      assert.ok(served.data.equals(local.data), 'server and CLI edits differ');
      // The CLI's tokens decode to exactly what the server sent.
      const grid = JSON.parse(fs.readFileSync(tokensOut, 'utf8')) as TokenGrid;
      const decoded = await api.decodeTokens(grid);
      assert.ok(
        Buffer.from(decoded.data).equals(served.data),
        'server image is not the CLI tokens decoded',
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('scales images that are not on the 16-px grid', async () => {
    const odd = await png(70, 50, opaque);
    const mask = await png(70, 50, (x, y) => (y < 25 ? [0, 0, 0, 0] : [0, 0, 0, 255]));
    const b = await json(
      await edit({ image: { data: odd }, mask: { data: mask }, prompt: 'sky', steps: '2' }),
    );
    assert.deepEqual(await pngSize(b.data[0].b64_json), [64, 48]);
  });

  it('refuses a mask of the wrong size, an empty mask, and edit_type with a mask', async () => {
    const small = await png(32, 32, () => [0, 0, 0, 0]);
    assert.match(
      (
        await expectError(
          await edit({ image: { data: image }, mask: { data: small }, prompt: 'x' }),
          400,
          /^E_/,
        )
      ).message,
      /32x32.*64x48|64x48.*32x32/,
    );
    const none = await png(64, 48, () => [0, 0, 0, 255]);
    await expectError(
      await edit({ image: { data: image }, mask: { data: none }, prompt: 'x' }),
      400,
      'E_MASK',
    );
    const mask = await png(64, 48, () => [0, 0, 0, 0]);
    await expectError(
      await edit({
        image: { data: image },
        mask: { data: mask },
        prompt: 'x',
        edit_type: 'edit_add',
      }),
      400,
      'E_PARAM',
    );
  });

  it('refuses a non-image upload, a missing image, bad edit types and unknown file fields', async () => {
    const e = await expectError(
      await edit({
        image: { data: Buffer.from('#!/bin/sh\necho hi\n'), name: 'x.png' },
        prompt: 'x',
      }),
      400,
      'E_IMAGE',
    );
    assert.equal(e.param, 'image');
    await expectError(await edit({ prompt: 'x' }), 400, 'E_PARAM');
    await expectError(
      await edit({ image: { data: image }, prompt: 'x', edit_type: 'paint_it_black' }),
      400,
      'E_PARAM',
    );
    await expectError(
      await edit({ image: { data: image }, other: { data: image }, prompt: 'x' }),
      400,
      'E_MULTIPART',
    );
    await expectError(
      await edit({ image: { data: image }, prompt: 'x', edit_type: 'image_ref_transfer' }),
      400,
      'E_PARAM',
    );
  });

  it('refuses malformed multipart bodies and non-multipart requests', async () => {
    const boundary = 'XyZ';
    const truncated = `--${boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nhello\r\n--${boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n\x89PNG`;
    const r = await fetch(base + '/v1/images/edits', {
      method: 'POST',
      headers: { 'content-type': `multipart/form-data; boundary=${boundary}` },
      body: truncated,
    });
    await expectError(r, 400, 'E_MULTIPART');
    const nob = await fetch(base + '/v1/images/edits', {
      method: 'POST',
      headers: { 'content-type': 'multipart/form-data' },
      body: 'junk',
    });
    assert.ok([400, 406, 415].includes(nob.status), String(nob.status));
    await expectError(await post(base, '/v1/images/edits', { prompt: 'x' }), 415, 'E_MEDIA_TYPE');
  });

  it('refuses an upload over the size limit with 413', async () => {
    const big = Buffer.alloc(300_000, 7);
    await expectError(await edit({ image: { data: big }, prompt: 'x' }), 413, 'E_TOO_LARGE');
  });
});

describe('server: POST /v1/chat/completions', () => {
  let base: string;
  let dataUrl: string;
  before(async () => {
    base = await serve();
    dataUrl = `data:image/png;base64,${(await png(64, 48, opaque)).toString('base64')}`;
  });
  const body = (extra: object = {}) => ({
    model: 'dimoo-tiny',
    messages: [
      { role: 'system', content: 'be brief' },
      {
        role: 'user',
        content: [
          { type: 'text', text: 'what is in the image ?' },
          { type: 'image_url', image_url: { url: dataUrl } },
        ],
      },
    ],
    max_tokens: 32,
    block_length: 16,
    steps: 8,
    temperature: 0,
    ...extra,
  });

  it('answers with a chat.completion', async () => {
    const r = await post(base, '/v1/chat/completions', body());
    const b = await json(r);
    assert.equal(r.status, 200, JSON.stringify(b));
    assert.equal(b.object, 'chat.completion');
    assert.equal(b.choices[0].message.role, 'assistant');
    assert.equal(typeof b.choices[0].message.content, 'string');
    assert.ok(b.choices[0].message.content.length > 0);
    // 'length' exactly when the answer filled max_tokens without an end-of-answer token.
    assert.equal(b.choices[0].finish_reason, b.usage.completion_tokens >= 32 ? 'length' : 'stop');
    assert.equal(b.usage.total_tokens, b.usage.prompt_tokens + b.usage.completion_tokens);
  });

  it('streams SSE chunks whose deltas add up to the same answer, then [DONE]', async () => {
    const whole = await json(await post(base, '/v1/chat/completions', body()));
    const full = whole.choices[0].message.content;
    const events = await sseEvents(
      await post(base, '/v1/chat/completions', body({ stream: true })),
    );
    assert.equal(events.at(-1)!.data, '[DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.data));
    assert.ok(chunks.length >= 3, `${chunks.length} chunks`);
    for (const c of chunks) assert.equal(c.object, 'chat.completion.chunk');
    assert.equal(chunks[0].choices[0].delta.role, 'assistant');
    assert.equal(chunks.at(-1).choices[0].finish_reason, whole.choices[0].finish_reason);
    const text = chunks.map((c) => c.choices[0].delta.content ?? '').join('');
    assert.equal(text, full);
    // More than one content delta: text arrives as blocks are committed.
    assert.ok(chunks.filter((c) => c.choices[0].delta.content).length >= 2);
  });

  it('takes use_cache as a boolean or a mode name (dual, ml-cache with its schedule)', async () => {
    for (const use_cache of [true, '1', 'dual', 'ml-cache']) {
      const r = await post(
        base,
        '/v1/chat/completions',
        body({ use_cache, cache_ratio: 0.8, refresh_interval: 2 }),
      );
      const b = await json(r);
      assert.equal(r.status, 200, `${String(use_cache)}: ${JSON.stringify(b)}`);
      assert.equal(typeof b.choices[0].message.content, 'string');
    }
    const c = (b: unknown) => post(base, '/v1/chat/completions', b);
    assert.match(
      (await expectError(await c(body({ use_cache: 'triple' })), 400, 'E_PARAM')).message,
      /use_cache.*true, false or one of dual, ml-cache/,
    );
    assert.match(
      (await expectError(await c(body({ use_cache: 'ml-cache', cfg_scale: 1 })), 400, /^E_/))
        .message,
      /greedy unguided/,
    );
  });

  it('refuses messages without a question, remote image URLs, too many images and bad lengths', async () => {
    const c = (b: unknown) => post(base, '/v1/chat/completions', b);
    const imageOnly = body();
    (imageOnly.messages[1]!.content as any).shift();
    assert.match(
      (await expectError(await c(imageOnly), 400, 'E_PARAM')).message,
      /no text question/,
    );
    await expectError(await c({ messages: [] }), 400, 'E_PARAM');
    const remote = body();
    (remote.messages[1]!.content as any)[1].image_url.url =
      'http://169.254.169.254/latest/meta-data';
    assert.match(
      (await expectError(await c(remote), 400, 'E_PARAM')).message,
      /remote URLs are not fetched/,
    );
    const five = body();
    for (let i = 0; i < 4; i++)
      (five.messages[1]!.content as any).push({ type: 'image_url', image_url: { url: dataUrl } });
    assert.match(
      (await expectError(await c(five), 400, 'E_LIMIT')).message,
      /at most 4 image_url parts.*got 5/,
    );
    await expectError(await c(body({ max_tokens: 100000 })), 400, 'E_LIMIT');
    // The library's own check (steps vs blocks) comes back as a 400 with its code.
    await expectError(await c(body({ max_tokens: 32, block_length: 8, steps: 3 })), 400, /^E_/);
    const notImage = body();
    (notImage.messages[1]!.content as any)[1].image_url.url =
      `data:image/png;base64,${Buffer.from('hello').toString('base64')}`;
    await expectError(await c(notImage), 400, 'E_IMAGE');
  });
});

describe('server: native jobs API', () => {
  let base: string;
  let first: any;
  before(async () => {
    base = await serve();
  });

  it('runs a generate job with SSE progress (step/total/masked), previews and the final token grid', async () => {
    const res = await post(base, '/v1/jobs', {
      task: 'generate',
      prompt: 'a blue bird',
      size: '64x48',
      steps: 6,
      seed: 5,
      preview_every: 2,
    });
    const created = await json(res);
    assert.equal(res.status, 202);
    assert.match(created.id, /^job_[0-9a-f]{24}$/);
    assert.equal(res.headers.get('location'), `/v1/jobs/${created.id}`);
    const events = await sseEvents(await fetch(base + created.events_url));
    assert.equal(events[0]!.event, 'status');
    const progress = events.filter((e) => e.event === 'progress').map((e) => JSON.parse(e.data));
    assert.ok(progress.length >= 1);
    for (const p of progress) {
      assert.equal(p.total, 6);
      assert.equal(typeof p.masked, 'number');
    }
    assert.equal(progress.at(-1).masked, 0);
    const previews = events.filter((e) => e.event === 'preview').map((e) => JSON.parse(e.data));
    assert.ok(previews.length >= 1, 'at least one preview');
    const pv = previews[0];
    assert.match(pv.image, /^data:image\/png;base64,/);
    const raw = await sharp(Buffer.from(pv.image.split(',')[1], 'base64'))
      .raw()
      .toBuffer({ resolveWithObject: true });
    assert.deepEqual([raw.info.width, raw.info.height], [64, 48]);
    // Some cells are still masked at an early step: they are neutral grey.
    let grey = 0;
    for (let i = 0; i < raw.data.length; i += raw.info.channels)
      if (raw.data[i] === 128 && raw.data[i + 1] === 128 && raw.data[i + 2] === 128) grey++;
    assert.ok(grey >= 256, `${grey} grey pixels`);
    const done = JSON.parse(events.at(-1)!.data);
    assert.equal(events.at(-1)!.event, 'done');
    assert.equal(done.status, 'succeeded');
    assert.deepEqual(
      [done.result.tokens.width, done.result.tokens.height, done.result.tokens.codes.length],
      [64, 48, 12],
    );
    assert.equal(done.result.seed, 5);
    assert.equal(done.result.file, undefined);
    const img = await fetch(base + done.result.image_url);
    assert.equal(img.status, 200);
    const st = await json(await fetch(`${base}/v1/jobs/${created.id}`));
    assert.equal(st.status, 'succeeded');
    assert.deepEqual(st.result.tokens, done.result.tokens);
    // A subscriber after the end gets the final state at once.
    const late = await sseEvents(await fetch(base + created.events_url));
    assert.equal(late.at(-1)!.event, 'done');
    first = done.result;
  });

  it('retouch changes only the marked cells of a token grid', async () => {
    const tokens: TokenGrid = first.tokens;
    const cells = tokens.codes.map((_, i) => (i === 5 || i === 6 ? 1 : 0));
    const r = await runJob(base, {
      task: 'retouch',
      image: { tokens },
      mask: { cells },
      prompt: 'a red bird',
      steps: 4,
      seed: 99,
    });
    const out: number[] = r.result.tokens.codes;
    for (let i = 0; i < out.length; i++)
      if (!cells[i]) assert.equal(out[i], tokens.codes[i], `cell ${i} outside the mask changed`);
    assert.ok(
      [5, 6].some((i) => out[i] !== tokens.codes[i]),
      'a marked cell changed',
    );
  });

  it('inpaints with rectangles, outpaints around a kept centre, edits and understands images sent as data URLs', async () => {
    const img = `data:image/png;base64,${(await png(64, 48, opaque)).toString('base64')}`;
    const a = await runJob(base, {
      task: 'inpaint',
      image: { data_url: img },
      mask: { rects: [{ x: 0, y: 0, width: 32, height: 16 }] },
      prompt: 'sun',
      steps: 2,
    });
    assert.equal(a.result.tokens.codes.length, 12);
    const b = await runJob(base, {
      task: 'outpaint',
      image: { tokens: first.tokens },
      mask: { ratio: { h: 0.5, w: 0.5 } },
      prompt: 'sea',
      steps: 2,
    });
    assert.equal(b.result.width, 64);
    const c = await runJob(base, {
      task: 'edit',
      image: img,
      edit_type: 'edit_background',
      prompt: 'beach',
      steps: 2,
    });
    assert.ok(c.result.tokens.codes.length > 0);
    const d = await runJob(base, {
      task: 'understand',
      image: { tokens: first.tokens },
      question: 'what is it ?',
      max_tokens: 16,
      block_length: 16,
      steps: 4,
    });
    assert.equal(typeof d.result.text, 'string');
    // Text only, and two images: each image adds its block (<IMAGE>, 3 rows of 4 cells + newline, </IMAGE>).
    const ask = {
      task: 'understand',
      question: 'what is it ?',
      max_tokens: 16,
      block_length: 16,
      steps: 4,
    };
    const none = await runJob(base, ask);
    const two = await runJob(base, {
      ...ask,
      images: [{ tokens: first.tokens }, { tokens: first.tokens }],
    });
    assert.equal(typeof none.result.text, 'string');
    assert.equal(d.result.prompt_tokens - none.result.prompt_tokens, 17);
    assert.equal(two.result.prompt_tokens - none.result.prompt_tokens, 34);
    await expectError(
      await post(base, '/v1/jobs', { ...ask, image: { tokens: first.tokens }, images: [] }),
      400,
      'E_PARAM',
    );
    const maskPng = `data:image/png;base64,${(await png(64, 48, (x) => (x < 16 ? [0, 0, 0, 0] : [0, 0, 0, 255]))).toString('base64')}`;
    const e = await runJob(base, {
      task: 'inpaint',
      image: { data_url: img },
      mask: { data_url: maskPng },
      prompt: 'sun',
      steps: 2,
    });
    assert.equal(e.result.tokens.codes.length, 12);
  });

  it('validates job requests before queueing', async () => {
    const j = (b: unknown) => post(base, '/v1/jobs', b);
    await expectError(await j({ prompt: 'x' }), 400, 'E_PARAM');
    await expectError(await j({ task: 'paint', prompt: 'x' }), 400, 'E_PARAM');
    await expectError(await j({ task: 'retouch', image: { tokens: first.tokens } }), 400, 'E_MASK');
    await expectError(
      await j({ task: 'retouch', image: { tokens: first.tokens }, mask: { cells: [1, 0] } }),
      400,
      'E_MASK',
    );
    await expectError(
      await j({
        task: 'retouch',
        image: { tokens: { width: 64, height: 48, codes: [1, 2] } },
        mask: { cells: [1] },
      }),
      400,
      'E_PARAM',
    );
    await expectError(
      await j({
        task: 'retouch',
        image: { tokens: { ...first.tokens, codes: first.tokens.codes.map(() => 9000) } },
        mask: { cells: first.tokens.codes.map(() => 1) },
      }),
      400,
      'E_PARAM',
    );
    await expectError(
      await j({
        task: 'inpaint',
        prompt: 'x',
        image: { tokens: first.tokens },
        mask: { rects: [{ x: 0, y: 0, width: 500, height: 1 }] },
      }),
      400,
      'E_MASK',
    );
    await expectError(
      await j({ task: 'edit', prompt: 'x', image: { url: 'file:///etc/passwd' } }),
      400,
      'E_PARAM',
    );
    await expectError(
      await fetch(base + '/v1/jobs/job_000000000000000000000000'),
      404,
      'E_NOT_FOUND',
    );
    await expectError(await fetch(base + '/v1/jobs/nope/events'), 404, 'E_NOT_FOUND');
  });

  it('encodes uploads to token grids and decodes grids to PNG', async () => {
    const f = form({ image: { data: await png(70, 50, opaque) } });
    const r = await json(await fetch(base + '/v1/tokens/encode', { method: 'POST', body: f }));
    assert.deepEqual([r.width, r.height, r.tokens.codes.length], [64, 48, 12]);
    assert.equal((await fetch(base + r.image_url)).status, 200);
    const viaJson = await json(
      await post(base, '/v1/tokens/encode', {
        image: {
          data_url: `data:image/png;base64,${(await png(32, 32, opaque)).toString('base64')}`,
        },
      }),
    );
    assert.equal(viaJson.tokens.codes.length, 4);
    const d = await post(base, '/v1/tokens/decode', { tokens: r.tokens });
    assert.equal(d.status, 200);
    assert.equal(d.headers.get('content-type'), 'image/png');
    assert.deepEqual(await pngSize(Buffer.from(await d.arrayBuffer())), [64, 48]);
    await expectError(
      await post(base, '/v1/tokens/decode', { tokens: { width: 64, height: 48, codes: [1] } }),
      400,
      'E_PARAM',
    );
  });
});

describe('server: cancellation and the queue', () => {
  let base: string;
  before(async () => {
    base = await serve({ limits: { maxQueue: 1 } });
  });
  const long = {
    task: 'generate',
    prompt: 'a long job',
    size: '128x128',
    steps: 200,
    seed: 1,
    preview_every: 0,
  };

  it('cancels a running job between steps; its event stream ends with "cancelled"', async () => {
    const j = await json(await post(base, '/v1/jobs', long));
    const evRes = await fetch(base + j.events_url);
    await waitFor(
      async () => (await json(await fetch(`${base}/v1/jobs/${j.id}`))).progress !== null,
    );
    const t0 = performance.now();
    const c = await json(await post(base, `/v1/jobs/${j.id}/cancel`, {}));
    assert.equal(c.cancel_requested, true);
    const events = await sseEvents(evRes);
    assert.equal(events.at(-1)!.event, 'cancelled');
    const st = await json(await fetch(`${base}/v1/jobs/${j.id}`));
    assert.equal(st.status, 'cancelled');
    assert.ok(st.progress.step < 200);
    assert.ok(performance.now() - t0 < 5000);
  });

  it('answers 429 with Retry-After when the queue is full; queued jobs cancel at once (DELETE)', async () => {
    const a = await json(await post(base, '/v1/jobs', long));
    const b = await json(await post(base, '/v1/jobs', long));
    assert.equal(b.status, 'queued');
    assert.equal(b.queue_position, 1);
    const full = await post(base, '/v1/jobs', long);
    assert.ok(Number(full.headers.get('retry-after')) >= 1);
    await expectError(full, 429, 'E_QUEUE_FULL');
    const gen = await post(base, '/v1/images/generations', {
      prompt: 'x',
      size: '32x32',
      steps: 1,
    });
    await expectError(gen, 429, 'E_QUEUE_FULL');
    const h = await json(await fetch(base + '/healthz'));
    assert.deepEqual(h.queue, { running: 1, waiting: 1, max_waiting: 1 });
    const cb = await json(await fetch(`${base}/v1/jobs/${b.id}`, { method: 'DELETE' }));
    assert.equal(cb.status, 'cancelled');
    await json(await post(base, `/v1/jobs/${a.id}/cancel`, {}));
    await waitFor(
      async () => (await json(await fetch(`${base}/v1/jobs/${a.id}`))).status === 'cancelled',
    );
  });

  it('cancels the jobs of synchronous requests whose clients went away (running and queued)', async () => {
    const acs = [new AbortController(), new AbortController()];
    const reqs = acs.map((ac, i) =>
      fetch(base + '/v1/images/generations', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ prompt: `client ${i}`, size: '128x128', steps: 200 }),
        signal: ac.signal,
      }).catch((e: Error) => e),
    );
    await waitFor(async () => {
      const q = (await json(await fetch(base + '/healthz'))).queue;
      return q.running === 1 && q.waiting === 1;
    });
    for (const ac of acs) ac.abort();
    for (const r of reqs) assert.equal(((await r) as Error).name, 'AbortError');
    await waitFor(async () => {
      const q = (await json(await fetch(base + '/healthz'))).queue;
      return q.running === 0 && q.waiting === 0;
    }, 5000);
  });

  it('cancels a streamed chat completion when the client disconnects', async () => {
    const img = `data:image/png;base64,${(await png(64, 48, opaque)).toString('base64')}`;
    const ac = new AbortController();
    const res = await fetch(base + '/v1/chat/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        stream: true,
        max_tokens: 512,
        block_length: 16,
        steps: 512,
        messages: [
          {
            role: 'user',
            content: [
              { type: 'text', text: 'what is it ?' },
              { type: 'image_url', image_url: { url: img } },
            ],
          },
        ],
      }),
      signal: ac.signal,
    });
    assert.equal(res.status, 200);
    const reader = res.body!.getReader();
    await reader.read(); // the role chunk: the stream is open
    // Events, not the clock: the stream's job is the queue's running one (the queue
    // was idle, so it started when submitted); its `done` settles once the model
    // has really stopped, however busy the machine is.
    const app = servers.find((s) => base.endsWith(`:${(s.server.address() as AddressInfo).port}`))!;
    const job = app.dimoo.queue.running;
    assert.ok(job, 'the streamed request has no running job');
    assert.equal(job.task, 'understand');
    ac.abort();
    await job.done;
    assert.equal(job.status, 'cancelled');
    // The queue frees its slot right after (a later microtask); /healthz is a round trip later.
    assert.equal((await json(await fetch(base + '/healthz'))).queue.running, 0);
  });

  it('a job over the time limit fails with E_TIMEOUT', async () => {
    const fast = await serve({ limits: { jobTimeoutMs: 300 } });
    const r = await post(fast, '/v1/images/generations', {
      prompt: 'x',
      size: '128x128',
      steps: 200,
    });
    await expectError(r, 408, 'E_TIMEOUT');
  });
});

describe('server: request size limits', () => {
  it('refuses a JSON body over the limit with 413', async () => {
    const base = await serve({ limits: { bodyBytes: 10_000 } });
    await expectError(
      await post(base, '/v1/jobs', { task: 'generate', prompt: 'x'.repeat(20_000) }),
      413,
      'E_TOO_LARGE',
    );
  });
});
