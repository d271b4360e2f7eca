/**
 * The OpenAI-compatible routes driven by the official `openai` npm client,
 * against a real server on the golden tiny checkpoint: what an app written
 * for OpenAI sends, and what it reads back.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import OpenAI, { toFile } from 'openai';
import sharp from 'sharp';
import { WorkerDimoo } from '../src/runtime/worker-dimoo.js';
import { createServer } from '../src/server/app.js';
import { goldenCheckpointDir } from './helpers/golden.js';

let api: WorkerDimoo;
let app: FastifyInstance;
let base: string;
let client: OpenAI;

before(async () => {
  api = await WorkerDimoo.load(goldenCheckpointDir(), { threads: 1 });
  app = await createServer({
    api,
    modelAliases: ['dall-e-3', 'gpt-4o'],
    limits: { maxPixels: 64 * 64 },
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  base = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
  client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'unused', maxRetries: 0 });
});

after(async () => {
  await app?.close();
  await api?.dispose();
});

const dims = async (b64: string) => {
  const m = await sharp(Buffer.from(b64, 'base64')).metadata();
  return { format: m.format, width: m.width, height: m.height };
};

async function pngOf(width: number, height: number, alpha = 255): Promise<Buffer> {
  const data = Buffer.alloc(width * height * 4);
  for (let i = 0; i < width * height; i++)
    data.set([(i * 7) % 256, (i * 3) % 256, 90, alpha], i * 4);
  return sharp(data, { raw: { width, height, channels: 4 } })
    .png()
    .toBuffer();
}

describe('models', () => {
  it('lists the checkpoint and its aliases; an alias is accepted as model', async () => {
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    assert.deepEqual(ids, ['dimoo-tiny', 'dall-e-3', 'gpt-4o']);
    assert.equal((await client.models.retrieve('dall-e-3')).id, 'dall-e-3');
  });
});

describe('images.generate', () => {
  it('b64 PNG with usage and size; an alias as model', async () => {
    const r = await client.images.generate({
      model: 'dall-e-3',
      prompt: 'a fox',
      size: '32x32',
      steps: 2,
      seed: 1,
    } as never);
    assert.equal(r.data!.length, 1);
    assert.deepEqual(await dims(r.data![0]!.b64_json!), { format: 'png', width: 32, height: 32 });
    assert.equal(r.usage!.output_tokens, 4);
    assert.ok(r.usage!.input_tokens > 0);
    assert.equal(r.usage!.total_tokens, r.usage!.input_tokens + r.usage!.output_tokens);
    assert.equal(r.size, '32x32');
  });

  it('output_format jpeg/webp with output_compression, also as url', async () => {
    const jpeg = await client.images.generate({
      prompt: 'a fox',
      size: '32x32',
      output_format: 'jpeg',
      output_compression: 50,
      steps: 2,
    } as never);
    assert.equal((await dims(jpeg.data![0]!.b64_json!)).format, 'jpeg');
    const webp = await client.images.generate({
      prompt: 'a fox',
      size: '32x32',
      output_format: 'webp',
      response_format: 'url',
      steps: 2,
    } as never);
    const res = await fetch(webp.data![0]!.url!);
    assert.equal(res.headers.get('content-type'), 'image/webp');
    assert.equal((await sharp(Buffer.from(await res.arrayBuffer())).metadata()).format, 'webp');
  });

  it('size "auto" fits the server limit and says which size it chose', async () => {
    const r = await client.images.generate({ prompt: 'a fox', size: 'auto', steps: 2 } as never);
    assert.equal(r.size, '64x64');
    assert.deepEqual(await dims(r.data![0]!.b64_json!), { format: 'png', width: 64, height: 64 });
  });

  it('stream: partial_image events, then completed with usage', async () => {
    const stream = await client.images.generate({
      prompt: 'a fox',
      size: '32x32',
      stream: true,
      partial_images: 2,
      steps: 6,
    } as never);
    const events = [];
    for await (const e of stream as unknown as AsyncIterable<{
      type: string;
      b64_json: string;
      partial_image_index?: number;
      usage?: { output_tokens: number };
    }>) {
      events.push(e);
    }
    const partial = events.filter((e) => e.type === 'image_generation.partial_image');
    const done = events.filter((e) => e.type === 'image_generation.completed');
    assert.ok(partial.length >= 1 && partial.length <= 2, `partial images: ${partial.length}`);
    assert.deepEqual(
      partial.map((e) => e.partial_image_index),
      partial.map((_, i) => i),
    );
    assert.equal(done.length, 1);
    assert.equal(events.at(-1)!.type, 'image_generation.completed');
    assert.deepEqual(await dims(done[0]!.b64_json), { format: 'png', width: 32, height: 32 });
    assert.equal(done[0]!.usage!.output_tokens, 4);
  });

  it('errors carry OpenAI types and codes, with ours beside them', async () => {
    await assert.rejects(
      client.images.generate({ prompt: 'a fox', size: '33x33' }),
      (e: unknown) => {
        assert.ok(e instanceof OpenAI.BadRequestError, String(e));
        assert.equal(e.type, 'invalid_request_error');
        assert.equal(e.code, 'invalid_value');
        assert.equal(e.param, 'size');
        assert.equal((e.error as { dimoo_code: string }).dimoo_code, 'E_PARAM');
        return true;
      },
    );
    await assert.rejects(
      client.images.generate({ model: 'nope', prompt: 'x', size: '32x32' }),
      (e: unknown) => {
        assert.ok(e instanceof OpenAI.NotFoundError);
        assert.equal(e.code, 'model_not_found');
        return true;
      },
    );
  });
});

describe('images.edit', () => {
  it('without a mask honours size; usage counts the input image at that size', async () => {
    const image = await toFile(await pngOf(64, 32), 'in.png', { type: 'image/png' });
    const r = await client.images.edit({
      image,
      prompt: 'add a hat',
      size: '32x32',
      steps: 2,
    } as never);
    assert.deepEqual(await dims(r.data![0]!.b64_json!), { format: 'png', width: 32, height: 32 });
    assert.equal(r.size, '32x32');
    assert.equal(r.usage!.input_tokens_details.image_tokens, 4);
  });

  it('with a mask inpaints, in the asked output_format', async () => {
    const mask = await toFile(await pngOf(64, 32, 0), 'mask.png', { type: 'image/png' });
    const image2 = await toFile(await pngOf(64, 32), 'in.png', { type: 'image/png' });
    const m = await client.images.edit({
      image: image2,
      mask,
      prompt: 'a sea',
      steps: 2,
      output_format: 'webp',
    } as never);
    assert.deepEqual(await dims(m.data![0]!.b64_json!), { format: 'webp', width: 64, height: 32 });
  });
});

describe('images.edit: tasks of the original', () => {
  it('multi_view_<view> edit types are accepted', async () => {
    const image = await toFile(await pngOf(32, 32), 'in.png', { type: 'image/png' });
    const r = await client.images.edit({
      image,
      prompt: 'the back',
      edit_type: 'multi_view_back',
      size: '32x32',
      steps: 2,
    } as never);
    assert.deepEqual(await dims(r.data![0]!.b64_json!), { format: 'png', width: 32, height: 32 });
  });
});

describe('chat.completions', () => {
  const image = async () => `data:image/png;base64,${(await pngOf(32, 32)).toString('base64')}`;
  const messages = async (): Promise<OpenAI.ChatCompletionMessageParam[]> => [
    {
      role: 'user',
      content: [
        { type: 'text', text: 'What is this?' },
        { type: 'image_url', image_url: { url: await image() } },
      ],
    },
  ];
  const opts = { max_tokens: 8, steps: 8, block_length: 8, temperature: 0 };

  it('usage has prompt and total tokens; finish_reason says whether max_tokens cut the answer; n choices', async () => {
    const r = await client.chat.completions.create({
      model: 'gpt-4o',
      messages: await messages(),
      n: 2,
      ...opts,
    } as never);
    assert.equal(r.choices.length, 2);
    assert.deepEqual(
      r.choices.map((c) => c.index),
      [0, 1],
    );
    const u = r.usage!;
    assert.ok(u.prompt_tokens > 0);
    assert.equal(u.total_tokens, u.prompt_tokens + u.completion_tokens);
    for (const c of r.choices) {
      assert.ok(['stop', 'length'].includes(c.finish_reason));
    }
    // Greedy decoding of the tiny random model never meets an end-of-answer token in 8 tokens.
    if (u.completion_tokens === 2 * 8) assert.equal(r.choices[0]!.finish_reason, 'length');
  });

  it('stop ends the answer before the stop string', async () => {
    const full = (
      await client.chat.completions.create({ messages: await messages(), ...opts } as never)
    ).choices[0]!.message.content!;
    assert.ok(full.length >= 3, `answer too short to test stop: ${JSON.stringify(full)}`);
    const stop = full.slice(1, 3);
    const r = await client.chat.completions.create({
      messages: await messages(),
      stop,
      ...opts,
    } as never);
    assert.equal(r.choices[0]!.message.content, full.slice(0, full.indexOf(stop)));
    assert.equal(r.choices[0]!.finish_reason, 'stop');
  });

  it('text only, and several images each spliced into the prompt', async () => {
    const ask = async (content: OpenAI.ChatCompletionContentPart[] | string) =>
      client.chat.completions.create({
        messages: [
          { role: 'system', content: 'be brief' },
          { role: 'user', content },
        ],
        ...opts,
      } as never);
    const text = await ask('What is a fox?');
    assert.equal(typeof text.choices[0]!.message.content, 'string');
    const img = { type: 'image_url' as const, image_url: { url: await image() } };
    const q = { type: 'text' as const, text: 'What is a fox?' };
    const one = await ask([q, img]);
    const two = await ask([q, img, img]);
    // Each image adds its own <IMAGE> block (rows of cells, each row ending in a newline):
    // one image is cropped to the 1024² budget, each of several to the 512² one.
    const raw = await sharp(await pngOf(32, 32))
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    const rgb = { rgb: { data: new Uint8Array(raw.data), width: 32, height: 32 } };
    const blockLen = async (crop: 512 | 1024) => {
      const g = await api.encodeImage(rgb, { crop });
      return 2 + (g.height / 16) * (g.width / 16 + 1);
    };
    const p0 = text.usage!.prompt_tokens;
    assert.equal(one.usage!.prompt_tokens - p0, await blockLen(1024));
    assert.equal(two.usage!.prompt_tokens - p0, 2 * (await blockLen(512)));
    assert.equal(typeof two.choices[0]!.message.content, 'string');
  });

  it('stream with stream_options.include_usage ends with a usage chunk', async () => {
    const stream = await client.chat.completions.create({
      messages: await messages(),
      stream: true,
      stream_options: { include_usage: true },
      ...opts,
    } as never);
    let text = '';
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const c of stream as unknown as AsyncIterable<OpenAI.ChatCompletionChunk>) {
      if (c.choices[0]?.delta.content) text += c.choices[0].delta.content;
      if (c.choices[0]?.finish_reason) finish = c.choices[0].finish_reason;
      if (c.usage) usage = c.usage;
    }
    assert.ok(finish === 'stop' || finish === 'length');
    assert.ok(
      usage &&
        usage.prompt_tokens > 0 &&
        usage.total_tokens === usage.prompt_tokens + usage.completion_tokens,
    );
    const plain = await client.chat.completions.create({
      messages: await messages(),
      ...opts,
    } as never);
    assert.equal(text, plain.choices[0]!.message.content);
  });
});

describe('native job API', () => {
  it('created_at is in seconds, as OpenAI times are', async () => {
    const res = await fetch(`${base}/v1/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ task: 'generate', prompt: 'x', size: '32x32', steps: 2 }),
    });
    const j = (await res.json()) as { created_at: number };
    const now = Date.now() / 1000;
    assert.ok(Math.abs(j.created_at - now) < 600, `created_at ${j.created_at} vs now ${now}`);
  });
});
