/**
 * The shapes model's image-code rows start from the VQ-VAE's thumbnails:
 * codes that look alike start alike, filler codes and text rows stay random.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { openCheckpoint } from '../src/checkpoint/folder.js';
import { readTensorFloat32, SafetensorsFile } from '../src/checkpoint/safetensors.js';
import { packageRoot } from '../src/checkpoint/default-model.js';
import { writeShapesCheckpoint } from '../src/shapes/model.js';
import { projectedThumbnails } from '../src/shapes/codebook-rows.js';
import { FILLER } from '../src/shapes/vq-dictionary.js';
import { IMAGE_TOKEN_OFFSET } from '../src/tools/tokenizer-files.js';

const VQ = path.join(packageRoot(), 'assets', 'shapes-vq');
const SIZES = { dModel: 32, nHeads: 4, nLayers: 1, mlpHiddenSize: 64 };
let tmp = '';

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-codebook-rows-'));
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function cosine(a: Float32Array, b: Float32Array): number {
  let s = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    s += a[i]! * b[i]!;
    na += a[i]! ** 2;
    nb += b[i]! ** 2;
  }
  return s / Math.sqrt(na * nb);
}

test('projectedThumbnails: fillers get none, equal thumbnails equal rows, unit variance', () => {
  const dim = 3;
  const codes = 400;
  const cb = new Float32Array(codes * dim);
  for (let i = 0; i < cb.length; i++) cb[i] = ((i * 7919) % 101) / 100;
  cb.set([0.5, 0.5, 0.5], 0);
  cb.set([0.5, 0.5, 0.5], dim);
  cb.fill(FILLER, 399 * dim);
  const rows = projectedThumbnails(cb, codes, dim, 64, 0);
  assert.equal(rows[399], null);
  assert.deepEqual(rows[0], rows[1]);
  let ss = 0;
  let n = 0;
  for (const r of rows)
    if (r)
      for (const x of r) {
        ss += x * x;
        n++;
      }
  const v = ss / n;
  assert.ok(v > 0.7 && v < 1.3, `variance ${v}`);
  assert.notDeepEqual(
    projectedThumbnails(cb, codes, dim, 64, 1)[5],
    rows[5],
    'the seed sets the projection',
  );
});

test('a shapes checkpoint with the trained VQ-VAE: look-alike codes start alike; text and filler rows stay random', async () => {
  const seeded = path.join(tmp, 'seeded');
  const plain = path.join(tmp, 'plain');
  await writeShapesCheckpoint(seeded, { seed: 4, overrides: SIZES, vqDir: VQ });
  await writeShapesCheckpoint(plain, { seed: 4, overrides: SIZES, vqDir: VQ, codebookRows: false });
  const cb = readTensorFloat32(
    SafetensorsFile.open(path.join(VQ, 'diffusion_pytorch_model.safetensors')).info(
      'quantize.embedding.weight',
    ),
  );
  const dim = 48;
  const D = SIZES.dModel;
  for (const name of ['model.transformer.wte.weight', 'model.transformer.ff_out.weight']) {
    const a = readTensorFloat32(openCheckpoint(seeded).weights.get(name)!);
    const b = readTensorFloat32(openCheckpoint(plain).weights.get(name)!);
    const row = (t: Float32Array, id: number) => t.subarray(id * D, (id + 1) * D);
    // Text rows: untouched.
    assert.deepEqual(row(a, 5), row(b, 5), `${name}: text row 5`);
    // The closest pair of thumbnails among the first 300 codes, and a far pair.
    let best = [Infinity, 0, 0];
    let worst = [0, 0, 0];
    for (let i = 0; i < 300; i++)
      for (let j = i + 1; j < 300; j++) {
        let d = 0;
        for (let t = 0; t < dim; t++) d += (cb[i * dim + t]! - cb[j * dim + t]!) ** 2;
        if (d < best[0]!) best = [d, i, j];
        if (d > worst[0]!) worst = [d, i, j];
      }
    const near = cosine(
      row(a, IMAGE_TOKEN_OFFSET + best[1]!),
      row(a, IMAGE_TOKEN_OFFSET + best[2]!),
    );
    const nearBefore = cosine(
      row(b, IMAGE_TOKEN_OFFSET + best[1]!),
      row(b, IMAGE_TOKEN_OFFSET + best[2]!),
    );
    const far = cosine(
      row(a, IMAGE_TOKEN_OFFSET + worst[1]!),
      row(a, IMAGE_TOKEN_OFFSET + worst[2]!),
    );
    assert.ok(
      near > 0.5 && near > nearBefore + 0.3,
      `${name}: look-alike codes ${near} (random: ${nearBefore})`,
    );
    assert.ok(far < near - 0.5, `${name}: unlike codes ${far} vs look-alike ${near}`);
    // Filler codes (no thumbnail) keep their random rows.
    const filler = [...Array(8192).keys()].find((k) =>
      cb.subarray(k * dim, (k + 1) * dim).every((x) => x === FILLER),
    );
    if (filler !== undefined)
      assert.deepEqual(row(a, IMAGE_TOKEN_OFFSET + filler), row(b, IMAGE_TOKEN_OFFSET + filler));
  }
});
