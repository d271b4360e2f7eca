/**
 * The exact thumbnail encoder (shapes/exact-encoder.ts): VQModel weights that
 * make the ordinary encoder graph output each cell's thumbnail, so every cell
 * gets the codebook row of its own thumbnail; and the VQ trainer keeps such a
 * given encoder frozen while the decoder trains.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { VqModel } from '../src/models/vq-model.js';
import { SafetensorsFile, readTensorFloat32 } from '../src/checkpoint/safetensors.js';
import { parseVqConfig, VQ_WEIGHTS_FILE } from '../src/checkpoint/vq-config.js';
import { buildVqTrainGraph } from '../src/graph/vq-train.js';
import { exactThumbnailEncoder } from '../src/shapes/exact-encoder.js';
import { cellThumbnail, thumbnailCodebook } from '../src/shapes/vq-dictionary.js';
import { SHAPES_VQ_CONFIG } from '../src/shapes/model.js';
import { vqEvalImages, vqTrainImage } from '../src/shapes/vq-data.js';
import { initVqParams, trainVq, writeVqFolder } from '../src/training/vq-trainer.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-exact-enc-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function specsOf(config: Record<string, unknown>) {
  const c = parseVqConfig(config, 'test config');
  return { c, specs: buildVqTrainGraph(c, { batch: 1, height: 32, width: 32, beta: 0.25 }).params };
}

test('exact encoder: the shapes VQ-VAE encoder outputs every cell thumbnail and picks its row', async () => {
  const { c, specs } = specsOf({ ...SHAPES_VQ_CONFIG });
  const enc = exactThumbnailEncoder(c, 4);
  const train = Array.from({ length: 40 }, (_, i) => vqTrainImage(5, 0.1, i));
  const tc = thumbnailCodebook(train, { K: c.numVqEmbeddings, T: 4, cell: c.scaleFactor });
  // Random decoder weights; the encoder's and the codebook replaced.
  const params = initVqParams(specs, c, 3);
  let off = 0;
  for (const s of specs) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    if (s.name === 'quantize.embedding.weight') params.set(tc.codebook, off);
    else if (enc.has(s.name)) params.set(enc.get(s.name)!.data, off);
    off += n;
  }
  const dir = path.join(tmp, 'exact');
  writeVqFolder(dir, { ...SHAPES_VQ_CONFIG }, specs, params);

  const vq = await VqModel.load(dir, { threads: 2 });
  try {
    const D = 48;
    const th = new Float32Array(D);
    let worst = 0;
    for (const img of train.slice(0, 8)) {
      const px = new Float32Array(3 * 128 * 128);
      for (let ch = 0; ch < 3; ch++)
        for (let i = 0; i < 128 * 128; i++) px[ch * 16384 + i] = img.data[i * 3 + ch]! / 255;
      const r = await vq.encodeFloat(px, 128, 128);
      for (let row = 0; row < 8; row++)
        for (let col = 0; col < 8; col++) {
          cellThumbnail(img, 16, 4, row, col, th);
          for (let j = 0; j < D; j++) {
            const got = r.latents[(j * 8 + row) * 8 + col]!; // [1, D, h, w]
            worst = Math.max(worst, Math.abs(got - th[j]!));
          }
          // The pictures' own thumbnails are rows of the codebook: the code is that row.
          const code = r.codes[row * 8 + col]!;
          const rowVals = tc.codebook.subarray(code * D, code * D + D);
          assert.ok(
            rowVals.every((v, j) => Math.abs(v - th[j]!) < 1e-6),
            `cell (${row}, ${col}): code ${code} is not the cell's thumbnail`,
          );
        }
    }
    assert.ok(worst < 1e-4, `largest latent error ${worst}`);
  } finally {
    await vq.dispose();
  }
});

test('exact encoder: configs it cannot express are refused with the reason', () => {
  const base = {
    _class_name: 'VQModel',
    block_out_channels: [8, 16, 16],
    down_block_types: Array(3).fill('DownEncoderBlock2D'),
    up_block_types: Array(3).fill('UpDecoderBlock2D'),
    layers_per_block: 1,
    latent_channels: 12,
    num_vq_embeddings: 32,
    norm_num_groups: 1,
    mid_block_add_attention: false,
  };
  const ok = specsOf(base).c;
  assert.equal(exactThumbnailEncoder(ok, 2).get('quant_conv.weight')!.shape.join('x'), '12x12x1x1');
  assert.throws(() => exactThumbnailEncoder(ok, 3), /does not divide/);
  assert.throws(() => exactThumbnailEncoder(ok, 1), /vq_embed_dim 3/);
  // Four groups of four channels: the 12 thumbnail values fill three of them.
  assert.throws(
    () => exactThumbnailEncoder(specsOf({ ...base, norm_num_groups: 4 }).c, 2),
    /norm group 0 .* no free channel/,
  );
});

test('trainer with a given encoder: it stays frozen, the decoder trains, no regression term', async () => {
  const config = {
    _class_name: 'VQModel',
    block_out_channels: [8, 16, 16],
    down_block_types: Array(3).fill('DownEncoderBlock2D'),
    up_block_types: Array(3).fill('UpDecoderBlock2D'),
    layers_per_block: 1,
    latent_channels: 12,
    num_vq_embeddings: 32,
    norm_num_groups: 1,
    mid_block_add_attention: false,
  };
  const c = parseVqConfig(config, 'test config');
  const crop = (img: { data: Uint8Array; width: number }) => {
    const data = new Uint8Array(32 * 32 * 3);
    for (let y = 0; y < 32; y++)
      data.set(img.data.subarray(y * 4 * img.width * 3, (y * 4 * img.width + 32) * 3), y * 96);
    return { data, width: 32, height: 32, channels: 3 as const };
  };
  const image = (i: number) => crop(vqTrainImage(1, 0.1, i));
  const tc = thumbnailCodebook(
    Array.from({ length: 50 }, (_, i) => image(i)),
    { K: 32, T: 2, cell: 4 },
  );
  const encoder = exactThumbnailEncoder(c, 2);
  const events: { event: string; [k: string]: unknown }[] = [];
  const out = path.join(tmp, 'given-enc');
  await trainVq({
    config,
    out,
    state: path.join(tmp, 'given-enc-state'),
    thumbnails: { codebook: tc.codebook, T: 2, encoder },
    batchSize: 2,
    lr: 3e-3,
    seed: 1,
    threads: 2,
    steps: 6,
    resume: false,
    image,
    evalImages: vqEvalImages(1, 0.1, 2).map(crop),
    warmupSteps: 1,
    logEverySteps: 1,
    log: (e: { event: string }) => events.push(e),
  });
  const steps = events.filter((e) => e.event === 'step');
  assert.ok(
    steps.every((e) => (e['commit'] as number) < 1e-8),
    'the encoder hits the thumbnails',
  );
  const st = SafetensorsFile.open(path.join(out, VQ_WEIGHTS_FILE));
  for (const [name, w] of encoder)
    assert.deepEqual(readTensorFloat32(st.tensors.get(name)!), w.data, `${name} stayed as given`);
  // The decoder moved from where the trainer started it (initVqParams with the seed).
  const { specs } = specsOf(config);
  const start = initVqParams(specs, c, 1);
  let off = 0;
  for (const s of specs) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    if (s.name === 'decoder.conv_out.weight') {
      const now = readTensorFloat32(st.tensors.get(s.name)!);
      assert.ok(
        now.some((v, i) => v !== start[off + i]),
        'the decoder trained',
      );
    }
    off += n;
  }
});
