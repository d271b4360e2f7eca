/**
 * The shapes model this package ships (models/shapes/, trained by
 * `npm run train:shapes`): it is the default model, loads through the
 * ordinary loader, draws pictures that the world's checker reads as asked,
 * and answers questions about rendered pictures. Seeds are fixed, so each
 * case is one deterministic run of the sampler.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { Dimoo } from '../src/index.js';
import {
  DEFAULT_MODEL_ENV,
  findDefaultModel,
  isCompleteCheckpoint,
  shippedModelDir,
} from '../src/checkpoint/default-model.js';
import { detectScene } from '../src/shapes/checker.js';
import { describeScene, fullRequest } from '../src/shapes/language.js';
import { scoreT2i } from '../src/shapes/score.js';
import { runShapesEval } from '../src/shapes/eval.js';
import type { SceneFacts } from '../src/shapes/world.js';

const dir = shippedModelDir();
// Until `npm run train:shapes -- --ship` has put a model there, there is nothing to test.
const skip = isCompleteCheckpoint(dir) ? false : `no shipped model in ${dir} yet`;

/** Bytes of every file under `d` once zlib-compressed, as git stores a blob. */
function storedBytes(d: string): number {
  let n = 0;
  for (const e of fs.readdirSync(d, { withFileTypes: true })) {
    const p = path.join(d, e.name);
    n += e.isDirectory() ? storedBytes(p) : zlib.deflateSync(fs.readFileSync(p)).length;
  }
  return n;
}

/** Runs f on the model loaded with no model named (and no $DIMOO_MODEL), then disposes it. */
async function withDefault(f: (d: Dimoo) => Promise<void>): Promise<void> {
  const saved = process.env[DEFAULT_MODEL_ENV];
  delete process.env[DEFAULT_MODEL_ENV];
  let d: Dimoo;
  try {
    d = await Dimoo.load(undefined, { threads: 2 });
  } finally {
    if (saved !== undefined) process.env[DEFAULT_MODEL_ENV] = saved;
  }
  try {
    await f(d);
  } finally {
    await d.dispose();
  }
}

test(
  'the shipped model is complete, <= 40 MB as git stores it, and the default when nothing else is named',
  { skip },
  () => {
    assert.ok(isCompleteCheckpoint(dir), `${dir} is a complete checkpoint`);
    assert.deepEqual(findDefaultModel({}), { dir, source: 'shipped' });
    const mb = storedBytes(dir) / 2 ** 20;
    assert.ok(mb <= 40, `${mb.toFixed(1)} MB as git stores it (the limit is 40)`);
  },
);

/** Single objects of different shapes, colours, sizes, cells and backgrounds. */
const SCENES: SceneFacts[] = [
  { background: 'white', objects: [{ shape: 'circle', color: 'red', size: 'large', cell: 4 }] },
  { background: 'black', objects: [{ shape: 'square', color: 'blue', size: 'large', cell: 0 }] },
  { background: 'gray', objects: [{ shape: 'triangle', color: 'yellow', size: 'large', cell: 8 }] },
];

test(
  'text-to-image: at fixed seeds the checker reads back every requested attribute',
  { skip },
  () =>
    withDefault(async (d) => {
      assert.equal(path.resolve(d.info().dir), path.resolve(dir));
      for (const [i, scene] of SCENES.entries()) {
        const prompt = describeScene(scene);
        const r = await d.generate({ prompt, seed: i });
        const det = detectScene(r.image!);
        const s = scoreT2i(fullRequest(scene), det);
        assert.ok(
          s.pass,
          `"${prompt}" (seed ${i}): read ${describeScene(det)}: ${JSON.stringify(s.attributes)}`,
        );
      }
    }),
);

test(
  'understanding: questions about rendered held-out pictures get the exact answer',
  { skip },
  () =>
    withDefault(async (d) => {
      const report = await runShapesEval(d, { tasks: ['mmu'], limit: 5, seed: 0 });
      const wrong = report.items.filter((x) => !x.pass);
      assert.ok(
        wrong.length <= 1,
        `wrong answers: ${wrong.map((x) => `"${x.prompt}" -> "${x.got}" (want "${x.expected}")`).join('; ')}`,
      );
    }),
);
