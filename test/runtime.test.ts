import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DimooError } from '../src/errors.js';
import type { ProgressEvent } from '../src/pipelines/types.js';
import { WorkerDimoo } from '../src/runtime/worker-dimoo.js';
import { goldenCheckpointDir } from './helpers/golden.js';

const EXT = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
const FAKE = new URL(`./helpers/fake-dimoo${EXT}`, import.meta.url);

function loadFake(stepMs = 5): Promise<WorkerDimoo> {
  return WorkerDimoo.load('fake-dir', {
    moduleUrl: FAKE,
    exportName: 'FakeDimoo',
    extra: { stepMs },
  });
}

describe('WorkerDimoo (fake model in a worker thread)', () => {
  let api: WorkerDimoo;
  before(async () => {
    api = await loadFake(20);
  });
  after(async () => {
    await api.dispose();
  });

  it('reports model info and generates with progress and transferred preview codes', async () => {
    assert.equal(api.info().name, 'dimoo-fake');
    const events: ProgressEvent[] = [];
    const r = await api.generate(
      { prompt: 'a cat', width: 64, height: 32, timesteps: 4, seed: 1 },
      { onProgress: (e) => events.push(e), preview: true },
    );
    assert.equal(r.codes.length, 8);
    assert.equal(r.width, 64);
    assert.ok(r.image && r.image.data instanceof Uint8Array && r.image.data.length === 64 * 32 * 3);
    assert.deepEqual(
      events.map((e) => e.step),
      [1, 2, 3, 4],
    );
    assert.ok(events[0]!.previewCodes instanceof Int32Array);
    assert.equal(events.at(-1)!.masked, 0);
  });

  it('keeps DimooError message and code across the thread boundary', async () => {
    await assert.rejects(api.generate({ prompt: 'x', width: 50, height: 32 }), (e: unknown) => {
      assert.ok(e instanceof DimooError);
      assert.equal(e.code, 'E_PARAM');
      assert.match(e.message, /width must be a positive multiple of 16/);
      return true;
    });
  });

  it('aborts a running job between steps through the shared flag, and the main loop stays free', async () => {
    const ac = new AbortController();
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    let steps = 0;
    const t0 = performance.now();
    const p = api.generate(
      { prompt: 'long', width: 32, height: 32, timesteps: 1000 },
      {
        signal: ac.signal,
        onProgress: (e) => {
          steps = e.step;
          if (e.step === 5) ac.abort();
        },
      },
    );
    await assert.rejects(p, (e: unknown) => (e as Error).name === 'AbortError');
    clearInterval(timer);
    const ms = performance.now() - t0;
    assert.ok(steps < 20, `stopped after ${steps} steps`);
    assert.ok(ms < 2000, `took ${ms} ms`);
    // 20 ms steps on the worker; the main thread kept ticking meanwhile.
    assert.ok(ticks >= 5, `main thread ticked ${ticks} times`);
  });

  it('rejects at once when the signal is already aborted', async () => {
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(
      api.generate({ prompt: 'x', width: 32, height: 32 }, { signal: ac.signal }),
      { name: 'AbortError' },
    );
  });

  it('answers a decode while a job runs (interleaved between steps)', async () => {
    const job = api.generate({ prompt: 'busy', width: 32, height: 32, timesteps: 30 });
    const img = await api.decodeTokens({ width: 16, height: 16, codes: [0] });
    assert.equal(img.data.length, 16 * 16 * 3);
    const r = await job;
    assert.equal(r.codes.length, 4);
  });

  it('runs understanding with streamed text and encodes raw pixels', async () => {
    const rgb = { data: new Uint8Array(32 * 32 * 3).fill(200), width: 32, height: 32 };
    const grid = await api.encodeImage({ rgb }, { crop: 'none' });
    assert.deepEqual([grid.width, grid.height, grid.codes.length], [32, 32, 4]);
    assert.equal(rgb.data.length, 32 * 32 * 3, 'input buffer is not detached');
    const texts: string[] = [];
    const r = await api.understand(
      { question: 'what?', image: { rgb }, steps: 4 },
      { onProgress: (e) => texts.push(e.text ?? '') },
    );
    assert.equal(texts.length, 4);
    assert.ok(r.text.startsWith(texts[0]!));
  });
});

describe('WorkerDimoo lifecycle', () => {
  it('reports a load failure as the DimooError the model raised', async () => {
    await assert.rejects(
      WorkerDimoo.load('missing-dir', { moduleUrl: FAKE, exportName: 'FakeDimoo' }),
      (e: unknown) => e instanceof DimooError && e.code === 'E_CHECKPOINT',
    );
  });

  it('reports a module without the export', async () => {
    await assert.rejects(
      WorkerDimoo.load('x', { moduleUrl: FAKE, exportName: 'Nope' }),
      /no export Nope/,
    );
  });

  it('rejects running and later calls after dispose', async () => {
    const api = await loadFake(20);
    const running = api.generate({ prompt: 'x', width: 32, height: 32, timesteps: 500 });
    const settled = assert.rejects(running);
    await new Promise((r) => setTimeout(r, 50));
    await api.dispose();
    await settled;
    await assert.rejects(
      api.decodeTokens({ width: 16, height: 16, codes: [1] }),
      (e: unknown) => (e as DimooError).code === 'E_WORKER',
    );
  });
});

describe('WorkerDimoo with the golden tiny checkpoint', () => {
  let api: WorkerDimoo;
  before(async () => {
    api = await WorkerDimoo.load(goldenCheckpointDir());
  });
  after(async () => {
    await api.dispose();
  });

  it('gives exactly the in-process result (codes and pixels)', async () => {
    const { Dimoo } = await import('../src/pipelines/dimoo.js');
    const local = await Dimoo.load(goldenCheckpointDir());
    try {
      const p = { prompt: 'a cat', width: 64, height: 48, timesteps: 4, seed: 3, temperature: 1 };
      const [a, b] = [await api.generate(p), await local.generate(p)];
      assert.deepEqual(a.codes, b.codes);
      assert.deepEqual(a.image!.data, b.image!.data);
      assert.equal(api.info().name, local.info().name);
    } finally {
      await local.dispose();
    }
  });

  it('stops a real job between steps when aborted', async () => {
    const ac = new AbortController();
    let last = 0;
    const p = api.generate(
      { prompt: 'a cat', width: 128, height: 128, timesteps: 100 },
      {
        signal: ac.signal,
        onProgress: (e) => {
          last = e.step;
          if (e.step === 2) ac.abort();
        },
      },
    );
    await assert.rejects(p, { name: 'AbortError' });
    assert.ok(last < 6, `ran ${last} steps`);
    // The worker is free again afterwards.
    const g = await api.encodeImage({ tokens: { width: 16, height: 16, codes: [1] } });
    assert.deepEqual(g.codes, [1]);
  });

  it('keeps the library error code for bad parameters', async () => {
    await assert.rejects(
      api.generate({ prompt: 'x', width: 40, height: 48 }),
      (e: unknown) => e instanceof DimooError && /^E_/.test(e.code),
    );
  });
});
