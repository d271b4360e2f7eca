/**
 * PNG text chunks and the `parameters` text: written by our encoder, read
 * back by our reader and by libvips (sharp), round-tripped through the format.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { encodeImage } from '../src/image/io.js';
import { addPngText, readPngText } from '../src/image/png-text.js';
import {
  formatParameters,
  imageRunSettings,
  parseParameters,
} from '../src/pipelines/parameters.js';

const img = {
  data: Uint8Array.from({ length: 4 * 3 * 3 }, (_, i) => (i * 29) % 256),
  width: 4,
  height: 3,
  channels: 3 as const,
};

test('text chunks: Latin-1 as tEXt, anything else as iTXt; the image itself is unchanged', async () => {
  const text = {
    parameters: 'a fox\nSteps: 64',
    note: 'un café, très bien',
    comment: '狐狸在雪中 🦊',
  };
  const png = await encodeImage(img, 'png', { text });
  assert.deepEqual(readPngText(png), text);
  const types = new Set<string>();
  for (let off = 8; off < png.length;) {
    const len = png.readUInt32BE(off);
    types.add(png.toString('latin1', off + 4, off + 8));
    off += 12 + len;
  }
  assert.ok(types.has('tEXt') && types.has('iTXt'), [...types].join(' '));
  // libvips reads the annotated file (CRCs right) to the same pixels.
  const plain = await encodeImage(img, 'png');
  assert.deepEqual(readPngText(plain), {});
  const a = await sharp(png).raw().toBuffer();
  const b = await sharp(plain).raw().toBuffer();
  assert.ok(a.equals(b));
  const meta = await sharp(png).metadata();
  const comments = (meta as { comments?: { keyword: string; text: string }[] }).comments ?? [];
  assert.equal(comments.find((c) => c.keyword === 'parameters')?.text, 'a fox\nSteps: 64');
});

test('bad input: a key that is no PNG keyword, bytes that are no PNG', async () => {
  const png = await encodeImage(img, 'png');
  assert.throws(() => addPngText(png, { '': 'x' }), /not a valid PNG keyword/);
  assert.throws(() => addPngText(png, { ' lead': 'x' }), /not a valid PNG keyword/);
  assert.throws(() => readPngText(Buffer.from('GIF89a'), 'x.gif'), /x\.gif: not a PNG file/);
  assert.throws(() => readPngText(png.subarray(0, png.length - 20)), /runs past the end|IEND/);
});

test('parameters: the prompt (any text) and the settings line round-trip', () => {
  const prompt = 'line one\na fox, "quoted": yes';
  const settings = imageRunSettings(
    'edit',
    {
      prompt,
      editType: 'multi_view_left',
      image: { path: '/x/in put, 1.png' },
      timesteps: 64,
      cfgScale: 2.5,
      cfgImg: 4,
      temperature: 1,
      seed: 0,
      useCache: true,
      cacheRatio: 0.9,
      warmupRatio: 0.3,
      refreshInterval: 5,
    },
    { width: 512, height: 384 },
    { model: 'Lumina-DiMOO', version: 'dimoo 0.1.0' },
  );
  const text = formatParameters(prompt, settings);
  assert.equal(text.split('\n').length, 3, 'the settings are one last line');
  const back = parseParameters(text);
  assert.equal(back.prompt, prompt);
  assert.deepEqual(back.settings, {
    Task: 'edit',
    'Edit type': 'multi_view_left',
    Steps: '64',
    'CFG scale': '2.5',
    'Image CFG scale': '4',
    Temperature: '1',
    Seed: '0',
    Size: '512x384',
    'Cache ratio': '0.9',
    'Warmup ratio': '0.3',
    'Refresh interval': '5',
    Image: '/x/in put, 1.png',
    Model: 'Lumina-DiMOO',
    Version: 'dimoo 0.1.0',
  });
});
