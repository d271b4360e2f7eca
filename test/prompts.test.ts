import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { editTypeHasFixedPrompt, isEditType } from '../src/pipelines/tasks.js';
import {
  PROMPT_TEMPLATES,
  addBreakLines,
  branchSequence,
  buildImageToImage,
  buildTextToImage,
  buildUnderstanding,
  gridCellPositions,
  imageBlock,
  imageToImagePrompt,
  readGridCodes,
  spliceBeforeLast,
  textToImagePrompt,
  understandingPrompt,
} from '../src/pipelines/prompts.js';
import { TextTokenizer } from '../src/models/tokenizer.js';
import { goldenCheckpointDir, readGoldenJson } from './helpers/golden.js';
import { readCase } from './helpers/read-case.js';
import { DimooError } from '../src/errors.js';
import { maskedImageTokens, paintCellMask } from '../src/image/masks.js';

const MASK = 126336;
const tok = TextTokenizer.fromFile(path.join(goldenCheckpointDir(), 'tokenizer.json'));

interface PromptsJson {
  templates: Record<string, string>;
  text_to_image: { prompt_text: string; input_prompt: string; uncon_prompt: string };
  image_to_image: Array<{
    edit_type: string;
    prompt_text: string;
    input_prompt: string;
    uncon_prompt: string;
    system_prompt: string;
  }>;
  understanding: { question: string; input_prompt: string };
}

test('prompt strings reproduce golden prompts.json', () => {
  const g = readGoldenJson<PromptsJson>('prompts.json');
  assert.deepEqual({ ...PROMPT_TEMPLATES }, g.templates);
  const t2i = textToImagePrompt(g.text_to_image.prompt_text);
  assert.equal(t2i.prompt, g.text_to_image.input_prompt);
  assert.equal(t2i.uncondPrompt, g.text_to_image.uncon_prompt);
  assert.ok(g.image_to_image.length >= 15);
  for (const e of g.image_to_image) {
    const p = imageToImagePrompt(e.prompt_text, e.edit_type);
    assert.equal(p.prompt, e.input_prompt, e.edit_type);
    assert.equal(p.uncondPrompt, e.uncon_prompt, e.edit_type);
    assert.equal(p.systemPrompt, e.system_prompt, e.edit_type);
  }
  assert.equal(understandingPrompt(g.understanding.question), g.understanding.input_prompt);
  assert.throws(() => textToImagePrompt(3 as unknown as string), /prompt/);
  assert.throws(() => imageToImagePrompt('x', undefined as unknown as string), /editType/);
});

interface T2ICase {
  prompt_text: string;
  input_prompt: string;
  uncon_prompt: string;
  con_prompt_ids: number[];
  uncon_ids: number[];
  prompt_ids: number[];
  code_start: number;
  grid_h: number;
  grid_w: number;
  final_sequence: number[];
  vq_codes: number[];
  vq_tokens: number[];
  model_calls: Array<{ length: number }>;
}

for (const name of [
  't2i_64x48_cfg4',
  't2i_48x80_cfg4',
  't2i_64x48_cfg0',
  'mlcache_t2i_64x48_cfg4',
]) {
  test(`${name}: text-to-image layout`, async () => {
    const g = readGoldenJson<T2ICase>(`${name}.json`);
    const pair = textToImagePrompt(g.prompt_text);
    assert.equal(pair.prompt, g.input_prompt);
    assert.equal(pair.uncondPrompt, g.uncon_prompt);
    const promptIds = await tok.encode(pair.prompt);
    const uncondPromptIds = await tok.encode(pair.uncondPrompt);
    assert.deepEqual(promptIds, g.con_prompt_ids);
    assert.deepEqual(uncondPromptIds, g.uncon_ids);
    const L = buildTextToImage({ promptIds, uncondPromptIds, gridH: g.grid_h, gridW: g.grid_w });
    assert.deepEqual(L.sequence, g.prompt_ids);
    assert.equal(L.codeStart, g.code_start);
    // branch lengths as the recorded model calls (probe first, then cond/uncond)
    assert.equal(g.model_calls[1]!.length, L.sequence.length);
    if (g.model_calls.length > 9) {
      assert.equal(
        g.model_calls[2]!.length,
        branchSequence(L.uncondPrefix, L.sequence, L.codeStart).length,
      );
    }
    assert.deepEqual(
      Array.from(readGridCodes(g.final_sequence, L.codeStart, g.grid_h, g.grid_w)),
      g.vq_codes,
    );
    assert.deepEqual(
      Array.from(gridCellPositions(L.codeStart, g.grid_h, g.grid_w), (p) => g.final_sequence[p]),
      g.vq_tokens,
    );
  });
}

test('ML-Cache case: unconditional branch ids at step 0 equal the recorded input', () => {
  const c = readCase<T2ICase>('mlcache_t2i_64x48_cfg4');
  const g = c.json;
  const L = buildTextToImage({
    promptIds: g.con_prompt_ids,
    uncondPromptIds: g.uncon_ids,
    gridH: g.grid_h,
    gridW: g.grid_w,
  });
  assert.deepEqual(
    c.ints('call02.input_ids'),
    branchSequence(L.uncondPrefix, L.sequence, L.codeStart),
  );
});

interface I2ICase {
  edit_type: string;
  prompt_text: string;
  input_prompt: string;
  uncon_text_prompt: string;
  prompt_ids: number[];
  uncon_text_ids: number[];
  input_image_grids: Array<{ codes: number[]; grid_h: number; grid_w: number }>;
  input_image_tokens: number[];
  ref_first_image_tokens: number[] | null;
  cond_input_initial: number[];
  uncond_text_input: number[];
  uncond_image_input: number[];
  code_start: number;
  grid_h: number;
  grid_w: number;
  model_calls: Array<{ length: number }>;
}

for (const name of ['i2i_edit_add', 'i2i_image_ref_transfer']) {
  test(`${name}: image-to-image three-branch layout`, async () => {
    const g = readGoldenJson<I2ICase>(`${name}.json`);
    const p = imageToImagePrompt(g.prompt_text, g.edit_type);
    assert.equal(p.prompt, g.input_prompt);
    assert.equal(p.uncondPrompt, g.uncon_text_prompt);
    const promptIds = await tok.encode(p.prompt);
    const uncondTextIds = await tok.encode(p.uncondPrompt);
    assert.deepEqual(promptIds, g.prompt_ids);
    assert.deepEqual(uncondTextIds, g.uncon_text_ids);
    const images = g.input_image_grids.map((im) => imageBlock(im.codes, im.grid_h, im.grid_w));
    assert.deepEqual(images.at(-1), g.input_image_tokens);
    if (g.ref_first_image_tokens) assert.deepEqual(images[0], g.ref_first_image_tokens);
    const L = buildImageToImage({
      promptIds,
      uncondTextIds,
      images,
      gridH: g.grid_h,
      gridW: g.grid_w,
    });
    assert.deepEqual(L.sequence, g.cond_input_initial);
    assert.equal(L.codeStart, g.code_start);
    assert.deepEqual(L.uncondTextPrefix, g.uncond_text_input);
    assert.deepEqual(L.uncondImagePrefix, g.uncond_image_input);
    // step-0 forwards: cond, uncond-text, uncond-image
    assert.equal(g.model_calls[1]!.length, L.sequence.length);
    assert.equal(
      g.model_calls[2]!.length,
      branchSequence(L.uncondTextPrefix, L.sequence, L.codeStart).length,
    );
    assert.equal(
      g.model_calls[3]!.length,
      branchSequence(L.uncondImagePrefix, L.sequence, L.codeStart).length,
    );
  });
}

interface PaintCase extends T2ICase {
  image_size: { width: number; height: number };
  input_grid: { codes: number[]; grid_h: number; grid_w: number };
  paint: { mask_h_ratio: number; mask_w_ratio: number; mode: 'inpainting' | 'outpainting' };
  masked_image_tokens: number[];
}

for (const name of ['inpaint_96x64', 'outpaint_96x64']) {
  test(`${name}: painting mask and grid replacement`, () => {
    const g = readGoldenJson<PaintCase>(`${name}.json`);
    const { grid_h: H, grid_w: W, codes } = g.input_grid;
    // The mask itself lives in image/masks.ts; here it feeds the t2i layout.
    const mask = paintCellMask(g.image_size.width, g.image_size.height, {
      maskHRatio: g.paint.mask_h_ratio,
      maskWRatio: g.paint.mask_w_ratio,
      mode: g.paint.mode,
    }).cells;
    const rows = maskedImageTokens(codes, { gridH: H, gridW: W, cells: mask });
    assert.deepEqual(rows, g.masked_image_tokens);
    const cellTokens = rows.filter((_, i) => (i + 1) % (W + 1) !== 0);
    const L = buildTextToImage({
      promptIds: g.con_prompt_ids,
      uncondPromptIds: g.uncon_ids,
      gridH: H,
      gridW: W,
      cellTokens,
    });
    assert.deepEqual(L.sequence, g.prompt_ids);
    assert.equal(L.codeStart, g.code_start);
    // known cells come back unchanged
    const out = readGridCodes(g.final_sequence, L.codeStart, H, W);
    mask.forEach((m, i) => {
      if (!m) assert.equal(out[i], codes[i]);
    });
    assert.deepEqual(Array.from(out), g.vq_codes);
  });
}

interface MmuCase {
  question: string;
  input_prompt: string;
  prompt_ids: number[];
  image_grid: { codes: number[]; grid_h: number; grid_w: number };
  encode_img_with_breaks_output: number[];
  image_tokens_in_prompt: number[];
  initial_sequence: number[];
  code_start: number;
  params: { gen_length: number };
  prompt_layout: string;
}

for (const [name, layout] of [
  ['mmu_single_breaks', 'single'],
  ['mmu_script_layout', 'script'],
] as const) {
  test(`${name}: understanding layout '${layout}'`, async () => {
    const g = readGoldenJson<MmuCase>(`${name}.json`);
    const prompt = understandingPrompt(g.question);
    assert.equal(prompt, g.input_prompt);
    const promptIds = await tok.encode(prompt);
    assert.deepEqual(promptIds, g.prompt_ids);
    const { codes, grid_h: H, grid_w: W } = g.image_grid;
    assert.deepEqual(imageBlock(codes, H, W), g.encode_img_with_breaks_output);
    const L = buildUnderstanding({
      promptIds,
      images: [{ codes, gridH: H, gridW: W }],
      genLength: g.params.gen_length,
      layout,
    });
    assert.deepEqual(L.imageTokens, g.image_tokens_in_prompt);
    assert.deepEqual(L.sequence, g.initial_sequence);
    assert.equal(L.codeStart, g.code_start);
    assert.equal(L.sequence[L.codeStart - 1], 126354);
    assert.equal(L.sequence[L.codeStart], MASK);
  });
}

test('low-level helpers behave like the original list operations', () => {
  assert.deepEqual(addBreakLines([1, 2, 3, 4, 5, 6, 7], 2, 3, 0), [1, 2, 3, 0, 4, 5, 6, 0]);
  assert.deepEqual(addBreakLines([1, 2], 2, 3, 0), [1, 2, 0, 0]);
  assert.deepEqual(spliceBeforeLast([1, 2, 3], [7, 8], [9]), [1, 2, 7, 8, 9, 3]);
  assert.deepEqual(branchSequence([5, 5], [0, 1, 2, 3, 4], 3), [5, 5, 1, 2, 3, 4]);
  assert.deepEqual(Array.from(gridCellPositions(10, 2, 3)), [10, 11, 12, 14, 15, 16]);
  assert.throws(
    () => imageBlock([8192], 1, 1),
    (e: unknown) => e instanceof DimooError && /codes\[0\]/.test(e.message),
  );
  assert.throws(
    () =>
      buildUnderstanding({
        promptIds: [1, 2],
        images: [{ codes: [1], gridH: 1, gridW: 1 }],
        genLength: 0,
      }),
    /genLength/,
  );
  assert.throws(() => readGridCodes([1, 2, 3, 4], 0, 1, 1), /position 0/);
  assert.throws(() => spliceBeforeLast([]), DimooError);
});

test('multi_view_<view>: accepted, and the view name lands in the prompt', () => {
  assert.ok(
    isEditType('multi_view_left') && isEditType('multi_view_back') && isEditType('multi_view'),
  );
  assert.ok(!isEditType('multi_view_') && !isEditType('multi_view_Left1') && !isEditType('paint'));
  const p = imageToImagePrompt('', 'multi_view_left');
  assert.match(p.prompt, /Generate the left view based on the provided front view\./);
  assert.match(imageToImagePrompt('', 'multi_view_back').prompt, /Generate the back view /);
});

test('fixed-prompt edit types are the ones whose text the prompt builder ignores', () => {
  for (const t of ['multi_view', 'multi_view_left', 'image_ref_transfer', 'canny_dense'])
    assert.ok(editTypeHasFixedPrompt(t), t);
  for (const t of ['edit_add', 'canny_pred', 'depth_control', 'subject_driven'])
    assert.ok(!editTypeHasFixedPrompt(t), t);
});

test('understanding with several images: one block per image, in order, before </user>', () => {
  const g = readGoldenJson<MmuCase>('mmu_single_breaks.json');
  const { codes, grid_h: H, grid_w: W } = g.image_grid;
  const other = { codes: [5, 6, 7, 8, 9, 10], gridH: 2, gridW: 3 };
  const promptIds = g.prompt_ids;
  const L = buildUnderstanding({
    promptIds,
    images: [{ codes, gridH: H, gridW: W }, other],
    genLength: 4,
  });
  const first = imageBlock(codes, H, W);
  const second = imageBlock(other.codes, 2, 3);
  assert.deepEqual(L.imageTokens, [...first, ...second]);
  assert.deepEqual(L.sequence.slice(0, promptIds.length - 1), promptIds.slice(0, -1));
  assert.deepEqual(
    L.sequence.slice(promptIds.length - 1, promptIds.length - 1 + L.imageTokens.length),
    L.imageTokens,
  );
  // </user> follows the last image, then <answer>, the masks and </answer>.
  assert.equal(L.sequence[promptIds.length - 1 + L.imageTokens.length], promptIds.at(-1));
  assert.equal(L.codeStart, promptIds.length + L.imageTokens.length + 1);
  assert.equal(L.sequence[L.codeStart - 1], 126354);
  assert.deepEqual(L.sequence.slice(L.codeStart, -1), [MASK, MASK, MASK, MASK]);
  // Exactly two <IMAGE> ... </IMAGE> pairs.
  assert.equal(L.sequence.filter((x) => x === first[0]).length, 2);
  assert.equal(L.sequence.filter((x) => x === first.at(-1)).length, 2);
  assert.throws(
    () =>
      buildUnderstanding({
        promptIds,
        images: [{ codes, gridH: H, gridW: W }, other, other],
        genLength: 4,
        layout: 'script',
      }),
    /exactly one image; got 3/,
  );
  assert.throws(
    () =>
      buildUnderstanding({
        promptIds,
        images: [other, { codes: [1, 9999], gridH: 1, gridW: 2 }],
        genLength: 4,
      }),
    /images\[1\]\.codes\[1\]/,
  );
});

test('understanding with text only: the prompt as it is, then the answer masks', () => {
  const g = readGoldenJson<MmuCase>('mmu_single_breaks.json');
  const L = buildUnderstanding({ promptIds: g.prompt_ids, images: [], genLength: 3 });
  assert.deepEqual(L.imageTokens, []);
  assert.deepEqual(L.sequence, [...g.prompt_ids, 126354, MASK, MASK, MASK, 126355]);
  assert.equal(L.codeStart, g.prompt_ids.length + 1);
});
