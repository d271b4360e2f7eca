/**
 * Every golden sampling case through the public library API (`Dimoo`):
 * prompts are built from the case's text, images come in as token grids, and
 * the output codes must equal the reference token for token.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Dimoo } from '../src/pipelines/dimoo.js';
import { SafetensorsFile } from '../src/checkpoint/safetensors.js';
import type { EditType, ImageResult } from '../src/pipelines/types.js';
import { GOLDEN_SAMPLING_CASES, runGoldenCase } from './helpers/golden-cases.js';
import { goldenCase, goldenCheckpointDir, goldenDir, readGoldenJson } from './helpers/golden.js';
import { runTextJob } from '../src/pipelines/text-engine.js';
import { imageBlock } from '../src/pipelines/prompts.js';
import { DEFAULT_ML_CACHE } from '../src/samplers/mlcache.js';

let dimoo: Dimoo;
before(async () => {
  dimoo = await Dimoo.load(goldenCheckpointDir(), { threads: 2 });
});
after(async () => {
  await dimoo.dispose();
});

function assertImageMatches(name: string, res: ImageResult): void {
  const st = SafetensorsFile.open(goldenCase(`${name}.safetensors`));
  const want = st.readBytes('decoded_image_uint8');
  assert.ok(res.image, `${name}: image decoded`);
  assert.equal(res.image.data.length, want.length);
  let off = 0;
  for (let i = 0; i < want.length; i++) if (Math.abs(res.image.data[i]! - want[i]!) > 1) off++;
  assert.equal(off, 0, `${name}: ${off} pixel values differ by more than 1`);
}

for (const name of GOLDEN_SAMPLING_CASES) {
  test(`${name} token for token`, async () => {
    const r = await runGoldenCase(dimoo, name, goldenDir());
    assert.deepEqual(r.promptIds, r.wantPromptIds);
    assert.equal(r.codeStart, r.wantCodeStart);
    assert.deepEqual(r.got, r.want);
    if (r.wantText !== undefined) assert.equal(r.text, r.wantText);
    if (r.image) assertImageMatches(name, r.image);
  });
}

test('retouch: cells outside the marked region keep their codes bit for bit', async () => {
  const base = await dimoo.generate({ prompt: 'a red cat', width: 96, height: 64, timesteps: 4, temperature: 1, seed: 3 });
  const rect = { x: 16, y: 16, width: 32, height: 32 };
  const res = await dimoo.retouch({
    prompt: 'a blue boat',
    image: { tokens: { height: 64, width: 96, codes: base.codes } },
    mask: { kind: 'rects', rects: [rect] },
    timesteps: 4,
    temperature: 1,
    seed: 11,
  });
  let changedInside = 0;
  for (let r = 0; r < 4; r++) {
    for (let c = 0; c < 6; c++) {
      const i = r * 6 + c;
      const inside = r >= 1 && r < 3 && c >= 1 && c < 3;
      if (!inside) assert.equal(res.codes[i], base.codes[i], `cell ${r},${c} outside the region changed`);
      else if (res.codes[i] !== base.codes[i]) changedInside++;
    }
  }
  assert.ok(changedInside > 0, 'at least one marked cell was resampled');
});

test('same seed, same image; another seed, another image', async () => {
  const p = { prompt: 'a red cat', width: 48, height: 48, timesteps: 4, temperature: 1 };
  const a = await dimoo.generate({ ...p, seed: 5 });
  const b = await dimoo.generate({ ...p, seed: 5 });
  const c = await dimoo.generate({ ...p, seed: 6 });
  assert.deepEqual(a.codes, b.codes);
  assert.notDeepEqual(a.codes, c.codes);
});

test('bad parameters are refused before any compute, naming the parameter', async () => {
  const cases: [() => Promise<unknown>, RegExp][] = [
    [() => dimoo.generate({ prompt: 'x', width: 50, height: 48 }), /width must be a multiple of 16/],
    [() => dimoo.generate({ prompt: 'x', width: 48, height: 48, timesteps: 0 }), /timesteps/],
    [() => dimoo.generate({ prompt: 'x', width: 48, height: 48, useCache: true, cacheRatio: 1.5 }), /cacheRatio/],
    [() => dimoo.generate({ prompt: '', width: 48, height: 48 }), /prompt must not be empty/],
    [() => dimoo.edit({ prompt: 'x', editType: 'paint_it' as EditType, image: { tokens: { height: 16, width: 16, codes: [1] } } }), /unknown edit type/],
    [() => dimoo.edit({ prompt: 'x', editType: 'edit_add' } as never), /image is required/],
    [() => dimoo.edit({ prompt: 'x', editType: 'image_ref_transfer', image: { tokens: { height: 16, width: 16, codes: [1] } } }), /reference image/],
    [
      () => dimoo.retouch({ image: { tokens: { height: 32, width: 32, codes: [1, 2, 3, 4] } }, mask: { kind: 'rects', rects: [{ x: 16, y: 16, width: 32, height: 16 }] } }),
      /outside/,
    ],
    [() => dimoo.retouch({ image: { tokens: { height: 32, width: 32, codes: [1, 2, 3] } }, mask: { kind: 'cells', cells: [1] } }), /3 codes/],
    [() => dimoo.understand({ question: 'why', image: { tokens: { height: 16, width: 16, codes: [1] } }, genLength: 16, blockLength: 5 }), /multiple of blockLength/],
    [() => dimoo.understand({ question: 'why', image: { tokens: { height: 16, width: 16, codes: [1] } }, useCache: 'triple' as never }), /useCache must be/],
    [() => dimoo.understand({ question: 'why', image: { tokens: { height: 16, width: 16, codes: [1] } }, useCache: 'ml-cache', cfgScale: 2 }), /greedy unguided/],
    [() => dimoo.understand({ question: 'why', image: { tokens: { height: 16, width: 16, codes: [1] } }, useCache: 'ml-cache', cacheRatio: 2 }), /cacheRatio/],
  ];
  for (const [run, re] of cases) {
    await assert.rejects(run, (e: Error) => e.name === 'DimooError' && re.test(e.message), String(re));
  }
});

test('understanding caches: ml-cache with a whole-block warm-up is the dual cache; otherwise fewer rows are recomputed', async () => {
  const model = dimoo.model;
  const case0 = readGoldenJson<{ initial_sequence: number[]; code_start: number; params: { gen_length: number; block_length: number; steps: number } }>('mmu_single_breaks.json');
  const sampler = {
    sequence: case0.initial_sequence,
    codeStart: case0.code_start,
    genLength: case0.params.gen_length,
    blockLength: case0.params.block_length,
    steps: case0.params.steps,
    earlyStop: false,
  };
  const dual = await runTextJob(model, { sampler, cache: 'dual' });
  const allRefresh = await runTextJob(model, { sampler, cache: 'ml-cache', mlCache: { cacheRatio: 0.9, warmupRatio: 1, refreshInterval: 5 } });
  assert.deepEqual(allRefresh.sampler.generatedIds(), dual.sampler.generatedIds());
  assert.deepEqual(allRefresh.computedRows, dual.computedRows);
  const ml = await runTextJob(model, { sampler, cache: 'ml-cache', mlCache: { ...DEFAULT_ML_CACHE } });
  assert.equal(ml.computedRows.length, dual.computedRows.length);
  // Full passes at block starts and whole-block refreshes match the dual cache; the steps between recompute less.
  let fewer = 0;
  ml.computedRows.forEach((n, i) => {
    assert.ok(n <= dual.computedRows[i]!, `step ${i}: ${n} rows > ${dual.computedRows[i]}`);
    if (n < dual.computedRows[i]!) fewer++;
  });
  assert.ok(fewer > 0, 'some steps recompute only part of the block');
  const maskId = sampler.sequence[sampler.codeStart]!; // the answer region starts masked
  assert.equal(ml.sampler.generatedIds().includes(maskId), false, 'every answer position decided');
});

test('understanding: a text-only question is the prompt alone; several images go in order, each cropped to the multi-image budget', async () => {
  const g = readGoldenJson<{ question: string; prompt_ids: number[] }>('mmu_single_breaks.json');
  const opts = { genLength: 4, blockLength: 4, steps: 4 };
  const text = await dimoo.understand({ question: g.question, ...opts });
  const t = dimoo.special;
  assert.deepEqual(text.promptIds, [...g.prompt_ids, t.boa, t.mask, t.mask, t.mask, t.mask, t.eoa]);
  assert.equal(text.codeStart, g.prompt_ids.length + 1);
  assert.ok(text.ids.length >= 1 && text.ids.length <= 4);

  const rgb = (w: number, h: number, k: number) => {
    const data = new Uint8Array(w * h * 3);
    for (let i = 0; i < data.length; i++) data[i] = (i * k) % 251;
    return { rgb: { data, width: w, height: h } };
  };
  const a = rgb(64, 48, 7);
  const b = rgb(48, 64, 13);
  const two = await dimoo.understand({ question: g.question, images: [a, b], ...opts });
  const ga = await dimoo.encodeImage(a, { crop: 512 });
  const gb = await dimoo.encodeImage(b, { crop: 512 });
  // Within the 512² budget (a single image would get the 1024² one).
  for (const x of [ga, gb])
    assert.ok(
      x.width * x.height <= 512 * 512 && x.width * x.height > 256 * 256,
      `${x.width}x${x.height}`,
    );
  const blocks = [ga, gb].flatMap((x) => imageBlock(x.codes, x.height / 16, x.width / 16, t));
  assert.deepEqual(two.promptIds, [
    ...g.prompt_ids.slice(0, -1),
    ...blocks,
    g.prompt_ids.at(-1)!,
    t.boa,
    t.mask,
    t.mask,
    t.mask,
    t.mask,
    t.eoa,
  ]);

  // One image given as `images: [x]` is the same request as `image: x`.
  const tokens = { tokens: { height: 32, width: 48, codes: [1, 2, 3, 4, 5, 6] } };
  const one = await dimoo.understand({ question: g.question, image: tokens, ...opts });
  const listed = await dimoo.understand({ question: g.question, images: [tokens], ...opts });
  assert.deepEqual(listed.promptIds, one.promptIds);
  assert.deepEqual(listed.ids, one.ids);
  await assert.rejects(
    dimoo.understand({ question: 'q', image: tokens, images: [tokens] }),
    /image or images, not both/,
  );
  await assert.rejects(
    dimoo.understand({
      question: 'q',
      images: [tokens, { tokens: { height: 16, width: 16, codes: [9] } }, {} as never],
      ...opts,
    }),
    /images\[2\]/,
  );
});
