import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Tokenizer } from 'tokenizers';
import { DimooError } from '../src/errors.js';
import { openCheckpoint } from '../src/checkpoint/folder.js';
import { INDEX_FILE } from '../src/checkpoint/layout.js';
import { countParameters, parseLladaConfig } from '../src/checkpoint/config.js';
import { SafetensorsFile, readTensorFloat32 } from '../src/checkpoint/safetensors.js';
import {
  PRESETS,
  Rng,
  buildLladaConfigJson,
  planShards,
  writeRandomCheckpoint,
  type PresetName,
} from '../src/tools/random-checkpoint.js';
import { SPECIAL_TOKENS, WORD_LIST } from '../src/tools/tokenizer-files.js';
import { goldenCheckpointDir } from './helpers/golden.js';

let tmp: string;
let tinyDir: string;
before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-rand-'));
  tinyDir = path.join(tmp, 'tiny');
  await writeRandomCheckpoint(tinyDir, 'tiny', { seed: 7 });
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function std(a: Float32Array): number {
  let m = 0;
  for (const v of a) m += v;
  m /= a.length;
  let s = 0;
  for (const v of a) s += (v - m) ** 2;
  return Math.sqrt(s / a.length);
}

describe('tiny preset', () => {
  test('opens with openCheckpoint and has the golden sizes', () => {
    const ck = openCheckpoint(tinyDir);
    const golden = openCheckpoint(goldenCheckpointDir());
    assert.deepEqual({ ...ck.config, raw: null }, { ...golden.config, raw: null });
    // config.json carries the same fields as the golden one.
    assert.deepEqual(Object.keys(ck.config.raw).sort(), Object.keys(golden.config.raw).sort());
    assert.equal(ck.weights.size, 21);
    for (const [name, t] of golden.weights) {
      assert.deepEqual(ck.weights.get(name)?.shape, t.shape, name);
      assert.equal(ck.weights.get(name)?.dtype, 'BF16');
    }
    assert.equal(ck.weightFiles.length, 2);
    assert.ok(ck.tokenizerConfigPath && ck.specialTokensMapPath && ck.generationConfigPath);
    assert.equal(ck.vqvaeDir, undefined);
  });

  test('index: total_size, sorted weight_map, shard metadata', () => {
    const idx = JSON.parse(fs.readFileSync(path.join(tinyDir, INDEX_FILE), 'utf8'));
    const ck = openCheckpoint(tinyDir);
    assert.equal(
      idx.metadata.total_size,
      [...ck.weights.values()].reduce((s, t) => s + t.byteLength, 0),
    );
    const keys = Object.keys(idx.weight_map);
    assert.deepEqual(keys, [...keys].sort());
    assert.deepEqual(
      new Set(Object.values(idx.weight_map)),
      new Set(['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']),
    );
    for (const f of ck.weightFiles)
      assert.deepEqual(SafetensorsFile.open(f).metadata, { format: 'pt' });
  });

  test('weights: finite, scaled like the golden ones, norms near 1 but not all ones', () => {
    const ck = openCheckpoint(tinyDir);
    const read = (n: string): Float32Array =>
      readTensorFloat32(ck.weights.get('model.transformer.' + n)!);
    const q = read('blocks.0.q_proj.weight');
    const v = read('blocks.0.v_proj.weight');
    const head = read('ff_out.weight');
    const wte = read('wte.weight');
    for (const a of [q, v, head, wte]) assert.ok(a.every(Number.isFinite));
    assert.ok(Math.abs(std(q) - 1.5 / Math.sqrt(32)) < 0.03, `q std ${std(q)}`);
    assert.ok(Math.abs(std(v) - 1 / Math.sqrt(32)) < 0.02, `v std ${std(v)}`);
    assert.ok(Math.abs(std(wte) - 1) < 0.01);
    assert.ok(Math.abs(std(head) - 2.5 / Math.sqrt(32)) < 0.01);
    for (const n of ['blocks.0.attn_norm.weight', 'blocks.1.ff_norm.weight', 'ln_f.weight']) {
      const w = read(n);
      assert.ok(
        w.every((x) => x >= 0.6 && x <= 1.4),
        n,
      );
      assert.ok(
        w.some((x) => Math.abs(x - 1) > 0.05),
        `${n} is not all ones`,
      );
    }
    // Different tensors get different streams.
    assert.notDeepEqual(read('blocks.0.q_proj.weight'), read('blocks.1.q_proj.weight'));
  });

  test('deterministic in the seed and independent of sharding', async () => {
    const again = path.join(tmp, 'again');
    await writeRandomCheckpoint(again, 'tiny', { seed: 7, maxShardBytes: 100_000 });
    const other = path.join(tmp, 'other');
    await writeRandomCheckpoint(other, 'tiny', { seed: 8 });
    const a = openCheckpoint(tinyDir);
    const b = openCheckpoint(again);
    const c = openCheckpoint(other);
    assert.ok(b.weightFiles.length > 2, 'small cap gives more shards');
    for (const [name, t] of a.weights) {
      const x = readTensorFloat32(t);
      assert.deepEqual(readTensorFloat32(b.weights.get(name)!), x, name);
      if (t.shape.length === 2)
        assert.notDeepEqual(readTensorFloat32(c.weights.get(name)!), x, name);
    }
  });

  test('rewriting a folder removes stale weight files', async () => {
    const d = path.join(tmp, 'rewrite');
    await writeRandomCheckpoint(d, 'tiny', { maxShardBytes: 100_000 });
    fs.writeFileSync(path.join(d, 'model.safetensors'), 'stale');
    await writeRandomCheckpoint(d, 'tiny');
    const shards = fs.readdirSync(d).filter((f) => f.endsWith('.safetensors'));
    assert.deepEqual(shards.sort(), [
      'model-00001-of-00002.safetensors',
      'model-00002-of-00002.safetensors',
    ]);
    assert.equal(openCheckpoint(d).weightFiles.length, 2);
  });
});

describe('overrides and options', () => {
  test('grouped KV override gives k_proj [nKv*headDim, d]', async () => {
    const d = path.join(tmp, 'gqa');
    const r = await writeRandomCheckpoint(d, 'tiny', {
      overrides: { nKvHeads: 2, ropeTheta: 10000, rmsNormEps: 1e-6, nLayers: 3 },
    });
    const ck = openCheckpoint(d);
    assert.equal(ck.config.nKvHeads, 2);
    assert.equal(ck.config.ropeTheta, 10000);
    assert.equal(ck.config.rmsNormEps, 1e-6);
    assert.equal(ck.config.nLayers, 3);
    assert.deepEqual(ck.weights.get('model.transformer.blocks.2.k_proj.weight')!.shape, [16, 32]);
    assert.deepEqual(ck.weights.get('model.transformer.blocks.2.v_proj.weight')!.shape, [16, 32]);
    assert.deepEqual(ck.weights.get('model.transformer.blocks.2.q_proj.weight')!.shape, [32, 32]);
    assert.equal(r.parameters, countParameters(ck.config).total);
  });

  test('writeVq callback gets the vqvae folder; weight tying and biases', async () => {
    const d = path.join(tmp, 'withvq');
    let got = '';
    await writeRandomCheckpoint(d, 'tiny', {
      overrides: { weightTying: true, includeBias: true },
      writeVq: async (vqDir) => {
        got = vqDir;
        fs.writeFileSync(path.join(vqDir, 'config.json'), '{}');
      },
    });
    assert.equal(got, path.join(d, 'vqvae'));
    const ck = openCheckpoint(d);
    assert.equal(ck.vqvaeDir, got);
    assert.equal(ck.weights.has('model.transformer.ff_out.weight'), false);
    const bias = readTensorFloat32(ck.weights.get('model.transformer.blocks.0.ff_proj.bias')!);
    assert.ok(std(bias) < 0.05 && std(bias) > 0);
  });

  test('bad sizes are reported as config errors; unknown preset as a parameter error', async () => {
    await assert.rejects(
      writeRandomCheckpoint(path.join(tmp, 'bad'), 'tiny', { overrides: { nKvHeads: 3 } }),
      (e: unknown) =>
        e instanceof DimooError &&
        e.message.includes('config.json') &&
        e.message.includes('n_kv_heads = 3'),
    );
    await assert.rejects(
      writeRandomCheckpoint(path.join(tmp, 'bad2'), 'huge' as PresetName),
      (e: unknown) => e instanceof DimooError && e.message.includes('huge'),
    );
  });

  test('progress reports reach the total', async () => {
    let last = [0, 0];
    await writeRandomCheckpoint(path.join(tmp, 'prog'), 'tiny', {
      onProgress: (a, b) => (last = [a, b]),
    });
    assert.equal(last[0], last[1]);
    assert.equal(last[1], 2 * countParameters(openCheckpoint(path.join(tmp, 'prog')).config).total);
  });
});

describe('presets', () => {
  const params = (p: PresetName): number =>
    countParameters(parseLladaConfig(buildLladaConfigJson(PRESETS[p]))).total;

  test('sizes land near their names', () => {
    assert.equal(params('tiny'), 8_631_712);
    assert.ok(params('small') > 90e6 && params('small') < 115e6, `small ${params('small')}`);
    assert.ok(params('1b') > 0.9e9 && params('1b') < 1.1e9, `1b ${params('1b')}`);
    assert.ok(params('8b') > 7.9e9 && params('8b') < 8.2e9, `8b ${params('8b')}`);
  });

  test('8b has the real model shape', () => {
    const c = parseLladaConfig(buildLladaConfigJson(PRESETS['8b']));
    assert.deepEqual(
      [c.dModel, c.nHeads, c.nKvHeads, c.nLayers, c.mlpHiddenSize, c.embeddingSize, c.headDim],
      [4096, 32, 32, 32, 12288, 134548, 128],
    );
    // 16 GB of bf16 splits into shards of at most 2 GiB (one tensor never exceeds it).
    const sizes = [{ name: 'wte', shape: [134548, 4096], bytes: 134548 * 4096 * 2 }];
    for (let i = 0; i < 32 * 7; i++)
      sizes.push({ name: `m${i}`, shape: [], bytes: 4096 * 12288 * 2 * (i % 7 < 3 ? 1 : 1 / 3) });
    const shards = planShards(sizes, 2 * 1024 ** 3);
    for (const s of shards) assert.ok(s.reduce((a, t) => a + t.bytes, 0) <= 2 * 1024 ** 3);
    assert.equal(shards.flat().length, sizes.length);
  });

  test('the PRNG is deterministic and roughly uniform', () => {
    const a = new Rng(1);
    const b = new Rng(1);
    let sum = 0;
    for (let i = 0; i < 10000; i++) {
      const x = a.next();
      assert.equal(x, b.next());
      assert.ok(x >= 0 && x < 1);
      sum += x;
    }
    assert.ok(Math.abs(sum / 10000 - 0.5) < 0.02);
    assert.notEqual(new Rng(2).nextU32(), new Rng(1).nextU32());
  });
});

describe('tokenizer files', () => {
  test('load in the tokenizers binding and encode like golden', async () => {
    const mine = Tokenizer.fromFile(path.join(tinyDir, 'tokenizer.json'));
    const golden = Tokenizer.fromFile(path.join(goldenCheckpointDir(), 'tokenizer.json'));
    const text =
      '<system>Generate an image according to the text prompt.</system><user>a red cat sitting on a wooden table</user>';
    const a = await mine.encode(text);
    const g = await golden.encode(text);
    // Same tokens (the words are in both vocabularies); special ids identical.
    assert.deepEqual(a.getTokens(), g.getTokens());
    assert.equal(a.getIds()[0], 126080);
    assert.deepEqual(g.getIds().slice(0, 2), [126080, 126352]);
    const ids = a.getIds();
    const gids = g.getIds();
    for (let i = 0; i < ids.length; i++) {
      if (gids[i]! >= 126080) assert.equal(ids[i], gids[i]);
      else
        assert.ok(
          ids[i]! > 0 && ids[i]! <= WORD_LIST.length,
          `word "${a.getTokens()[i]}" sits at a low id`,
        );
    }
    // Simple sentence: BOS + one id per word, exact ids from the word list.
    const s = await mine.encode('a red cat');
    assert.deepEqual(s.getIds(), [
      126080,
      ...['a', 'red', 'cat'].map((w) => WORD_LIST.indexOf(w) + 1),
    ]);
    // Unknown and case-mismatched words map to [UNK] = 0, like golden.
    const u = await mine.encode('zzzz A');
    assert.deepEqual(u.getIds(), [126080, 0, 0]);
    assert.equal(await mine.decode(s.getIds(), true), 'a red cat');
    assert.equal(
      await mine.decode([126349, 126084, 126350], false),
      '<IMAGE> <end-of-line> </IMAGE>',
    );
    assert.equal(mine.getVocabSize(true), 126356);
    for (const [id, str] of SPECIAL_TOKENS) assert.equal(mine.tokenToId(str), id);
  });

  test('tokenizer_config.json and special_tokens_map.json match golden', () => {
    for (const f of ['tokenizer_config.json', 'special_tokens_map.json']) {
      assert.deepEqual(
        fs.readFileSync(path.join(tinyDir, f), 'utf8').trim(),
        fs.readFileSync(path.join(goldenCheckpointDir(), f), 'utf8').trim(),
        f,
      );
    }
    const gen = JSON.parse(fs.readFileSync(path.join(tinyDir, 'generation_config.json'), 'utf8'));
    assert.deepEqual(
      gen,
      JSON.parse(
        fs.readFileSync(path.join(goldenCheckpointDir(), 'generation_config.json'), 'utf8'),
      ),
    );
  });
});
