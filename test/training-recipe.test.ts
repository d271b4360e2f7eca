import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { TextTokenizer } from '../src/models/tokenizer.js';
import { loadLladaConfig } from '../src/checkpoint/config.js';
import { loadVqConfig } from '../src/checkpoint/vq-config.js';
import { resolveSpecialTokens } from '../src/checkpoint/special-tokens.js';
import { Prng } from '../src/samplers/prng.js';
import {
  IGNORE,
  answerText,
  instructionText,
  layoutItem,
  layoutLength,
  maskCount,
  prngChoices,
  truncateIds,
  uncondInstructionText,
  type RecipeChoices,
  type TokenizedItem,
} from '../src/training/recipe.js';
import { buildImageToImage, imageBlock } from '../src/pipelines/prompts.js';
import { goldenCheckpointDir, readGoldenJson } from './helpers/golden.js';

interface GoldenGrid {
  height: number;
  width: number;
  codes: number[];
}
interface GoldenTrainCase {
  items: Array<{
    kind: 't2i' | 'i2i' | 'mmu';
    system_prompt: string;
    user_prompt: string;
    answer_text: string;
    grids: { user_image?: GoldenGrid; answer_image?: GoldenGrid };
  }>;
  processed: Array<{ input_ids: number[]; labels: number[] }>;
}

const dir = goldenCheckpointDir();
const tok = TextTokenizer.fromFile(path.join(dir, 'tokenizer.json'));
const config = loadLladaConfig(path.join(dir, 'config.json'));
const vq = loadVqConfig(path.join(dir, 'vqvae'));
const T = resolveSpecialTokens(tok, config, { codebookSize: vq.numVqEmbeddings });

async function tokenize(item: GoldenTrainCase['items'][number]): Promise<TokenizedItem> {
  const grid = (g?: GoldenGrid) =>
    g && {
      gridH: g.height / vq.scaleFactor,
      gridW: g.width / vq.scaleFactor,
      codes: g.codes,
    };
  return {
    kind: item.kind,
    instruction: truncateIds(
      await tok.encode(instructionText(item.system_prompt, item.user_prompt)),
    ),
    uncondInstruction: truncateIds(await tok.encode(uncondInstructionText(item.system_prompt))),
    userImage: grid(item.grids.user_image),
    answerImage: grid(item.grids.answer_image),
    answer:
      item.kind === 'mmu' ? truncateIds(await tok.encode(answerText(item.answer_text))) : undefined,
  };
}

/**
 * Choices that replay the golden masks: the masked positions are read off
 * the golden labels and mapped back to indices within each masked span.
 */
function replay(
  item: TokenizedItem,
  golden: { input_ids: number[]; labels: number[] },
): RecipeChoices {
  const seq = golden.input_ids;
  const labelled = golden.labels.flatMap((l, i) => (l === IGNORE ? [] : [i]));
  const dropped = seq.includes(T.uncondition);
  const spans: number[][] = [];
  if (item.kind === 'mmu') {
    const start = seq.indexOf(T.boa) + 1;
    const n = item.answer!.length;
    spans.push(labelled.filter((p) => p < start + n).map((p) => p - start));
    spans.push(labelled.filter((p) => p >= start + n).map((p) => p - start - n));
  } else {
    const g = item.answerImage!;
    const start = seq.length - 2 - g.gridH * (g.gridW + 1);
    spans.push(
      labelled.map((p) => {
        const r = Math.floor((p - start) / (g.gridW + 1));
        const c = (p - start) % (g.gridW + 1);
        assert.ok(c < g.gridW, 'a row break is labelled');
        return r * g.gridW + c;
      }),
    );
  }
  return {
    maskPositions: () => spans.shift()!,
    dropCondition: () => dropped,
  };
}

for (const name of ['train_t2i_i2i_padded', 'train_mmu_single']) {
  test(`recipe layout reproduces golden ${name} processed sequences`, async () => {
    const g = readGoldenJson<GoldenTrainCase>(`${name}.json`);
    let drops = 0;
    for (let i = 0; i < g.items.length; i++) {
      const item = await tokenize(g.items[i]!);
      const out = layoutItem(item, replay(item, g.processed[i]!), T);
      assert.deepEqual(out.inputIds, g.processed[i]!.input_ids, `${name} item ${i} input_ids`);
      assert.deepEqual(out.labels, g.processed[i]!.labels, `${name} item ${i} labels`);
      if (out.dropped) drops++;
      else
        assert.equal(layoutLength(item), out.inputIds.length, 'layoutLength of a kept condition');
    }
    if (name === 'train_t2i_i2i_padded')
      assert.equal(drops, 1, 'the golden i2i record is a dropped condition');
  });
}

test('maskCount follows the cosine ratio with at least one token', () => {
  assert.equal(maskCount(4, 0.9, false), 4, 'short spans are masked entirely');
  assert.equal(maskCount(4, 0.9, true), 1, 'unless always: floor(4*cos(0.45pi)) = 0 -> 1');
  assert.equal(maskCount(100, 0, false), 100);
  assert.equal(maskCount(100, 0.5, false), Math.floor(100 * Math.cos(Math.PI / 4)));
  assert.equal(maskCount(0, 0.5, true), 0);
});

test('seeded layouts: same stream, same layout; masks are the labelled positions', async () => {
  const g = readGoldenJson<GoldenTrainCase>('train_t2i_i2i_padded.json');
  const items = await Promise.all(g.items.map(tokenize));
  let drops = 0;
  for (let s = 0; s < 200; s++) {
    for (const [k, item] of items.entries()) {
      const a = layoutItem(item, prngChoices(new Prng(7, s, k)), T);
      const b = layoutItem(item, prngChoices(new Prng(7, s, k)), T);
      assert.deepEqual(a, b);
      const masked = a.inputIds.flatMap((id, i) => (id === T.mask ? [i] : []));
      const labelled = a.labels.flatMap((l, i) => (l === IGNORE ? [] : [i]));
      assert.deepEqual(masked, labelled);
      assert.ok(labelled.length >= 1);
      for (const p of labelled) assert.notEqual(a.labels[p], T.newline, 'row breaks never learned');
      if (a.dropped) {
        drops++;
        assert.ok(item.kind !== 'mmu');
        assert.ok(a.inputIds.includes(T.uncondition));
        // A dropped i2i record has exactly one image: the answer.
        assert.equal(a.inputIds.filter((id) => id === T.boi).length, 1);
      }
      if (item.kind === 'mmu') {
        const start = a.inputIds.indexOf(T.boa) + 1;
        assert.equal(a.inputIds.length - start, 1024, 'answer + padding = 1024 tokens');
      }
    }
  }
  // 400 t2i/i2i layouts at 10%: 40 expected; the bounds are ~6 sigma wide.
  assert.ok(drops > 5 && drops < 80, `condition drops ${drops}`);
});

test("i2iDrop 'guidance': a dropped edit trains each context the edit sampler's guidance asks about", async () => {
  const g = readGoldenJson<GoldenTrainCase>('train_t2i_i2i_padded.json');
  const items = await Promise.all(g.items.map(tokenize));
  const item = items.find((it) => it.kind === 'i2i');
  assert.ok(item, 'the golden case has an image-to-image record');
  const u = item.userImage!;
  const a = item.answerImage!;
  // What the sampler feeds its three branches for this record's text and picture.
  const lay = buildImageToImage(
    {
      promptIds: item.instruction,
      uncondTextIds: item.uncondInstruction!,
      images: [imageBlock(u.codes, u.gridH, u.gridW, T)],
      gridH: a.gridH,
      gridW: a.gridW,
    },
    T,
  );
  const cond = lay.sequence.slice(0, lay.codeStart - 2);
  const prefixes = [item.uncondInstruction!, lay.uncondTextPrefix, lay.uncondImagePrefix];
  const forced = (drop: boolean, variant: number): RecipeChoices => ({
    maskPositions: (n) => Array.from({ length: n }, (_, i) => i),
    dropCondition: () => drop,
    dropVariant: () => variant,
  });
  const prefixOf = (ids: number[]) => ids.slice(0, ids.lastIndexOf(T.boa));
  for (const [v, want] of prefixes.entries()) {
    const out = layoutItem(item, forced(true, v), T, { i2iDrop: 'guidance' });
    assert.deepEqual(prefixOf(out.inputIds), [...want], `variant ${v}`);
    assert.ok(out.dropped);
    assert.ok(out.inputIds.length <= layoutLength(item, { i2iDrop: 'guidance' }));
  }
  // Kept condition: the conditional branch, with either setting.
  for (const i2iDrop of ['original', 'guidance'] as const)
    assert.deepEqual(prefixOf(layoutItem(item, forced(false, 1), T, { i2iDrop }).inputIds), cond);
  // The original drops text and picture together whatever dropVariant would say.
  assert.deepEqual(prefixOf(layoutItem(item, forced(true, 1), T).inputIds), [
    ...item.uncondInstruction!,
  ]);
  // Seeded: all three contexts occur, in about equal shares of the drops.
  const seen = [0, 0, 0];
  for (let s = 0; s < 3000; s++) {
    const out = layoutItem(item, prngChoices(new Prng(11, s)), T, { i2iDrop: 'guidance' });
    if (out.dropped) seen[prefixes.findIndex((p) => p.join() === prefixOf(out.inputIds).join())]!++;
  }
  // ~300 drops, ~100 each: bounds ~5 sigma wide.
  for (const n of seen) assert.ok(n > 50 && n < 160, `drop contexts ${seen.join('/')}`);
});

test('imageFullMask: a share of answer pictures is masked whole; 0 keeps the original stream', async () => {
  const g = readGoldenJson<GoldenTrainCase>('train_t2i_i2i_padded.json');
  const items = await Promise.all(g.items.map(tokenize));
  const cellsOf = (it: TokenizedItem) => it.answerImage!.codes.length;
  for (const item of items.filter((it) => it.kind !== 'mmu')) {
    const n = cellsOf(item);
    // Share 0: nothing is drawn, so the original's stream of choices (and the
    // golden layouts) stay as they are.
    for (let s = 0; s < 50; s++) {
      const choices: RecipeChoices = {
        ...prngChoices(new Prng(5, s)),
        fullMask: () => assert.fail('fullMask drawn with imageFullMask 0'),
      };
      const a = layoutItem(item, prngChoices(new Prng(5, s)), T);
      assert.deepEqual(layoutItem(item, choices, T, { imageFullMask: 0 }), a);
    }
    let whole = 0;
    let partial = 0;
    for (let s = 0; s < 400; s++) {
      const out = layoutItem(item, prngChoices(new Prng(7, s)), T, { imageFullMask: 0.5 });
      const start = out.inputIds.lastIndexOf(T.boi) + 1;
      const span = out.inputIds.slice(start, out.inputIds.lastIndexOf(T.eoi));
      const masked = span.filter((id) => id === T.mask).length;
      const labelled = out.labels.filter((l) => l !== IGNORE).length;
      // Every masked cell is labelled with its code, the row breaks never.
      assert.equal(labelled, masked);
      assert.equal(span.filter((id) => id === T.newline).length, item.answerImage!.gridH);
      if (masked === n) whole++;
      else partial++;
    }
    // Half masked whole (plus the cosine's own rare full masks): ~200 of 400, bounds ~5 sigma.
    assert.ok(whole > 150 && whole < 280 && partial > 120, `whole ${whole}, partial ${partial}`);
  }
  // Share 1: always whole.
  const t2i = items.find((it) => it.kind === 't2i')!;
  const all = layoutItem(t2i, prngChoices(new Prng(1)), T, { imageFullMask: 1 });
  assert.equal(all.labels.filter((l) => l !== IGNORE).length, cellsOf(t2i));
});
