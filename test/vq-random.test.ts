import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { VqModel } from '../src/models/vq-model.js';
import { VQ_PRESETS, writeRandomVq } from '../src/tools/random-vq.js';
import { expectedVqTensors, loadVqConfig, parseVqConfig } from '../src/checkpoint/vq-config.js';
import {
  SafetensorsFile,
  writeSafetensors,
  type WriteEntry,
} from '../src/checkpoint/safetensors.js';
import { goldenCheckpointDir } from './helpers/golden.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-vqr-'));
after(() => fs.rmSync(root, { recursive: true, force: true }));

const WEIGHTS = 'diffusion_pytorch_model.safetensors';

function pattern(w: number, h: number): Uint8Array {
  return new Uint8Array(w * h * 3).map((_, i) => {
    const p = Math.floor(i / 3);
    return ((p % w) * 5 + Math.floor(p / w) * 3 + (i % 3) * 70) & 255;
  });
}

async function withModel<T>(dir: string, fn: (m: VqModel) => Promise<T>): Promise<T> {
  const m = await VqModel.load(dir, { threads: 1 });
  try {
    return await fn(m);
  } finally {
    await m.dispose();
  }
}

/** Rewrites a VQ weights file through `map` (name -> new name and data, or undefined to keep). */
function rewrite(
  dir: string,
  map: (name: string, data: Float32Array) => { name?: string; data?: Float32Array } | undefined,
): void {
  const file = path.join(dir, WEIGHTS);
  const st = SafetensorsFile.open(file);
  const entries: WriteEntry[] = st.names.map((n) => {
    const t = st.info(n);
    const f = st.readFloat32(n);
    const r = map(n, f) ?? {};
    return { name: r.name ?? n, dtype: 'F32', shape: t.shape, data: r.data ?? f };
  });
  writeSafetensors(file, entries, { format: 'pt' });
}

test('tiny preset has the golden config and the golden tensor list', () => {
  const golden = loadVqConfig(path.join(goldenCheckpointDir(), 'vqvae'));
  const tiny = parseVqConfig(VQ_PRESETS.tiny);
  assert.deepEqual({ ...tiny, raw: undefined }, { ...golden, raw: undefined });
  const st = SafetensorsFile.open(path.join(goldenCheckpointDir(), 'vqvae', WEIGHTS));
  const want = new Map(st.names.map((n) => [n, st.info(n).shape]));
  const got = new Map(expectedVqTensors(tiny).map((t) => [t.name, t.shape]));
  assert.deepEqual(got, want);
});

test('amused preset: the real sizes (16x downsampling, 8192 x 64 codebook, 146M parameters)', () => {
  const c = parseVqConfig(VQ_PRESETS.amused);
  assert.equal(c.scaleFactor, 16);
  assert.deepEqual(c.blockOutChannels, [128, 256, 256, 512, 768]);
  assert.equal(c.vqEmbedDim, 64);
  const params = expectedVqTensors(c).reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0);
  assert.equal(params, 146_244_675);
});

test('random tiny VQ in F32, F16 and BF16: loads, runs, is seeded, narrower dtypes track F32', async () => {
  const img = { data: pattern(64, 48), width: 64, height: 48 };
  const results: Record<string, { codes: Int32Array; pixels: Float32Array }> = {};
  for (const dtype of ['F32', 'F16', 'BF16'] as const) {
    const dir = path.join(root, `tiny-${dtype}`);
    writeRandomVq(dir, 'tiny', { seed: 3, dtype });
    assert.equal(
      SafetensorsFile.open(path.join(dir, WEIGHTS)).info('decoder.conv_out.weight').dtype,
      dtype,
    );
    results[dtype] = await withModel(dir, async (m) => {
      const g = await m.encode(img);
      assert.deepEqual([g.gridH, g.gridW], [3, 4]);
      const d = await m.decodeFloat(g.codes, 3, 4);
      assert.ok(d.pixels.every((v) => v >= 0 && v <= 1));
      return { codes: g.codes, pixels: d.pixels };
    });
  }
  // Same seed, same file.
  const again = path.join(root, 'tiny-again');
  writeRandomVq(again, 'tiny', { seed: 3 });
  assert.deepEqual(
    fs.readFileSync(path.join(again, WEIGHTS)),
    fs.readFileSync(path.join(root, 'tiny-F32', WEIGHTS)),
  );
  // Random codes spread over the codebook rather than collapsing on one entry.
  assert.ok(new Set(results.F32!.codes).size > 3);
  // F16 weights are F32 rounded: the decoded image moves only a little.
  const f16 = await withModel(path.join(root, 'tiny-F16'), (m) =>
    m.decodeFloat(results.F32!.codes, 3, 4),
  );
  let m = 0;
  for (let i = 0; i < f16.pixels.length; i++)
    m = Math.max(m, Math.abs(f16.pixels[i]! - results.F32!.pixels[i]!));
  assert.ok(m < 0.02, `F16 vs F32 decode differs by ${m}`);
});

test('mid-block attention: zero output projection is the identity; legacy attention names load', async () => {
  const plain = path.join(root, 'attn-off');
  const attn = path.join(root, 'attn-on');
  writeRandomVq(plain, 'tiny', { seed: 9 });
  writeRandomVq(attn, 'tiny', { seed: 9, overrides: { mid_block_add_attention: true } });
  const codes = Array.from({ length: 12 }, (_, i) => (i * 683) % 8192);
  const img = { data: pattern(64, 48), width: 64, height: 48 };

  // Attention on with random weights changes the result.
  const base = await withModel(plain, async (m) => ({
    dec: await m.decodeFloat(codes, 3, 4),
    enc: await m.encodeFloat(m.preprocess(img).pixels, 64, 48),
  }));
  const on = await withModel(attn, (m) => m.decodeFloat(codes, 3, 4));
  assert.notDeepEqual(on.pixels, base.dec.pixels);

  // Legacy names (query/key/value/proj_attn) give exactly the same graph.
  const legacy = path.join(root, 'attn-legacy');
  fs.cpSync(attn, legacy, { recursive: true });
  const rename: Record<string, string> = {
    to_q: 'query',
    to_k: 'key',
    to_v: 'value',
    'to_out.0': 'proj_attn',
  };
  rewrite(legacy, (n) => {
    const m = /^(.*attentions\.0\.)(to_q|to_k|to_v|to_out\.0)(\.weight|\.bias)$/.exec(n);
    return m ? { name: m[1] + rename[m[2]!]! + m[3] } : undefined;
  });
  assert.ok(
    SafetensorsFile.open(path.join(legacy, WEIGHTS)).has(
      'decoder.mid_block.attentions.0.proj_attn.weight',
    ),
  );
  const viaLegacy = await withModel(legacy, (m) => m.decodeFloat(codes, 3, 4));
  assert.deepEqual(viaLegacy.pixels, on.pixels);

  // to_out = 0 makes each attention block return its input: the network is then the attention-free one.
  rewrite(attn, (n, d) =>
    /attentions\.0\.to_out\.0\./.test(n) ? { data: new Float32Array(d.length) } : undefined,
  );
  await withModel(attn, async (m) => {
    const dec = await m.decodeFloat(codes, 3, 4);
    const enc = await m.encodeFloat(m.preprocess(img).pixels, 64, 48);
    assert.deepEqual(dec.pixels, base.dec.pixels);
    assert.deepEqual(enc.latents, base.enc.latents);
    assert.deepEqual(enc.codes, base.enc.codes);
  });
});

test('vq_embed_dim different from latent_channels and other channel lists build and run', async () => {
  const dir = path.join(root, 'odd');
  writeRandomVq(dir, 'tiny', {
    seed: 1,
    overrides: {
      block_out_channels: [8, 16, 24],
      down_block_types: Array(3).fill('DownEncoderBlock2D'),
      up_block_types: Array(3).fill('UpDecoderBlock2D'),
      layers_per_block: 1,
      vq_embed_dim: 6,
      num_vq_embeddings: 64,
      norm_num_groups: 8,
    },
  });
  await withModel(dir, async (m) => {
    assert.equal(m.scale, 4);
    const img = { data: pattern(20, 12), width: 20, height: 12 };
    const enc = await m.encodeFloat(m.preprocess(img).pixels, 20, 12);
    assert.equal(enc.latents.length, 6 * 3 * 5);
    assert.ok(enc.codes.every((c) => c >= 0 && c < 64));
    const out = await m.decode(enc.codes, 3, 5);
    assert.deepEqual([out.width, out.height], [20, 12]);
  });
});

test('unknown preset is refused', () => {
  assert.throws(
    () => writeRandomVq(path.join(root, 'x'), 'huge' as 'tiny'),
    /unknown random VQ preset "huge"/,
  );
});
