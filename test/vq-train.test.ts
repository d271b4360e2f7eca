/**
 * The VQ-VAE training graph (graph/vq-train.ts) computes the same network as
 * the inference graphs (graph/vq.ts) on the same weights: its code indices
 * equal the encoder's, its reconstruction of those codes equals the decoder's;
 * and the trainer's output folder loads unchanged through VqModel.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { VqModel } from '../src/models/vq-model.js';
import { SafetensorsFile, readTensorFloat32 } from '../src/checkpoint/safetensors.js';
import { loadVqConfig, VQ_WEIGHTS_FILE } from '../src/checkpoint/vq-config.js';
import { buildVqTrainGraph, VQ_TRAIN_IO } from '../src/graph/vq-train.js';
import { writeRandomVq } from '../src/tools/random-vq.js';
import { cellThumbnail, FILLER, thumbnailCodebook } from '../src/shapes/vq-dictionary.js';
import {
  emaCodebookStep,
  initVqParams,
  softNormScales,
  trainVq,
  VQ_STATE_FILE,
} from '../src/training/vq-trainer.js';
import { vqEvalImages, vqTrainImage } from '../src/shapes/vq-data.js';
import { goldenCheckpointDir } from './helpers/golden.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-vq-train-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A 3-block VQ small enough to train a few steps in a test. */
const SMALL_CONFIG = {
  _class_name: 'VQModel',
  block_out_channels: [8, 8, 16],
  down_block_types: Array(3).fill('DownEncoderBlock2D'),
  up_block_types: Array(3).fill('UpDecoderBlock2D'),
  layers_per_block: 1,
  latent_channels: 4,
  num_vq_embeddings: 32,
  norm_num_groups: 4,
  mid_block_add_attention: false,
};

/** 128x128 shapes pictures downsampled 4x would need the processor: tests train on 32x32 crops. */
function crop32(img: { data: Uint8Array; width: number }) {
  const data = new Uint8Array(32 * 32 * 3);
  for (let y = 0; y < 32; y++)
    data.set(img.data.subarray(y * 4 * img.width * 3, (y * 4 * img.width + 32) * 3), y * 96);
  return { data, width: 32, height: 32, channels: 3 as const };
}

function pictures(n: number, size: number, seed: number): Float32Array {
  // Smooth colour fields plus a few hard edges: values spread over [0, 1].
  const out = new Float32Array(n * 3 * size * size);
  let s = seed;
  const r = (): number => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32;
  for (let i = 0; i < out.length; i++) {
    const x = i % size;
    const y = Math.floor(i / size) % size;
    out[i] = Math.min(
      1,
      Math.max(
        0,
        0.5 +
          0.4 * Math.sin((x + 3 * y) / 5 + i / (size * size)) +
          (x > size / 2 ? 0.1 : -0.1) +
          0.05 * r(),
      ),
    );
  }
  return out;
}

async function checkParity(vqDir: string, batch: number, size: number): Promise<void> {
  const c = loadVqConfig(vqDir);
  const { bytes, params } = buildVqTrainGraph(c, { batch, height: size, width: size, beta: 0.25 });
  const st = SafetensorsFile.open(path.join(vqDir, VQ_WEIGHTS_FILE));
  const feeds: Record<string, ort.Tensor> = {};
  for (const p of params)
    feeds[p.name] = new ort.Tensor('float32', readTensorFloat32(st.tensors.get(p.name)!), p.shape);
  const px = pictures(batch, size, 7);
  feeds[VQ_TRAIN_IO.pixels] = new ort.Tensor('float32', px, [batch, 3, size, size]);
  feeds[VQ_TRAIN_IO.quantGate] = new ort.Tensor('float32', Float32Array.of(1), []);
  const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 2 });
  const out = await session.run(feeds);
  // Gate 0 (autoencoder warm-up): the same codes are picked, the decoder sees z
  // itself, and the commitment term leaves the loss.
  const ae = await session.run({
    ...feeds,
    [VQ_TRAIN_IO.quantGate]: new ort.Tensor('float32', Float32Array.of(0), []),
  });
  await session.release();
  const num = (o: typeof out, k: string): number => (o[k]!.data as Float32Array)[0]!;
  assert.deepEqual(ae[VQ_TRAIN_IO.indices]!.data, out[VQ_TRAIN_IO.indices]!.data);
  const near = (a: number, b: number) => Math.abs(a - b) <= 1e-5 * Math.max(1, Math.abs(b));
  assert.ok(
    near(
      num(out, VQ_TRAIN_IO.loss),
      num(out, VQ_TRAIN_IO.mse) +
        num(out, VQ_TRAIN_IO.codebook) +
        0.25 * num(out, VQ_TRAIN_IO.commit),
    ),
  );
  assert.ok(
    near(num(ae, VQ_TRAIN_IO.loss), num(ae, VQ_TRAIN_IO.mse) + num(ae, VQ_TRAIN_IO.codebook)),
  );
  assert.notEqual(num(ae, VQ_TRAIN_IO.mse), num(out, VQ_TRAIN_IO.mse));
  const idx = Array.from(out[VQ_TRAIN_IO.indices]!.data as BigInt64Array, Number);
  const recon = out[VQ_TRAIN_IO.recon]!.data as Float32Array;
  for (const k of [VQ_TRAIN_IO.loss, VQ_TRAIN_IO.mse, VQ_TRAIN_IO.codebook, VQ_TRAIN_IO.commit])
    assert.ok(Number.isFinite((out[k]!.data as Float32Array)[0]!), `${k} is finite`);

  const vq = await VqModel.load(vqDir, { threads: 2 });
  const per = 3 * size * size;
  const cells = (size / c.scaleFactor) ** 2;
  let inside = 0;
  let maxErr = 0;
  for (let b = 0; b < batch; b++) {
    const enc = await vq.encodeFloat(px.slice(b * per, (b + 1) * per), size, size);
    assert.deepEqual(
      idx.slice(b * cells, (b + 1) * cells),
      Array.from(enc.codes),
      `image ${b}: training-graph codes = encoder codes`,
    );
    const dec = await vq.decodeFloat(enc.codes, enc.gridH, enc.gridW);
    for (let i = 0; i < per; i++) {
      const r = recon[b * per + i]!;
      if (r > 0 && r < 1) inside++;
      maxErr = Math.max(maxErr, Math.abs(Math.min(1, Math.max(0, r)) - dec.pixels[i]!));
    }
  }
  await vq.dispose();
  assert.ok(maxErr <= 1e-5, `reconstruction differs from the decoder by ${maxErr}`);
  // The clip must not hide the comparison: most values lie strictly inside (0, 1).
  assert.ok(inside > 0.2 * batch * per, `only ${inside} of ${batch * per} values inside (0, 1)`);
}

test('training graph = inference graphs on the golden VQ-VAE (batch of 2)', async () => {
  await checkParity(path.join(goldenCheckpointDir(), 'vqvae'), 2, 32);
});

test('training graph = inference graphs on another config (mid-block attention, 1 layer per block)', async () => {
  const dir = path.join(tmp, 'attn');
  writeRandomVq(dir, 'tiny', {
    seed: 5,
    overrides: {
      mid_block_add_attention: true,
      layers_per_block: 1,
      block_out_channels: [8, 8, 16],
      down_block_types: Array(3).fill('DownEncoderBlock2D'),
      up_block_types: Array(3).fill('UpDecoderBlock2D'),
      num_vq_embeddings: 64,
      latent_channels: 4,
    },
  });
  await checkParity(dir, 3, 16);
});

test('trainer: a few steps lower the loss, save a resumable state and write a folder VqModel loads', async () => {
  const config = SMALL_CONFIG;
  const events: { event: string; [k: string]: unknown }[] = [];
  const base = {
    config,
    out: path.join(tmp, 'trained'),
    state: path.join(tmp, 'state'),
    batchSize: 2,
    lr: 3e-3,
    seed: 1,
    threads: 2,
    image: (i: number) => crop32(vqTrainImage(1, 0.1, i)),
    evalImages: vqEvalImages(1, 0.1, 2).map(crop32),
    warmupSteps: 1,
    logEverySteps: 1,
    log: (e: { event: string }) => events.push(e),
  };
  const r1 = await trainVq({ ...base, steps: 12, resume: false });
  assert.equal(r1.steps, 12);
  assert.ok(fs.existsSync(path.join(tmp, 'state', VQ_STATE_FILE)));
  const steps = events.filter((e) => e.event === 'step') as unknown as { loss: number }[];
  assert.ok(steps[steps.length - 1]!.loss < steps[0]!.loss, 'loss falls');
  assert.ok(events.some((e) => e.event === 'reseed'));
  // Without --resume an existing state is refused; with it, training continues from step 12.
  await assert.rejects(trainVq({ ...base, steps: 14, resume: false }), /--resume/);
  events.length = 0;
  const r2 = await trainVq({ ...base, steps: 14, resume: true });
  assert.equal(r2.steps, 14);
  assert.equal((events[0] as unknown as { step: number }).step, 12);
  const vq = await VqModel.load(r2.out, { threads: 2 });
  const codes = await vq.encode(base.evalImages[0]!);
  assert.equal(codes.codes.length, 64);
  await vq.dispose();
  assert.ok(Number.isFinite(r2.psnr) && r2.psnr > 0);
});

test('trainer --decoder-only: encoder, quant_conv and codebook stay bit-identical, the decoder moves', async () => {
  const src = path.join(tmp, 'dec-src');
  writeRandomVq(src, 'tiny', {
    seed: 2,
    overrides: {
      layers_per_block: 1,
      block_out_channels: [8, 8, 16],
      down_block_types: Array(3).fill('DownEncoderBlock2D'),
      up_block_types: Array(3).fill('UpDecoderBlock2D'),
      num_vq_embeddings: 16,
      latent_channels: 4,
    },
  });
  const out = path.join(tmp, 'dec-out');
  const events: { event: string }[] = [];
  await trainVq({
    config: loadVqConfig(src).raw,
    init: src,
    decoderOnly: true,
    aeWarmupSteps: 100, // ignored: a decoder-only run decodes codes from its first step
    codebookEma: 0.9, // ignored: the codebook stays
    out,
    state: path.join(tmp, 'dec-state'),
    steps: 3,
    batchSize: 2,
    lr: 1e-2,
    seed: 0,
    threads: 2,
    resume: false,
    image: (i) => crop32(vqTrainImage(2, 0.1, i)),
    evalImages: vqEvalImages(2, 0.1, 1).map(crop32),
    warmupSteps: 1,
    log: (e) => events.push(e),
  });
  assert.ok(!events.some((e) => e.event === 'reseed'), 'no code is re-seeded');
  const saved = SafetensorsFile.open(path.join(tmp, 'dec-state', VQ_STATE_FILE)).metadata!;
  const meta = JSON.parse(saved['dimoo_vq_train']!) as Record<string, unknown>;
  assert.equal(meta['aeWarmupSteps'], 0);
  assert.equal(meta['codebookEma'], 0);
  const a = SafetensorsFile.open(path.join(src, VQ_WEIGHTS_FILE));
  const b = SafetensorsFile.open(path.join(out, VQ_WEIGHTS_FILE));
  let moved = 0;
  for (const [name, t] of a.tensors) {
    const x = readTensorFloat32(t);
    const y = readTensorFloat32(b.tensors.get(name)!);
    const same = x.every((v, i) => v === y[i]);
    if (name.startsWith('decoder.') || name.startsWith('post_quant_conv.')) moved += same ? 0 : 1;
    else assert.ok(same, `${name} is frozen`);
  }
  assert.ok(moved > 10, `decoder weights moved (${moved})`);
});

test('EMA codebook: an assigned code moves to the decayed mean of its outputs, the others stay', () => {
  const K = 3;
  const D = 2;
  const cbOff = 1; // one weight before the codebook in the flat vector
  const s = {
    params: Float32Array.of(7, 0, 0, 5, 5, 9, 9),
    emaCount: new Float32Array(K),
    emaSum: new Float32Array(K * D),
  };
  // Step 1: rows (1, 2) and (3, 4) go to code 0; code 1 gets (10, 10); code 2 nothing.
  emaCodebookStep(
    s,
    BigInt64Array.of(0n, 0n, 1n),
    Float32Array.of(1, 2, 3, 4, 10, 10),
    0.9,
    cbOff,
    K,
    D,
  );
  assert.deepEqual([...s.params], [7, 2, 3, 10, 10, 9, 9]);
  // Step 2: code 0 gets (5, 6): (0.9 * 0.1 * (4, 6) + 0.1 * (5, 6)) / (0.9 * 0.2 + 0.1).
  emaCodebookStep(s, BigInt64Array.of(0n), Float32Array.of(5, 6), 0.9, cbOff, K, D);
  const want = [(0.09 * 4 + 0.5) / 0.28, (0.09 * 6 + 0.6) / 0.28];
  assert.ok(Math.abs(s.params[1]! - want[0]!) < 1e-5 && Math.abs(s.params[2]! - want[1]!) < 1e-5);
  assert.ok(Math.abs(s.params[3]! - 10) < 1e-5, 'code 1 keeps its mean while its weight decays');
  assert.deepEqual([...s.params.slice(5)], [9, 9], 'a never-assigned code stays');
});

test('trainer with an EMA codebook: trains, saves the averages and resumes', async () => {
  const config = SMALL_CONFIG;
  const events: { event: string; [k: string]: unknown }[] = [];
  const base = {
    config,
    out: path.join(tmp, 'ema-trained'),
    state: path.join(tmp, 'ema-state'),
    batchSize: 2,
    lr: 3e-3,
    seed: 1,
    threads: 2,
    codebookEma: 0.9,
    image: (i: number) => crop32(vqTrainImage(1, 0.1, i)),
    evalImages: vqEvalImages(1, 0.1, 2).map(crop32),
    warmupSteps: 1,
    logEverySteps: 1,
    log: (e: { event: string }) => events.push(e),
  };
  await trainVq({ ...base, steps: 12, resume: false });
  const steps = events.filter((e) => e.event === 'step') as unknown as { loss: number }[];
  assert.ok(steps[steps.length - 1]!.loss < steps[0]!.loss, 'loss falls');
  const st = SafetensorsFile.open(path.join(tmp, 'ema-state', VQ_STATE_FILE));
  const count = readTensorFloat32(st.tensors.get('ema_count')!);
  assert.equal(count.length, 32);
  assert.ok(
    count.some((v) => v > 0),
    'assignment counts are kept in the state',
  );
  // Every code with a count sits at its EMA mean (sum / count).
  const sum = readTensorFloat32(st.tensors.get('ema_sum')!);
  const params = readTensorFloat32(st.tensors.get('params')!);
  const specs = specsOf(config);
  let off = 0;
  for (const p of specs) {
    if (p.name === 'quantize.embedding.weight') break;
    off += p.shape.reduce((a, b) => a * b, 1);
  }
  for (let k = 0; k < 32; k++) {
    if (!(count[k]! > 1e-12)) continue;
    for (let d = 0; d < 4; d++)
      assert.ok(Math.abs(params[off + k * 4 + d]! - sum[k * 4 + d]! / count[k]!) < 1e-4);
  }
  const r2 = await trainVq({ ...base, steps: 14, resume: true });
  assert.equal(r2.steps, 14);
});

test('soft norm: what feeds a GroupNorm trains at the scale, the gains at sqrt(eps)/scale; the saved weights are the plain ones', async () => {
  const config = { ...SMALL_CONFIG, mid_block_add_attention: true };
  const specs = specsOf(config);
  const scale = 1e-4;
  const sc = softNormScales(specs, scale);
  const at = new Map<string, number>();
  let off = 0;
  for (const p of specs) {
    at.set(p.name, sc[off]!);
    off += p.shape.reduce((a, b) => a * b, 1);
  }
  const expect = (name: string, v: number) =>
    assert.ok(Math.abs(at.get(name)! - v) <= 1e-6 * v, `${name}: ${at.get(name)} != ${v}`);
  for (const n of [
    'encoder.conv_in.weight',
    'decoder.conv_in.bias',
    'encoder.down_blocks.1.resnets.0.conv1.weight',
    'decoder.up_blocks.0.resnets.1.conv2.bias',
    'decoder.mid_block.attentions.0.to_out.0.weight',
    'encoder.down_blocks.0.downsamplers.0.conv.bias',
    'decoder.up_blocks.0.upsamplers.0.conv.bias',
    'encoder.down_blocks.2.resnets.0.conv_shortcut.bias',
  ])
    expect(n, scale);
  for (const n of [
    'encoder.down_blocks.0.resnets.0.norm1.weight',
    'decoder.conv_norm_out.weight',
    'encoder.mid_block.attentions.0.group_norm.weight',
  ])
    expect(n, Math.sqrt(1e-6) / scale);
  for (const n of [
    'encoder.down_blocks.0.resnets.0.norm1.bias',
    'encoder.down_blocks.0.downsamplers.0.conv.weight',
    'encoder.down_blocks.2.resnets.0.conv_shortcut.weight',
    'encoder.conv_out.weight',
    'quant_conv.weight',
    'post_quant_conv.bias',
    'decoder.conv_out.weight',
    'quantize.embedding.weight',
  ])
    expect(n, 1);
  assert.throws(() => softNormScales(specs, 0), /soft-norm scale/);

  const events: { event: string; [k: string]: unknown }[] = [];
  const out = path.join(tmp, 'soft-trained');
  const lr = 3e-3;
  const steps = 8;
  const r = await trainVq({
    config: SMALL_CONFIG,
    out,
    state: path.join(tmp, 'soft-state'),
    batchSize: 2,
    lr,
    seed: 1,
    threads: 2,
    softNorm: scale,
    steps,
    resume: false,
    image: (i: number) => crop32(vqTrainImage(1, 0.1, i)),
    evalImages: vqEvalImages(1, 0.1, 2).map(crop32),
    warmupSteps: 1,
    logEverySteps: 1,
    log: (e: { event: string }) => events.push(e),
  });
  const losses = events.filter((e) => e.event === 'step').map((e) => e['loss'] as number);
  assert.ok(losses[losses.length - 1]! < losses[0]!, 'loss falls');
  assert.ok(Number.isFinite(r.psnr) && r.psnr > 0);
  // The folder holds weight = scale * v (AdamW moves v by <= ~lr a step), not v.
  const st = SafetensorsFile.open(path.join(out, VQ_WEIGHTS_FILE));
  const maxAbs = (n: string) => Math.max(...readTensorFloat32(st.tensors.get(n)!).map(Math.abs));
  const bound = 1 / Math.sqrt(27) + 2 * steps * lr;
  const convIn = maxAbs('encoder.conv_in.weight');
  assert.ok(convIn > 0.5 * scale * (1 / Math.sqrt(27)) && convIn < scale * bound, `${convIn}`);
  const gain = maxAbs('decoder.conv_norm_out.weight');
  assert.ok(Math.abs(gain / (Math.sqrt(1e-6) / scale) - 1) < 2 * steps * lr, `gain ${gain}`);
  assert.ok(maxAbs('decoder.conv_out.weight') > 0.05, 'unscaled weights keep their size');
});

test('thumbnail codebook: most frequent cells first, fillers after; the training graph regresses the same thumbnails', async () => {
  // Two 8x8 pictures of 4x4 cells: three distinct cells, one of them most frequent.
  const pic = (f: (x: number, y: number) => number[]) => {
    const data = new Uint8Array(8 * 8 * 3);
    for (let y = 0; y < 8; y++) for (let x = 0; x < 8; x++) data.set(f(x, y), (y * 8 + x) * 3);
    return { data, width: 8, height: 8, channels: 3 as const };
  };
  const a = pic((x, y) => (x >= 4 && y < 4 ? [255, 0, 0] : [0, 0, 0]));
  const b = pic((x) => (x < 2 ? [255, 255, 255] : [0, 0, 0]));
  const tc = thumbnailCodebook([a, b], { K: 4, T: 2, cell: 4 });
  assert.equal(tc.distinct, 3);
  assert.equal(tc.used, 3);
  assert.deepEqual(
    Array.from(tc.codebook.subarray(0, 12)),
    Array(12).fill(0),
    'black: 5 of 8 cells',
  );
  // Half-white cell (2 of 8): the left block column is white in every channel.
  assert.deepEqual(Array.from(tc.codebook.subarray(12, 24)), [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0]);
  // Red cell (1 of 8): the R channel's four block means are 1, G and B 0.
  assert.deepEqual(Array.from(tc.codebook.subarray(24, 36)), [1, 1, 1, 1, ...Array(8).fill(0)]);
  assert.ok(tc.codebook.subarray(36).every((v) => v === FILLER));
  const capped = thumbnailCodebook([a, b], { K: 2, T: 2, cell: 4 });
  assert.equal(capped.used, 2);
  assert.equal(capped.distinct, 3);
  assert.throws(() => thumbnailCodebook([a], { K: 4, T: 3, cell: 4 }), /does not divide/);

  // The graph's target is cellThumbnail's: its commitment term is mean((z - thumbnail)^2).
  const config = { ...SMALL_CONFIG, latent_channels: 12 };
  const c = loadVqConfig(writeConfig(config));
  const { bytes, params } = buildVqTrainGraph(c, {
    batch: 2,
    height: 32,
    width: 32,
    beta: 0.25,
    thumbnail: 2,
  });
  assert.throws(
    () => buildVqTrainGraph(c, { batch: 1, height: 32, width: 32, beta: 0.25, thumbnail: 1 }),
    /vq_embed_dim 3/,
  );
  const imgs = [0, 1].map((i) => crop32(vqTrainImage(3, 0.1, i)));
  const w = initVqParams(params, c, 4);
  const feeds: Record<string, ort.Tensor> = {};
  let off = 0;
  for (const p of params) {
    const n = p.shape.reduce((x, y) => x * y, 1);
    feeds[p.name] = new ort.Tensor('float32', w.slice(off, off + n), p.shape);
    off += n;
  }
  const px = new Float32Array(2 * 3 * 32 * 32);
  imgs.forEach((im, k) => {
    for (let ch = 0; ch < 3; ch++)
      for (let i = 0; i < 1024; i++) px[k * 3072 + ch * 1024 + i] = im.data[i * 3 + ch]! / 255;
  });
  feeds[VQ_TRAIN_IO.pixels] = new ort.Tensor('float32', px, [2, 3, 32, 32]);
  feeds[VQ_TRAIN_IO.quantGate] = new ort.Tensor('float32', Float32Array.of(1), []);
  const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 2 });
  const out = await session.run(feeds);
  await session.release();
  const lat = out[VQ_TRAIN_IO.latents]!.data as Float32Array;
  const th = new Float32Array(12);
  let sq = 0;
  for (let k = 0; k < 2; k++)
    for (let r = 0; r < 8; r++)
      for (let col = 0; col < 8; col++) {
        cellThumbnail(imgs[k]!, 4, 2, r, col, th);
        for (let j = 0; j < 12; j++) sq += (lat[((k * 8 + r) * 8 + col) * 12 + j]! - th[j]!) ** 2;
      }
  const commit = (out[VQ_TRAIN_IO.commit]!.data as Float32Array)[0]!;
  assert.ok(Math.abs(commit - sq / (128 * 12)) < 1e-5 * Math.max(1, commit), `${commit}`);
  assert.equal((out[VQ_TRAIN_IO.codebook]!.data as Float32Array)[0], 0);
});

test('trainer with a thumbnail codebook: the codebook never moves, no code is re-seeded, the loss falls', async () => {
  const config = { ...SMALL_CONFIG, latent_channels: 12 };
  const image = (i: number) => crop32(vqTrainImage(1, 0.1, i));
  const pics = Array.from({ length: 50 }, (_, i) => image(i));
  const tc = thumbnailCodebook(pics, { K: 32, T: 2, cell: 4 });
  const events: { event: string; [k: string]: unknown }[] = [];
  const out = path.join(tmp, 'thumb-trained');
  await trainVq({
    config,
    out,
    state: path.join(tmp, 'thumb-state'),
    thumbnails: { codebook: tc.codebook, T: 2 },
    codebookEma: 0.9, // ignored: the codebook is fixed
    aeWarmupSteps: 5, // ignored
    batchSize: 2,
    lr: 3e-3,
    seed: 1,
    threads: 2,
    steps: 10,
    resume: false,
    image,
    evalImages: vqEvalImages(1, 0.1, 2).map(crop32),
    warmupSteps: 1,
    logEverySteps: 1,
    log: (e: { event: string }) => events.push(e),
  });
  assert.ok(!events.some((e) => e.event === 'reseed'));
  const losses = events.filter((e) => e.event === 'step').map((e) => e['loss'] as number);
  assert.ok(losses[losses.length - 1]! < losses[0]!, 'loss falls');
  const st = SafetensorsFile.open(path.join(out, VQ_WEIGHTS_FILE));
  const cb = readTensorFloat32(st.tensors.get('quantize.embedding.weight')!);
  assert.deepEqual(Array.from(cb), Array.from(tc.codebook));
  await assert.rejects(
    trainVq({
      config,
      out: path.join(tmp, 'thumb-bad'),
      state: path.join(tmp, 'thumb-bad-state'),
      thumbnails: { codebook: new Float32Array(7), T: 2 },
      batchSize: 1,
      lr: 1e-3,
      seed: 1,
      steps: 1,
      resume: false,
      image,
      evalImages: [image(0)],
    }),
    /thumbnail codebook has 7 values, the config needs 32 x 12/,
  );
});

/** The weights (in the trainer's order) of a VQ config. */
function specsOf(config: Record<string, unknown>) {
  return buildVqTrainGraph(loadVqConfig(writeConfig(config)), {
    batch: 1,
    height: 32,
    width: 32,
    beta: 0.25,
  }).params;
}

function writeConfig(config: Record<string, unknown>): string {
  const dir = fs.mkdtempSync(path.join(tmp, 'cfg-'));
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  return dir;
}
