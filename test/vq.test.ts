import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ImageProcessor } from '../src/image/processor.js';
import { VqModel } from '../src/models/vq-model.js';
import { SafetensorsFile } from '../src/checkpoint/safetensors.js';
import { readImage, writeImage } from '../src/image/io.js';
import { goldenCase, goldenCheckpointDir, goldenDir, readGoldenJson } from './helpers/golden.js';

const VQ_DIR = path.join(goldenCheckpointDir(), 'vqvae');
const IMAGE_OFFSET = 126356;

interface VqJson {
  images: Record<
    string,
    { width: number; height: number; grid_h: number; grid_w: number; indices: number[] }
  >;
}

let model: VqModel | undefined;
async function vq(): Promise<VqModel> {
  model ??= await VqModel.load(VQ_DIR, { threads: 2 });
  return model;
}
after(async () => {
  await model?.dispose();
});

function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/**
 * uint8 equality, except +-1 where the float sits within `tol` (in [0,1] units) of a
 * rounding boundary (x*255 = k + 0.5): there either side is a faithful result.
 */
function assertU8(
  got: Uint8Array,
  want: Uint8Array,
  chw: Float32Array,
  width: number,
  height: number,
  tol: number,
  what: string,
): number {
  const n = width * height;
  let boundary = 0;
  for (let i = 0; i < got.length; i++) {
    if (got[i] === want[i]) continue;
    const p = Math.floor(i / 3);
    const v = chw[(i % 3) * n + p]! * 255;
    const nearHalf = Math.abs(v - Math.floor(v) - 0.5) <= tol * 255;
    assert.ok(
      Math.abs(got[i]! - want[i]!) === 1 && nearHalf,
      `${what}: byte ${i} is ${got[i]}, want ${want[i]} (x255 = ${v})`,
    );
    boundary++;
  }
  return boundary;
}

test('golden VQ cases: preprocessing, latents, distances, indices, decoded pixels', async () => {
  const m = await vq();
  const meta = readGoldenJson<VqJson>('vq.json');
  const st = SafetensorsFile.open(goldenCase('vq.safetensors'));
  const K = m.codebookSize;
  const names = Object.keys(meta.images);
  assert.equal(names.length, 3);
  for (const name of names) {
    const info = meta.images[name]!;
    const rgb = {
      data: st.readTyped(`${name}.image_uint8`) as Uint8Array,
      width: info.width,
      height: info.height,
    };
    const pre = m.preprocess(rgb);
    assert.ok(
      maxAbs(pre.pixels, st.readFloat32(`${name}.preprocessed`)) <= 1e-6,
      `${name} preprocessed`,
    );

    const enc = await m.encodeFloat(pre.pixels, pre.width, pre.height, { distances: true });
    assert.deepEqual([enc.gridH, enc.gridW], [info.grid_h, info.grid_w]);
    const latErr = maxAbs(enc.latents, st.readFloat32(`${name}.latents`));
    assert.ok(latErr <= 1e-4, `${name} latents max diff ${latErr}`);
    const indices = st.readIntegers(`${name}.indices`);
    assert.deepEqual(Array.from(enc.codes), indices, `${name} indices`);
    assert.deepEqual(indices, info.indices);

    // Nearest and second-nearest distance per cell from our full distance matrix.
    const two: number[] = [];
    for (let i = 0; i < enc.codes.length; i++) {
      let a = Infinity;
      let b = Infinity;
      for (let k = 0; k < K; k++) {
        const d = enc.distances![i * K + k]!;
        if (d < a) [a, b] = [d, a];
        else if (d < b) b = d;
      }
      assert.equal(enc.distances![i * K + enc.codes[i]!], a, `${name} argmin of cell ${i}`);
      two.push(a, b);
    }
    const distErr = maxAbs(two, st.readFloat32(`${name}.nearest_two_dist`));
    assert.ok(distErr <= 1e-4, `${name} nearest_two_dist max diff ${distErr}`);

    // Public API: same codes.
    const grid = await m.encode(rgb);
    assert.deepEqual(Array.from(grid.codes), indices);

    const dec = await m.decodeFloat(indices, info.grid_h, info.grid_w);
    const goldFloat = st.readFloat32(`${name}.decoded_float`);
    const decErr = maxAbs(dec.pixels, goldFloat);
    assert.ok(decErr <= 1e-4, `${name} decoded_float max diff ${decErr}`);
    const u8 = await m.decode(indices, info.grid_h, info.grid_w);
    assert.deepEqual([u8.width, u8.height], [info.width, info.height]);
    assertU8(
      u8.data,
      st.readTyped(`${name}.decoded_uint8`) as Uint8Array,
      goldFloat,
      info.width,
      info.height,
      1e-4,
      name,
    );
  }
});

test('golden generation cases: decoded_image_uint8 from their vq_tokens', async () => {
  const m = await vq();
  const dir = path.join(goldenDir(), 'cases', 'dimoo-tiny');
  let checked = 0;
  for (const f of fs
    .readdirSync(dir)
    .filter((x) => x.endsWith('.json'))
    .sort()) {
    const j = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as {
      tensors?: Record<string, unknown>;
      vq_tokens?: number[];
      grid_h?: number;
      grid_w?: number;
      tensors_file?: string;
    };
    if (!j.tensors?.decoded_image_uint8 || !j.vq_tokens || !j.tensors_file) continue;
    const codes = j.vq_tokens.map((t) => t - IMAGE_OFFSET);
    const st = SafetensorsFile.open(path.join(dir, j.tensors_file));
    const want = st.readTyped('decoded_image_uint8') as Uint8Array;
    const dec = await m.decodeFloat(codes, j.grid_h!, j.grid_w!);
    const got = new ImageProcessor(16).toRgb8(dec.pixels, dec.width, dec.height);
    // No golden float here: a +-1 is accepted only where our own float is within 1e-4 of a boundary.
    assertU8(got, want, dec.pixels, dec.width, dec.height, 1e-4, f);
    checked++;
  }
  assert.ok(checked >= 7, `only ${checked} cases had decoded images`);
});

test('round trip encode -> decode -> encode on the golden tiny VQ', async () => {
  const m = await vq();
  const st = SafetensorsFile.open(goldenCase('vq.safetensors'));
  const info = readGoldenJson<VqJson>('vq.json').images.img1_checker_bars!;
  const rgb = {
    data: st.readTyped('img1_checker_bars.image_uint8') as Uint8Array,
    width: info.width,
    height: info.height,
  };
  const c1 = await m.encode(rgb);
  const d1 = await m.decode(c1.codes, c1.gridH, c1.gridW);
  assert.deepEqual([d1.width, d1.height], [rgb.width, rgb.height]);
  const c2 = await m.encode(d1);
  assert.deepEqual([c2.gridH, c2.gridW], [c1.gridH, c1.gridW]);
  // The tiny VQ has random weights: it is no auto-encoder, so c2 != c1 in general. What must
  // hold: every code is the codebook row nearest (float64 check) to its latent, and runs repeat exactly.
  const emb = SafetensorsFile.open(
    path.join(VQ_DIR, 'diffusion_pytorch_model.safetensors'),
  ).readFloat32('quantize.embedding.weight');
  const pre = m.preprocess(d1);
  const enc = await m.encodeFloat(pre.pixels, pre.width, pre.height);
  assert.deepEqual(enc.codes, c2.codes);
  const D = m.config.vqEmbedDim;
  const cells = enc.gridH * enc.gridW;
  for (let i = 0; i < cells; i++) {
    const z = Array.from({ length: D }, (_, d) => enc.latents[d * cells + i]!);
    const dist = (k: number): number => z.reduce((s, v, d) => s + (v - emb[k * D + d]!) ** 2, 0);
    const mine = dist(enc.codes[i]!);
    let best = Infinity;
    for (let k = 0; k < m.codebookSize; k++) best = Math.min(best, dist(k));
    assert.ok(mine - best <= 1e-5, `cell ${i}: code distance ${mine} vs best ${best}`);
  }
  const again = await m.decode(c2.codes, c2.gridH, c2.gridW);
  const c3 = await m.encode(again);
  assert.deepEqual(await m.encode(again), c3);
});

test('image sizes not divisible by 16 are resized like VaeImageProcessor (Lanczos down to a multiple)', async () => {
  const m = await vq();
  const w = 53;
  const h = 40;
  const data = new Uint8Array(w * h * 3).map((_, i) => (i * 31) % 256);
  const pre = m.preprocess({ data, width: w, height: h });
  assert.deepEqual([pre.width, pre.height], [48, 32]);
  const g = await m.encode({ data, width: w, height: h });
  assert.deepEqual([g.gridW, g.gridH], [3, 2]);
  assert.throws(
    () => m.preprocess({ data: new Uint8Array(15 * 40 * 3), width: 15, height: 40 }),
    /at least 16x16/,
  );
});

test('end to end: PNG file -> readImage -> encode gives the golden indices; decode -> writeImage', async () => {
  const m = await vq();
  const st = SafetensorsFile.open(goldenCase('vq.safetensors'));
  const info = readGoldenJson<VqJson>('vq.json').images.img2_blobs!;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-vq-e2e-'));
  try {
    const src = {
      data: st.readTyped('img2_blobs.image_uint8') as Uint8Array,
      width: info.width,
      height: info.height,
      channels: 3,
    };
    await writeImage(path.join(dir, 'in.png'), src);
    const img = await readImage(path.join(dir, 'in.png'));
    const grid = await m.encode(img);
    assert.deepEqual(Array.from(grid.codes), info.indices);
    const out = await m.decode(grid.codes, grid.gridH, grid.gridW);
    await writeImage(path.join(dir, 'out.png'), out);
    assert.deepEqual((await readImage(path.join(dir, 'out.png'))).data, out.data);
    await assert.rejects(
      m.encode({ ...img, channels: 4 }),
      /image to encode: expected 3 channels, got 4/,
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('bad codes are refused with the position named', async () => {
  const m = await vq();
  await assert.rejects(m.decode([1, 2, 3], 2, 2), /3 codes do not fill a 2x2 grid/);
  await assert.rejects(
    m.decode([1, 2, 8192, 0], 2, 2),
    /code 8192 at position 2 is outside the codebook/,
  );
  await assert.rejects(m.decode([1, -1, 0, 0], 2, 2), /code -1 at position 1/);
});

// ---------------------------------------------------------------- config / weights

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-vq-'));
after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));

function vqDirWithConfig(name: string, edit: (c: Record<string, unknown>) => void): string {
  const dir = path.join(tmpRoot, name);
  fs.mkdirSync(dir, { recursive: true });
  const cfg = JSON.parse(fs.readFileSync(path.join(VQ_DIR, 'config.json'), 'utf8')) as Record<
    string,
    unknown
  >;
  edit(cfg);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
  fs.symlinkSync(
    path.join(VQ_DIR, 'diffusion_pytorch_model.safetensors'),
    path.join(dir, 'diffusion_pytorch_model.safetensors'),
  );
  return dir;
}

test('config/weights mismatches and unsupported configs give clear errors', async () => {
  const cases: [string, (c: Record<string, unknown>) => void, RegExp][] = [
    [
      'layers',
      (c) => (c.layers_per_block = 3),
      /weights do not match vqvae\/config\.json.*missing "encoder\.down_blocks\.0\.resnets\.2\.norm1\.weight"/,
    ],
    ['fewer-layers', (c) => (c.layers_per_block = 1), /tensor\(s\) the config does not use/],
    [
      'latent',
      (c) => (c.latent_channels = 16),
      /"encoder\.conv_out\.weight" has shape \[8, 32, 3, 3\], config implies \[16, 32, 3, 3\]/,
    ],
    [
      'attention',
      (c) => (c.mid_block_add_attention = true),
      /missing "encoder\.mid_block\.attentions\.0\.group_norm\.weight"/,
    ],
    ['codes', (c) => (c.num_vq_embeddings = 4096), /quantize\.embedding\.weight/],
    [
      'block',
      (c) => ((c.down_block_types as string[])[2] = 'AttnDownEncoderBlock2D'),
      /config\.json: field "down_block_types" contains unsupported block type "AttnDownEncoderBlock2D"/,
    ],
    [
      'norm',
      (c) => (c.norm_type = 'spatial'),
      /field "norm_type" is "spatial"; only "group" is supported/,
    ],
    [
      'groups',
      (c) => (c.norm_num_groups = 3),
      /field "norm_num_groups" \(3\) must divide every block_out_channels entry/,
    ],
    ['act', (c) => (c.act_fn = 'gelu'), /field "act_fn" is "gelu"/],
    [
      'count',
      (c) => (c.up_block_types = ['UpDecoderBlock2D']),
      /field "up_block_types" has 1 entries but block_out_channels has 5/,
    ],
    ['class', (c) => (c._class_name = 'AutoencoderKL'), /field "_class_name"/],
    [
      'channels',
      (c) => (c.block_out_channels = [8, 16, -1]),
      /field "block_out_channels" must be a non-empty list of positive integers/,
    ],
  ];
  for (const [name, edit, re] of cases) {
    const dir = vqDirWithConfig(name, edit);
    await assert.rejects(VqModel.load(dir), (e: Error) => {
      assert.equal(e.name, 'DimooError', name);
      assert.match(e.message, re, name);
      return true;
    });
  }
  const noWeights = path.join(tmpRoot, 'noweights');
  fs.mkdirSync(noWeights);
  fs.copyFileSync(path.join(VQ_DIR, 'config.json'), path.join(noWeights, 'config.json'));
  await assert.rejects(
    VqModel.load(noWeights),
    /diffusion_pytorch_model\.safetensors: VQ-VAE weights not found/,
  );
  await assert.rejects(
    VqModel.load(path.join(tmpRoot, 'missing')),
    /config\.json: cannot read the VQ-VAE config/,
  );
  const badJson = path.join(tmpRoot, 'badjson');
  fs.mkdirSync(badJson);
  fs.writeFileSync(path.join(badJson, 'config.json'), '{"block_out_channels": [8,');
  await assert.rejects(VqModel.load(badJson), /config\.json: not valid JSON/);
});

test('a symlinked weights file (as in Hub caches) loads and runs', async () => {
  const dir = vqDirWithConfig('linked', () => undefined);
  const m = await VqModel.load(dir, { threads: 1 });
  try {
    const out = await m.decode([0, 1, 2, 3], 2, 2);
    assert.deepEqual([out.width, out.height], [32, 32]);
  } finally {
    await m.dispose();
  }
});
