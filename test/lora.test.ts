/**
 * LoRA adapters at inference: a zero-B adapter changes nothing; a random
 * adapter applied on the fly (--lora) gives the logits of the checkpoint
 * `dimoo lora merge` writes; bad adapters are refused with a clear message;
 * `dimoo train --lora` writes a PEFT folder that loads back.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { runCli } from '../src/cli/program.js';
import type { CliContext } from '../src/cli/context.js';
import { loadDimoo } from '../src/cli/model.js';
import { openCheckpoint } from '../src/checkpoint/folder.js';
import { loadLoraAdapters, parseLoraRef } from '../src/checkpoint/lora.js';
import { Transformer } from '../src/models/transformer.js';
import { Prng } from '../src/samplers/prng.js';
import { FakeDimoo } from './helpers/fake-dimoo.js';
import { writeRunFolder, type LoraSettings } from '../src/training/save.js';
import { goldenCheckpointDir, readGoldenJson } from './helpers/golden.js';

class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer | string, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString();
    cb();
  }
}

async function run(args: string[]) {
  const stdout = new Capture();
  const stderr = new Capture();
  const ctx: CliContext = {
    stdout,
    stderr,
    loadModel: loadDimoo,
    signal: new AbortController().signal,
    env: {},
    home: os.tmpdir(),
  };
  const code = await runCli(args, ctx);
  return { code, stdout: stdout.text, stderr: stderr.text };
}

let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-lora-'));
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

const base = openCheckpoint(goldenCheckpointDir());
const MODULES: Record<string, string> = { q: 'q_proj', v: 'v_proj', ff: 'ff_proj', down: 'ff_out' };

/** A PEFT adapter folder with random A and B (or zero B) on the given targets of every block. */
function writeAdapter(dir: string, lora: LoraSettings, zeroB: boolean, seed: number): void {
  const rng = new Prng(seed);
  const params = new Map<string, { shape: number[]; data: Float32Array }>();
  for (let l = 0; l < base.config.nLayers; l++) {
    for (const t of lora.targets) {
      const module = `model.transformer.blocks.${l}.${MODULES[t]}`;
      const [n, k] = base.weights.get(`${module}.weight`)!.shape as [number, number];
      const rand = (len: number) =>
        Float32Array.from({ length: len }, () => (rng.uniform() - 0.5) * 0.4);
      params.set(`base_model.model.${module}.lora_A.weight`, {
        shape: [lora.r, k],
        data: rand(lora.r * k),
      });
      params.set(`base_model.model.${module}.lora_B.weight`, {
        shape: [n, lora.r],
        data: zeroB ? new Float32Array(n * lora.r) : rand(n * lora.r),
      });
    }
  }
  writeRunFolder(dir, { base, params, lora, dtype: 'float32' });
}

const ids = readGoldenJson<{ sequences: Record<string, { input_ids: number[] }> }>('forward.json')
  .sequences['i2i_with_image_tokens']!.input_ids;

async function logits(
  dir: string,
  lora?: Array<{ dir: string; scale?: number }>,
): Promise<Float32Array> {
  const m = await Transformer.load(openCheckpoint(dir), { threads: 1, ...(lora ? { lora } : {}) });
  try {
    const rows = ids.map((_, i) => i);
    return (await m.forward({ ids, logitRows: rows })).logits!;
  } finally {
    await m.dispose();
  }
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
}

test('a zero-B adapter changes no logit; a random one equals its merged checkpoint', async () => {
  const lora = { r: 4, alpha: 8, targets: ['q', 'v', 'ff', 'down'] };
  const zero = path.join(tmp, 'zero');
  const rand = path.join(tmp, 'rand');
  writeAdapter(zero, lora, true, 1);
  writeAdapter(rand, lora, false, 2);
  const plain = await logits(base.dir);
  const withZero = await logits(base.dir, [{ dir: zero }]);
  assert.equal(maxDiff(plain, withZero), 0, 'y + 0 must be y exactly');

  const withRand = await logits(base.dir, [{ dir: rand, scale: 0.5 }]);
  assert.ok(maxDiff(plain, withRand) > 1e-2, 'the random adapter changes the logits');
  const merged = path.join(tmp, 'merged');
  const r = await run([
    'lora',
    'merge',
    '--model',
    base.dir,
    '--lora',
    `${rand}:0.5`,
    '--out',
    merged,
    '--save-dtype',
    'float32',
    '--json',
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((JSON.parse(r.stdout) as { merged: string[] }).merged.length, 2 * 4);
  const fromMerged = await logits(merged);
  const d = maxDiff(withRand, fromMerged);
  assert.ok(d <= 1e-4, `on the fly vs merged: max |diff| ${d}`);
  console.log(`# LoRA on the fly vs merged (float32): max |logit diff| ${d.toExponential(2)}`);
});

test('adapters are checked: wrong shapes, foreign modules, missing files, scales', () => {
  assert.deepEqual(parseLoraRef('a/b:0.25'), { dir: 'a/b', scale: 0.25 });
  assert.deepEqual(parseLoraRef('C:/x'), { dir: 'C:/x' });
  const lora = { r: 2, alpha: 2, targets: ['q'] };
  const dir = path.join(tmp, 'bad');
  writeAdapter(dir, lora, false, 3);
  // An adapter made for another rank.
  const cfgFile = path.join(dir, 'adapter_config.json');
  const cfg = JSON.parse(fs.readFileSync(cfgFile, 'utf8')) as Record<string, unknown>;
  fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, r: 3 }));
  assert.throws(
    () => loadLoraAdapters([{ dir }], base.config),
    /q_proj\.weight adapters are A \[2,32\] and B \[32,2\]; r = 3/,
  );
  fs.writeFileSync(cfgFile, JSON.stringify({ ...cfg, use_dora: true }));
  assert.throws(() => loadLoraAdapters([{ dir }], base.config), /DoRA adapters/);
  assert.throws(
    () => loadLoraAdapters([{ dir: path.join(tmp, 'nope') }], base.config),
    /adapter_config\.json: no such file/,
  );
  fs.writeFileSync(cfgFile, JSON.stringify(cfg));
  const scaled = loadLoraAdapters([{ dir, scale: 3 }], base.config).get(
    'model.transformer.blocks.0.q_proj.weight',
  )!;
  assert.equal(scaled[0]!.scale, (3 * 2) / 2);
});

test('dimoo train --lora writes a PEFT adapter that --lora loads (B starts at zero)', async () => {
  const g = readGoldenJson<{ processed: Array<{ input_ids: number[]; labels: number[] }> }>(
    'train_mmu_single.json',
  );
  const data = path.join(tmp, 'l.jsonl');
  fs.writeFileSync(data, JSON.stringify(g.processed[0]) + '\n');
  const out = path.join(tmp, 'lora-run');
  const r = await run([
    'train',
    '--model',
    base.dir,
    '--data',
    data,
    '--out',
    out,
    '--steps',
    '1',
    '--lora',
    '2',
    '--lora-targets',
    'q,down',
    '--lr',
    '1e-2',
    '--json',
    '--no-progress',
    '--threads',
    '1',
  ]);
  assert.equal(r.code, 0, r.stderr);
  const dir = path.join(out, 'checkpoint-1');
  const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8')) as Record<
    string,
    unknown
  >;
  assert.equal(cfg.peft_type, 'LORA');
  assert.equal(cfg.r, 2);
  assert.equal(cfg.lora_alpha, 2);
  assert.equal(
    fs.existsSync(path.join(dir, 'model.safetensors.index.json')),
    false,
    'adapters only',
  );
  const adapters = loadLoraAdapters([{ dir }], base.config);
  assert.deepEqual([...adapters.keys()].sort(), [
    'model.transformer.blocks.0.ff_out.weight',
    'model.transformer.blocks.0.q_proj.weight',
    'model.transformer.blocks.1.ff_out.weight',
    'model.transformer.blocks.1.q_proj.weight',
  ]);
  // One step moved B off zero, so the adapted model differs from the base.
  const d = maxDiff(await logits(base.dir), await logits(base.dir, [{ dir }]));
  assert.ok(d > 0, 'a trained adapter changes the logits');
});

test('--lora DIR[:SCALE] on an inference command reaches the model load', async () => {
  let seen: unknown;
  const stdout = new Capture();
  const stderr = new Capture();
  const ctx: CliContext = {
    stdout,
    stderr,
    loadModel: (dir, opts) => {
      seen = opts.lora;
      return FakeDimoo.load(dir, { stepMs: 1 });
    },
    signal: new AbortController().signal,
    env: {},
    home: tmp,
  };
  const args = [
    'generate',
    '--model',
    tmp,
    '--prompt',
    'x',
    '--json',
    '--lora',
    'a',
    '--lora',
    'b/c:0.5',
  ];
  const code = await runCli([...args, '--width', '32', '--height', '32', '--timesteps', '1'], ctx);
  assert.equal(code, 0, stderr.text);
  assert.deepEqual(seen, [{ dir: 'a' }, { dir: 'b/c', scale: 0.5 }]);
});
