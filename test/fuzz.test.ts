/**
 * Seeded fuzzing (issue 15): mutations of the golden checkpoint's files
 * (safetensors headers and sizes, config.json values), of images, and of
 * HTTP requests. Every case must end in a clean error (DimooError, or a 4xx
 * in the documented shape) or a result that passes the format's own checks:
 * never a crash, a hang, a 5xx, or an accepted file that breaks the format.
 *
 * DIMOO_FUZZ_CASES sets the cases per family (default 100: 400 in `npm test`;
 * `npm run fuzz` runs 3 000 per family). DIMOO_FUZZ_SEED shifts every seed,
 * so a failure prints the seed and the mutation that reproduce it.
 * The golden files are copied to a temp folder; only the copies are mutated.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import sharp from 'sharp';
import { DimooError } from '../src/errors.js';
import { loadWeightTable, validateWeights } from '../src/checkpoint/folder.js';
import { parseLladaConfig, type LladaConfig } from '../src/checkpoint/config.js';
import { dtypeSize } from '../src/checkpoint/dtypes.js';
import { numel, SafetensorsFile, type TensorInfo } from '../src/checkpoint/safetensors.js';
import { FakeDimoo } from './helpers/fake-dimoo.js';
import { createServer } from '../src/server/app.js';
import { decodeUpload } from '../src/server/images.js';
import { DEFAULT_LIMITS } from '../src/server/limits.js';
import { goldenCheckpointDir } from './helpers/golden.js';

const CASES = Math.max(1, Number(process.env['DIMOO_FUZZ_CASES'] ?? 100));
const SEED0 = Number(process.env['DIMOO_FUZZ_SEED'] ?? 0);
const GOLDEN = goldenCheckpointDir();

/** Small seeded PRNG (mulberry32): the same seed gives the same mutation. */
function rng(seed: number): { int: (n: number) => number; pick: <T>(a: readonly T[]) => T } {
  let s = (seed + 0x9e3779b9) >>> 0;
  const next = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number): number => Math.floor(next() * n);
  return { int, pick: (a) => a[int(a.length)]! };
}

/** A clean failure: our error type, one line, no internal wording. */
function assertCleanError(e: unknown, what: string): void {
  if (!(e instanceof DimooError)) {
    throw new Error(`${what}: not a clean error: ${e instanceof Error ? e.stack : String(e)}`);
  }
  assert.ok(e.message.length > 0 && !e.message.includes('\n    at '), `${what}: ${e.message}`);
}

let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-fuzz-'));
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

// ------------------------------------------------------------------ safetensors

/** What any accepted file must satisfy: tensors within the file, sized by shape, back to back. */
function checkLayout(f: SafetensorsFile): void {
  const spans: TensorInfo[] = [...f.tensors.values()].sort((a, b) => a.byteOffset - b.byteOffset);
  let pos = f.dataStart;
  for (const t of spans) {
    assert.equal(t.byteLength, numel(t.shape) * dtypeSize(t.dtype), t.name);
    if (t.byteLength === 0) continue;
    assert.equal(t.byteOffset, pos, `${t.name} not contiguous`);
    pos += t.byteLength;
  }
  assert.equal(pos, f.fileSize, 'tensors do not end at the end of the file');
}

describe(`fuzz: safetensors shards (${CASES} cases)`, () => {
  const src = path.join(GOLDEN, 'model-00002-of-00002.safetensors');
  const orig = fs.readFileSync(src);
  const hlen = Number(orig.readBigUInt64LE(0));
  const header = orig.subarray(8, 8 + hlen);
  const dataLen = orig.length - 8 - hlen;

  it('every mutation is refused cleanly or yields a well-formed file', () => {
    let accepted = 0;
    for (let c = 0; c < CASES; c++) {
      const seed = SEED0 + c;
      const r = rng(seed);
      let h = Buffer.from(header);
      let lenField = hlen;
      let size = 8 + hlen + dataLen;
      const kind = r.int(6);
      let what: string;
      if (kind === 0) {
        const d = r.pick([-8, -2, -1, 1, 2, 8, 1 << 20]);
        lenField += d;
        what = `header length ${d >= 0 ? '+' : ''}${d}`;
      } else if (kind === 1) {
        const i = r.int(h.length);
        h[i] = r.int(256);
        what = `header byte ${i} := ${h[i]}`;
      } else if (kind === 2) {
        // Change one number (an offset, a shape entry) by a small amount.
        const text = h.toString('latin1');
        const nums = [...text.matchAll(/\d+/g)];
        const m = r.pick(nums);
        const v = Math.max(0, Number(m[0]) + r.pick([-2, -1, 1, 2, 1000]));
        h = Buffer.from(
          text.slice(0, m.index) + String(v) + text.slice(m.index! + m[0].length),
          'latin1',
        );
        lenField = h.length;
        size += h.length - hlen;
        what = `number at ${m.index} ${m[0]} -> ${v}`;
      } else if (kind === 3) {
        const d = r.pick([-1000, -2, -1, 1, 3, 4096]);
        size += d;
        what = `file size ${d >= 0 ? '+' : ''}${d}`;
      } else if (kind === 4) {
        // Trailing spaces in the header (legal padding), then a length one short or long.
        h = Buffer.concat([h, Buffer.alloc(8, 0x20)]);
        const d = r.pick([-1, 0, 1]);
        lenField = h.length + d;
        size += 8;
        what = `padded header, length ${d}`;
      } else {
        const i = r.int(h.length);
        h = Buffer.concat([h.subarray(0, i), h.subarray(i + 1)]);
        lenField = h.length;
        size -= 1;
        what = `header byte ${i} deleted`;
      }
      const p = path.join(tmp, 'fuzz.safetensors');
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(Math.max(0, lenField)), 0);
      const fd = fs.openSync(p, 'w');
      fs.writeSync(fd, Buffer.concat([len, h]));
      // The data region's content does not matter to the layout checks: a sparse tail is enough.
      fs.ftruncateSync(fd, Math.max(0, size));
      fs.closeSync(fd);
      const label = `seed ${seed}: ${what}`;
      let f: SafetensorsFile;
      try {
        f = SafetensorsFile.open(p);
      } catch (e) {
        assertCleanError(e, label);
        continue;
      }
      accepted++;
      try {
        checkLayout(f);
      } catch (e) {
        throw new Error(`${label}: accepted a malformed file: ${(e as Error).message}`, {
          cause: e,
        });
      }
    }
    // Most mutations must be caught; a few (e.g. a digit swapped inside a name) stay valid.
    assert.ok(accepted < CASES, `all ${CASES} mutations were accepted`);
  });
});

// ------------------------------------------------------------------ config.json

describe(`fuzz: config.json values (${CASES} cases)`, () => {
  const raw = JSON.parse(fs.readFileSync(path.join(GOLDEN, 'config.json'), 'utf8')) as Record<
    string,
    unknown
  >;
  const golden = parseLladaConfig(raw);
  const { weights } = loadWeightTable(GOLDEN);
  const values: unknown[] = [
    0,
    -1,
    1,
    2,
    3,
    1.5,
    7,
    64,
    1e12,
    2 ** 53,
    -0,
    'x',
    '32',
    null,
    true,
    [],
    {},
  ];
  const sizeOf = (c: LladaConfig): unknown[] => [
    c.dModel,
    c.nHeads,
    c.nKvHeads,
    c.nLayers,
    c.mlpHiddenSize,
    c.embeddingSize,
    c.weightTying,
    c.includeBias,
  ];

  it('every mutation is refused cleanly, or matches the weights exactly', () => {
    const keys = Object.keys(raw);
    for (let c = 0; c < CASES; c++) {
      const seed = SEED0 + c;
      const r = rng(seed);
      const cfg: Record<string, unknown> = { ...raw };
      const k = r.pick(keys);
      const near = typeof raw[k] === 'number' ? (raw[k] as number) * r.pick([2, 0.5, 1000]) : 1;
      cfg[k] = r.int(4) === 0 ? near : r.pick(values);
      if (r.int(5) === 0) delete cfg[r.pick(keys)];
      const label = `seed ${seed}: ${k} = ${JSON.stringify(cfg[k])}`;
      let parsed: LladaConfig;
      try {
        parsed = parseLladaConfig(cfg, 'config.json');
        validateWeights(parsed, weights, 'weights');
      } catch (e) {
        assertCleanError(e, label);
        continue;
      }
      // Accepted: then every size must be the golden one (the weights define them).
      assert.deepEqual(sizeOf(parsed), sizeOf(golden), label);
    }
  });
});

// ------------------------------------------------------------------ images

describe(`fuzz: uploaded images (${CASES} cases)`, () => {
  let pngs: Buffer[];
  before(async () => {
    const px = Buffer.alloc(48 * 32 * 3);
    for (let i = 0; i < px.length; i++) px[i] = (i * 37) & 255;
    const img = sharp(px, { raw: { width: 48, height: 32, channels: 3 } });
    pngs = [
      await img.clone().png().toBuffer(),
      await img.clone().jpeg().toBuffer(),
      await img.clone().webp().toBuffer(),
      await img.clone().gif().toBuffer(),
    ];
  });

  it('every mutation decodes to a sane image or is refused cleanly', async () => {
    for (let c = 0; c < CASES; c++) {
      const seed = SEED0 + c;
      const r = rng(seed);
      const src = r.pick(pngs);
      let b = Buffer.from(src);
      const kind = r.int(4);
      let what: string;
      if (kind === 0) {
        const n = 1 + r.int(8);
        for (let i = 0; i < n; i++) b[r.int(b.length)] = r.int(256);
        what = `${n} bytes flipped`;
      } else if (kind === 1) {
        b = b.subarray(0, r.int(b.length));
        what = `truncated to ${b.length}`;
      } else if (kind === 2) {
        // Rewrite the header's size fields region (PNG IHDR, JPEG SOF, ...) with large values.
        const i = 12 + r.int(Math.min(40, b.length - 16));
        b.writeUInt32BE(r.pick([0, 1, 0xffff, 0x7fffffff, 0xffffffff]), i);
        what = `u32 at ${i} rewritten`;
      } else {
        b = Buffer.concat([b, Buffer.alloc(r.int(64), r.int(256))]);
        what = 'bytes appended';
      }
      const label = `seed ${seed}: ${what}`;
      try {
        const img = await decodeUpload(b, 'image', DEFAULT_LIMITS);
        assert.ok(img.width > 0 && img.height > 0, label);
        assert.ok(img.width * img.height <= DEFAULT_LIMITS.uploadPixels, label);
        assert.equal(img.data.length, img.width * img.height * 3, label);
      } catch (e) {
        assertCleanError(e, label);
      }
    }
  });
});

// ------------------------------------------------------------------ HTTP requests

describe(`fuzz: HTTP requests (${CASES} cases)`, () => {
  let app: FastifyInstance;
  let api: FakeDimoo;
  before(async () => {
    api = await FakeDimoo.load('fake', { stepMs: 0 });
    app = await createServer({ api, limits: { maxQueue: 1000 } });
  });
  after(async () => {
    await app.close();
    await api.dispose();
  });

  const grid = { width: 32, height: 32, codes: [1, 2, 3, 4] };
  const templates: [string, Record<string, unknown>][] = [
    ['/v1/images/generations', { prompt: 'a cat', size: '32x32', steps: 2, n: 1 }],
    ['/v1/jobs', { task: 'generate', prompt: 'a cat', size: '32x32', steps: 2 }],
    [
      '/v1/jobs',
      { task: 'retouch', image: { tokens: grid }, mask: { cells: [0, 1, 0, 0] }, steps: 2 },
    ],
    [
      '/v1/jobs',
      { task: 'inpaint', prompt: 'p', image: { tokens: grid }, mask: { ratio: { h: 1, w: 0.5 } } },
    ],
    [
      '/v1/jobs',
      {
        task: 'understand',
        question: 'q',
        image: { tokens: grid },
        max_tokens: 8,
        block_length: 4,
        steps: 2,
      },
    ],
    [
      '/v1/chat/completions',
      { max_tokens: 8, block_length: 8, steps: 2, messages: [{ role: 'user', content: 'hi' }] },
    ],
    ['/v1/tokens/decode', { tokens: grid }],
  ];
  const values: unknown[] = [
    0,
    -1,
    1,
    3,
    2.5,
    1e9,
    -1e308,
    'x',
    '',
    '0',
    '64x64',
    '16x99999',
    'NaN',
    null,
    true,
    false,
    [],
    [0],
    {},
    { h: 2 },
    'a'.repeat(5000),
    { tokens: { width: 16, height: 16, codes: [99999] } },
  ];

  /** Replaces or deletes a field somewhere in the body (top level or one level down). */
  function mutate(body: Record<string, unknown>, r: ReturnType<typeof rng>): string {
    const keys = Object.keys(body);
    const extra = [
      'steps',
      'timesteps',
      'seed',
      'size',
      'n',
      'mask',
      'image',
      'task',
      'cfg_scale',
      'stream',
      'use_cache',
      'response_format',
      'model',
      'preview_every',
    ];
    const k = r.int(3) === 0 ? r.pick(extra) : r.pick(keys);
    const v = body[k];
    if (v && typeof v === 'object' && !Array.isArray(v) && r.int(2) === 0) {
      const inner = { ...(v as Record<string, unknown>) };
      const ik = r.pick([...Object.keys(inner), 'width', 'codes', 'cells', 'ratio']);
      inner[ik] = r.pick(values);
      body[k] = inner;
      return `${k}.${ik} = ${JSON.stringify(inner[ik]).slice(0, 60)}`;
    }
    if (r.int(6) === 0) {
      delete body[k];
      return `delete ${k}`;
    }
    body[k] = r.pick(values);
    return `${k} = ${JSON.stringify(body[k]).slice(0, 60)}`;
  }

  it('every request gets a 2xx or a 4xx in the documented shape; accepted jobs end', async () => {
    for (let c = 0; c < CASES; c++) {
      const seed = SEED0 + c;
      const r = rng(seed);
      const [url, tpl] = r.pick(templates);
      const body = structuredClone(tpl);
      const changes = [mutate(body, r)];
      if (r.int(2) === 0) changes.push(mutate(body, r));
      let payload: string | Buffer = JSON.stringify(body);
      let type = 'application/json';
      const wire = r.int(10);
      if (wire === 0) {
        payload = payload.slice(0, r.int(payload.length));
        changes.push('body truncated');
      } else if (wire === 1) {
        type = r.pick([
          'text/plain',
          'multipart/form-data; boundary=x',
          'application/x-www-form-urlencoded',
        ]);
        changes.push(`content-type ${type}`);
      }
      const label = `seed ${seed}: POST ${url} ${changes.join(', ')}`;
      const res = await app.inject({
        method: 'POST',
        url,
        headers: { 'content-type': type },
        payload,
      });
      assert.ok(res.statusCode < 500, `${label}: HTTP ${res.statusCode} ${res.body.slice(0, 300)}`);
      const isSse = String(res.headers['content-type'] ?? '').startsWith('text/event-stream');
      if (res.statusCode >= 400) {
        const b = JSON.parse(res.body) as { error?: Record<string, unknown> };
        assert.equal(typeof b.error?.['message'], 'string', `${label}: ${res.body}`);
        assert.equal(typeof b.error?.['code'], 'string', `${label}: ${res.body}`);
      } else if (res.statusCode === 202) {
        const j = JSON.parse(res.body) as { id: string };
        const job = app.dimoo.queue.get(j.id)!;
        await job.done;
        // Accepted means runnable: a failure after queueing must still be the client's 4xx.
        if (job.status === 'failed') {
          assert.ok(
            (job.errorStatus ?? 400) < 500,
            `${label}: job failed with ${JSON.stringify(job.error)}`,
          );
        }
      } else if (!isSse && url !== '/v1/tokens/decode') {
        JSON.parse(res.body);
      }
    }
  });
});
