import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DimooError } from '../src/errors.js';
import { openCheckpoint } from '../src/checkpoint/folder.js';
import { expectedTensors, INDEX_FILE } from '../src/checkpoint/layout.js';
import { parseLladaConfig, loadLladaConfig, countParameters } from '../src/checkpoint/config.js';
import {
  SafetensorsFile,
  writeSafetensors,
  type WriteEntry,
} from '../src/checkpoint/safetensors.js';
import { inspectCheckpoint } from '../src/tools/inspect.js';
import { goldenCheckpointDir } from './helpers/golden.js';

let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-ck-'));
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function expectError(fn: () => unknown, ...parts: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof DimooError, `expected DimooError, got ${String(e)}`);
    for (const p of parts) assert.ok(e.message.includes(p), `message "${e.message}" lacks "${p}"`);
    return true;
  });
}

let copies = 0;
/** A writable copy of the golden checkpoint (without vqvae/), optionally with config edits. */
function goldenCopy(edit?: (cfg: Record<string, unknown>) => void): string {
  const dir = path.join(tmp, `copy${copies++}`);
  fs.mkdirSync(dir);
  const src = goldenCheckpointDir();
  for (const f of fs.readdirSync(src)) {
    if (f === 'vqvae') continue;
    fs.copyFileSync(path.join(src, f), path.join(dir, f));
    fs.chmodSync(path.join(dir, f), 0o644);
  }
  if (edit) {
    const p = path.join(dir, 'config.json');
    const cfg = JSON.parse(fs.readFileSync(p, 'utf8')) as Record<string, unknown>;
    edit(cfg);
    fs.writeFileSync(p, JSON.stringify(cfg));
  }
  return dir;
}

function goldenConfigRaw(): Record<string, unknown> {
  return JSON.parse(
    fs.readFileSync(path.join(goldenCheckpointDir(), 'config.json'), 'utf8'),
  ) as Record<string, unknown>;
}

describe('golden checkpoint', () => {
  test('opens with the right config, weights, and file paths', () => {
    const ck = openCheckpoint(goldenCheckpointDir());
    const c = ck.config;
    assert.equal(c.dModel, 32);
    assert.equal(c.nHeads, 4);
    assert.equal(c.nKvHeads, 4);
    assert.equal(c.headDim, 8);
    assert.equal(c.nLayers, 2);
    assert.equal(c.mlpHiddenSize, 64);
    assert.equal(c.vocabSize, 134548);
    assert.equal(c.embeddingSize, 134548);
    assert.equal(c.ropeTheta, 500000);
    assert.equal(c.rmsNormEps, 1e-5);
    assert.equal(c.maxSequenceLength, 4096);
    assert.equal(c.weightTying, false);
    assert.equal(c.includeBias, false);
    assert.equal(c.includeQkvBias, false);
    assert.equal(c.maskTokenId, 126336);
    assert.equal(c.eosTokenId, 126081);
    assert.equal(c.padTokenId, 126081);
    assert.equal(c.raw.model_type, 'llada');

    assert.equal(ck.weights.size, 21);
    const expected = expectedTensors(c);
    assert.equal(expected.length, 21);
    for (const e of expected) {
      const t = ck.weights.get(e.name);
      assert.ok(t, e.name);
      assert.deepEqual(t.shape, e.shape);
      assert.equal(t.dtype, 'BF16');
    }
    assert.deepEqual(ck.weights.get('model.transformer.blocks.1.k_proj.weight')!.shape, [32, 32]);
    assert.ok(
      ck.weights
        .get('model.transformer.ff_out.weight')!
        .file.endsWith('model-00002-of-00002.safetensors'),
    );
    assert.ok(
      ck.weights
        .get('model.transformer.wte.weight')!
        .file.endsWith('model-00001-of-00002.safetensors'),
    );
    assert.equal(ck.tokenizerPath, path.join(goldenCheckpointDir(), 'tokenizer.json'));
    assert.equal(ck.tokenizerConfigPath, path.join(goldenCheckpointDir(), 'tokenizer_config.json'));
    assert.equal(
      ck.specialTokensMapPath,
      path.join(goldenCheckpointDir(), 'special_tokens_map.json'),
    );
    assert.equal(ck.vqvaeDir, path.join(goldenCheckpointDir(), 'vqvae'));
    assert.equal(ck.weightFiles.length, 2);
    assert.ok(ck.files.some((f) => f.endsWith(INDEX_FILE)));
  });

  test('index total_size equals the sum of tensor bytes', () => {
    const ck = openCheckpoint(goldenCheckpointDir());
    const idx = JSON.parse(fs.readFileSync(path.join(goldenCheckpointDir(), INDEX_FILE), 'utf8'));
    const sum = [...ck.weights.values()].reduce((s, t) => s + t.byteLength, 0);
    assert.equal(sum, idx.metadata.total_size);
  });

  test('inspect: parameter counts, dtypes, bytes, memory', () => {
    const r = inspectCheckpoint(goldenCheckpointDir());
    const emb = 134548 * 32;
    const perLayer = 4 * 32 * 32 + 3 * 32 * 64 + 2 * 32;
    assert.equal(r.parameters.embedding, emb);
    assert.equal(r.parameters.head, emb);
    assert.equal(r.parameters.perLayer, perLayer);
    assert.equal(r.parameters.total, 2 * emb + 2 * perLayer + 32);
    assert.deepEqual(r.dtypes, { BF16: 21 });
    assert.equal(r.bytesByDtype.BF16, r.parameters.total * 2);
    assert.equal(r.memory.fp32, r.parameters.total * 4);
    assert.equal(r.memory.bf16, r.parameters.total * 2);
    assert.ok(r.memory.int8 > r.parameters.total && r.memory.int8 < r.parameters.total * 1.2);
    assert.ok(r.memory.int4 > r.parameters.total / 2 && r.memory.int4 < r.parameters.total * 0.7);
    assert.equal(
      r.disk.weightFileBytes,
      fs.statSync(path.join(goldenCheckpointDir(), 'model-00001-of-00002.safetensors')).size +
        fs.statSync(path.join(goldenCheckpointDir(), 'model-00002-of-00002.safetensors')).size,
    );
    assert.ok(r.disk.folderBytes > r.disk.weightFileBytes);
    assert.equal(r.hasVqvae, true);
    assert.equal(r.config.headDim, 8);
  });
});

describe('config.json parsing', () => {
  test('derivations: kv heads, mlp ratio, embedding size, multi-query', () => {
    const base = goldenConfigRaw();
    const a = parseLladaConfig({ ...base, n_kv_heads: null });
    assert.equal(a.nKvHeads, 4);
    const b = parseLladaConfig({ ...base, n_kv_heads: null, multi_query_attention: true });
    assert.equal(b.nKvHeads, 1);
    const c = parseLladaConfig({ ...base, mlp_hidden_size: null, mlp_ratio: 3 });
    assert.equal(c.mlpHiddenSize, 96);
    const d = parseLladaConfig({ ...base, embedding_size: null });
    assert.equal(d.embeddingSize, 134548);
    const e = parseLladaConfig({ ...base, n_kv_heads: 2 });
    assert.equal(e.nKvHeads, 2);
    assert.equal(e.headDim, 8);
  });

  const bad: [string, Record<string, unknown>, string][] = [
    ['missing d_model', { d_model: undefined }, '"d_model"'],
    ['zero n_heads', { n_heads: 0 }, '"n_heads"'],
    ['fractional n_layers', { n_layers: 2.5 }, '"n_layers"'],
    ['d_model not divisible', { d_model: 30 }, '"d_model"'],
    ['n_heads not divisible by kv', { n_kv_heads: 3 }, '"n_heads"'],
    ['block type', { block_type: 'sequential' }, '"block_type"'],
    ['norm type', { layer_norm_type: 'default' }, '"layer_norm_type"'],
    ['activation', { activation_type: 'gelu' }, '"activation_type"'],
    ['no rope', { rope: false }, '"rope"'],
    ['alibi', { alibi: true }, '"alibi"'],
    ['rope theta', { rope_theta: -1 }, '"rope_theta"'],
    ['bool type', { weight_tying: 'no' }, '"weight_tying"'],
    ['mask id out of vocab', { mask_token_id: 200000 }, '"mask_token_id"'],
    ['mlp missing', { mlp_hidden_size: null, mlp_ratio: null }, '"mlp_hidden_size"'],
    ['embedding smaller than vocab', { embedding_size: 100 }, '"embedding_size"'],
    ['qk norm', { attention_layer_norm: true }, '"attention_layer_norm"'],
  ];
  for (const [label, patch, field] of bad) {
    test(`rejects: ${label}`, () => {
      expectError(() => parseLladaConfig({ ...goldenConfigRaw(), ...patch }), 'config.json', field);
    });
  }

  test('unsupported values are called unsupported', () => {
    expectError(
      () => parseLladaConfig({ ...goldenConfigRaw(), activation_type: 'gelu' }),
      'unsupported',
      'gelu',
    );
  });

  test('loadLladaConfig names the file for unreadable or non-JSON configs', () => {
    const p = path.join(tmp, 'broken-config.json');
    fs.writeFileSync(p, '{"d_model": ');
    expectError(() => loadLladaConfig(p), p, 'JSON');
    expectError(() => loadLladaConfig(path.join(tmp, 'none.json')), 'none.json');
  });

  test('expected tensors with tying, biases and grouped KV', () => {
    const base = goldenConfigRaw();
    const tied = expectedTensors(parseLladaConfig({ ...base, weight_tying: true })).map(
      (t) => t.name,
    );
    assert.ok(!tied.includes('model.transformer.ff_out.weight'));
    assert.equal(tied.length, 20);
    const qkv = expectedTensors(parseLladaConfig({ ...base, include_qkv_bias: true }));
    assert.deepEqual(
      qkv.find((t) => t.name === 'model.transformer.blocks.0.k_proj.bias')!.shape,
      [32],
    );
    assert.ok(!qkv.some((t) => t.name.endsWith('attn_out.bias')));
    // bias_for_layer_norm null falls back to include_bias, as in the original.
    const all = expectedTensors(
      parseLladaConfig({ ...base, include_bias: true, bias_for_layer_norm: null }),
    ).map((t) => t.name);
    for (const n of [
      'blocks.1.ff_out.bias',
      'blocks.0.up_proj.bias',
      'blocks.0.attn_out.bias',
      'ff_out.bias',
      'ln_f.bias',
      'blocks.0.attn_norm.bias',
    ]) {
      assert.ok(all.includes('model.transformer.' + n), n);
    }
    const noNormBias = expectedTensors(
      parseLladaConfig({ ...base, include_bias: true, bias_for_layer_norm: false }),
    );
    assert.ok(!noNormBias.some((t) => t.name.endsWith('ln_f.bias')));
    const gqa = expectedTensors(parseLladaConfig({ ...base, n_kv_heads: 1 }));
    assert.deepEqual(gqa.find((t) => t.name.endsWith('blocks.0.v_proj.weight'))!.shape, [8, 32]);
    const cfg = parseLladaConfig({ ...base, include_bias: true, weight_tying: true });
    const counted = expectedTensors(cfg).reduce(
      (s, t) => s + t.shape.reduce((a, b) => a * b, 1),
      0,
    );
    assert.equal(countParameters(cfg).total, counted);
  });
});

describe('broken checkpoint folders', () => {
  test('missing folder / config.json / tokenizer.json', () => {
    expectError(() => openCheckpoint(path.join(tmp, 'nowhere')), 'nowhere', 'does not exist');
    const d = goldenCopy();
    fs.rmSync(path.join(d, 'tokenizer.json'));
    expectError(() => openCheckpoint(d), 'tokenizer.json');
    fs.rmSync(path.join(d, 'config.json'));
    expectError(() => openCheckpoint(d), 'config.json');
  });

  test('optional tokenizer files may be missing', () => {
    const d = goldenCopy();
    fs.rmSync(path.join(d, 'tokenizer_config.json'));
    fs.rmSync(path.join(d, 'special_tokens_map.json'));
    const ck = openCheckpoint(d);
    assert.equal(ck.tokenizerConfigPath, undefined);
    assert.equal(ck.specialTokensMapPath, undefined);
    assert.equal(ck.vqvaeDir, undefined);
  });

  test('no weights at all', () => {
    const d = goldenCopy();
    fs.rmSync(path.join(d, INDEX_FILE));
    expectError(() => openCheckpoint(d), 'no weights found', 'model.safetensors');
  });

  test('missing shard', () => {
    const d = goldenCopy();
    fs.rmSync(path.join(d, 'model-00002-of-00002.safetensors'));
    expectError(() => openCheckpoint(d), 'model-00002-of-00002.safetensors', 'missing');
  });

  test('index maps a tensor to a shard that lacks it', () => {
    const d = goldenCopy();
    const p = path.join(d, INDEX_FILE);
    const idx = JSON.parse(fs.readFileSync(p, 'utf8'));
    idx.weight_map['model.transformer.ln_f.weight'] = 'model-00001-of-00002.safetensors';
    fs.writeFileSync(p, JSON.stringify(idx));
    expectError(
      () => openCheckpoint(d),
      'model.transformer.ln_f.weight',
      'model-00001-of-00002.safetensors',
      'no such tensor',
    );
  });

  test('index with a path escaping the folder, or not JSON', () => {
    const d = goldenCopy();
    const p = path.join(d, INDEX_FILE);
    const idx = JSON.parse(fs.readFileSync(p, 'utf8'));
    idx.weight_map['model.transformer.ln_f.weight'] = '../evil.safetensors';
    fs.writeFileSync(p, JSON.stringify(idx));
    expectError(
      () => openCheckpoint(d),
      INDEX_FILE,
      'model.transformer.ln_f.weight',
      'plain file name',
    );
    fs.writeFileSync(p, '{');
    expectError(() => openCheckpoint(d), INDEX_FILE, 'JSON');
  });

  test('wrong shape versus config names the tensor and the config fields', () => {
    const d = goldenCopy((c) => {
      c.mlp_hidden_size = 96;
    });
    expectError(
      () => openCheckpoint(d),
      'model.transformer.blocks.0.ff_proj.weight',
      '[64, 32]',
      '[96, 32]',
      'mlp_hidden_size=96',
    );
    const g = goldenCopy((c) => {
      c.n_kv_heads = 2;
    });
    expectError(
      () => openCheckpoint(g),
      'model.transformer.blocks.0.k_proj.weight',
      '[16, 32]',
      'n_kv_heads=2',
    );
  });

  test('missing tensor', () => {
    const d = goldenCopy((c) => {
      c.n_layers = 3;
    });
    expectError(
      () => openCheckpoint(d),
      'missing tensor',
      'model.transformer.blocks.2.attn_norm.weight',
    );
  });

  test('unexpected tensor', () => {
    const d = goldenCopy((c) => {
      c.weight_tying = true;
    });
    expectError(() => openCheckpoint(d), 'unexpected tensor', 'model.transformer.ff_out.weight');
    const e = goldenCopy((c) => {
      c.n_layers = 1;
    });
    expectError(() => openCheckpoint(e), 'unexpected tensor', 'model.transformer.blocks.1.');
  });

  test('bad config field', () => {
    const d = goldenCopy((c) => {
      c.layer_norm_type = 'gemma_rms';
    });
    expectError(() => openCheckpoint(d), 'config.json', '"layer_norm_type"', 'gemma_rms');
  });

  test('broken shard file is reported with its path', () => {
    const d = goldenCopy();
    const p = path.join(d, 'model-00001-of-00002.safetensors');
    fs.truncateSync(p, 1000);
    expectError(() => openCheckpoint(d), p);
  });
});

describe('single-file checkpoints and weight dtypes', () => {
  // A minimal config: d_model 2 keeps the 134548-row matrices small.
  const cfg = { ...{} } as Record<string, unknown>;
  before(() => {
    Object.assign(cfg, goldenConfigRaw(), {
      d_model: 2,
      n_heads: 1,
      n_kv_heads: 1,
      n_layers: 1,
      mlp_hidden_size: 4,
    });
  });

  function build(name: string, dtypeOf: (tensor: string) => WriteEntry['dtype']): string {
    const d = path.join(tmp, name);
    fs.mkdirSync(d);
    fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify(cfg));
    fs.copyFileSync(
      path.join(goldenCheckpointDir(), 'tokenizer.json'),
      path.join(d, 'tokenizer.json'),
    );
    const entries: WriteEntry[] = expectedTensors(parseLladaConfig(cfg)).map((t) => {
      const dtype = dtypeOf(t.name);
      const size = { F32: 4, BF16: 2, F16: 2, I32: 4, F64: 8 }[dtype as 'F32'];
      return {
        name: t.name,
        dtype,
        shape: t.shape,
        data: new Uint8Array(t.shape.reduce((a, b) => a * b, 1) * size),
      };
    });
    writeSafetensors(path.join(d, 'model.safetensors'), entries);
    return d;
  }

  test('model.safetensors with mixed BF16/F16/F32 weights opens', () => {
    const d = build('single', (n) =>
      n.includes('norm') || n.includes('ln_f') ? 'F32' : n.includes('q_proj') ? 'F16' : 'BF16',
    );
    const ck = openCheckpoint(d);
    assert.equal(ck.weightFiles.length, 1);
    assert.equal(ck.weights.get('model.transformer.ln_f.weight')!.dtype, 'F32');
    assert.equal(ck.weights.get('model.transformer.blocks.0.q_proj.weight')!.dtype, 'F16');
    assert.equal(ck.config.headDim, 2);
    const f = SafetensorsFile.open(ck.weightFiles[0]!);
    assert.equal(f.tensors.size, ck.weights.size);
  });

  test('unsupported weight dtype is rejected with tensor and file named', () => {
    const d = build('intweights', (n) => (n.endsWith('v_proj.weight') ? 'I32' : 'BF16'));
    expectError(
      () => openCheckpoint(d),
      'model.transformer.blocks.0.v_proj.weight',
      'I32',
      'model.safetensors',
    );
  });
});
