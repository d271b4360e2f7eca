/* eslint-disable @typescript-eslint/no-explicit-any -- golden case JSON is read loosely; every field used is asserted against */
/**
 * Every golden sampling case through the public library API (`Dimoo`):
 * prompts are built from the case's text, images come in as token grids, and
 * the output codes must equal the reference token for token.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Dimoo } from '../src/pipelines/dimoo.js';
import { SafetensorsFile } from '../src/models/safetensors.js';
import type { EditType, ImageResult, TokenGrid } from '../src/pipelines/types.js';
import { goldenCase, goldenCheckpointDir, readGoldenJson } from './helpers/golden.js';

let dimoo: Dimoo;
before(async () => {
  dimoo = await Dimoo.load(goldenCheckpointDir(), { threads: 2 });
});
after(async () => {
  await dimoo.dispose();
});

interface Grid {
  codes: number[];
  grid_h: number;
  grid_w: number;
}
const tokens = (g: Grid): TokenGrid => ({ height: g.grid_h * 16, width: g.grid_w * 16, codes: g.codes });
const flat = (v: unknown): number[] => (v as unknown[]).flat(3) as number[];

function assertImageMatches(name: string, res: ImageResult): void {
  const st = SafetensorsFile.open(goldenCase(`${name}.safetensors`));
  if (!st.has('decoded_image_uint8')) return;
  const want = st.readBytes('decoded_image_uint8');
  assert.ok(res.image, `${name}: image decoded`);
  assert.equal(res.image.data.length, want.length);
  let off = 0;
  for (let i = 0; i < want.length; i++) if (Math.abs(res.image.data[i]! - want[i]!) > 1) off++;
  assert.equal(off, 0, `${name}: ${off} pixel values differ by more than 1`);
}

for (const name of ['t2i_64x48_cfg4', 't2i_48x80_cfg4', 't2i_64x48_cfg0', 'mlcache_t2i_64x48_cfg4', 'mlcache_t2i_48x80_cfg4']) {
  test(`generate: ${name} token for token`, async () => {
    const g = readGoldenJson<any>(`${name}.json`);
    const p = g.params;
    const res = await dimoo.generate({
      prompt: g.prompt_text,
      width: g.width,
      height: g.height,
      timesteps: p.timesteps,
      cfgScale: p.cfg_scale,
      temperature: p.temperature,
      useCache: p.use_cache,
      cacheRatio: p.cache_ratio,
      warmupRatio: p.warmup_ratio,
      refreshInterval: p.refresh_interval,
    });
    assert.deepEqual(res.promptIds, g.prompt_ids);
    assert.equal(res.codeStart, g.code_start);
    assert.deepEqual(res.codes, flat(g.vq_codes));
    assertImageMatches(name, res);
  });
}

for (const name of ['i2i_edit_add', 'i2i_image_ref_transfer']) {
  test(`edit: ${name} token for token`, async () => {
    const g = readGoldenJson<any>(`${name}.json`);
    const p = g.params;
    const grids = g.input_image_grids as Grid[];
    const res = await dimoo.edit({
      prompt: g.prompt_text,
      editType: g.edit_type as EditType,
      image: { tokens: tokens(grids[0]!) },
      refImage: grids[1] ? { tokens: tokens(grids[1]) } : undefined,
      timesteps: p.timesteps,
      cfgScale: p.cfg_scale,
      cfgImg: p.cfg_img,
      temperature: p.temperature,
    });
    assert.deepEqual(res.promptIds, g.cond_input_initial);
    assert.equal(res.codeStart, g.code_start);
    assert.deepEqual(res.codes, flat(g.vq_codes));
    assertImageMatches(name, res);
  });
}

for (const [name, task] of [
  ['inpaint_96x64', 'inpaint'],
  ['outpaint_96x64', 'outpaint'],
] as const) {
  test(`${task}: ${name} token for token`, async () => {
    const g = readGoldenJson<any>(`${name}.json`);
    const p = g.params;
    const res = await dimoo[task]({
      prompt: g.prompt_text,
      image: { tokens: tokens(g.input_grid) },
      mask: { kind: 'ratio', hRatio: g.paint.mask_h_ratio, wRatio: g.paint.mask_w_ratio },
      timesteps: p.timesteps,
      cfgScale: p.cfg_scale,
      temperature: p.temperature,
    });
    assert.deepEqual(res.promptIds, g.prompt_ids);
    assert.deepEqual(res.codes, flat(g.vq_codes));
  });
}

for (const name of ['mmu_single_breaks', 'mmu_script_layout']) {
  test(`understand: ${name} token for token`, async () => {
    const g = readGoldenJson<any>(`${name}.json`);
    const p = g.params;
    const res = await dimoo.understand({
      question: g.question,
      image: { tokens: tokens(g.image_grid) },
      genLength: p.gen_length,
      blockLength: p.block_length,
      steps: p.steps,
      temperature: p.temperature,
      earlyStop: false,
      scriptLayout: name === 'mmu_script_layout',
    });
    assert.deepEqual(res.promptIds, g.initial_sequence);
    assert.equal(res.codeStart, g.code_start);
    assert.deepEqual(res.ids, g.answer_ids);
    assert.equal(res.text, g.answer_text);
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
  ];
  for (const [run, re] of cases) {
    await assert.rejects(run, (e: Error) => e.name === 'DimooError' && re.test(e.message), String(re));
  }
});
