/**
 * `dimoo train` end to end on the golden tiny checkpoint (a few steps only):
 * golden per-step loss / grad norm through the CLI, resume bit-identical to an
 * uninterrupted run, bad data lines, the saved checkpoint loads for inference.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { runCli } from '../src/cli/program.js';
import type { CliContext } from '../src/cli/context.js';
import { loadDimoo } from '../src/cli/model.js';
import { openCheckpoint } from '../src/checkpoint/folder.js';
import { readTensorFloat32 } from '../src/checkpoint/safetensors.js';
import { goldenCheckpointDir, readGoldenJson } from './helpers/golden.js';

class Capture extends Writable {
  text = '';
  onLine?: (line: string) => void;
  override _write(chunk: Buffer | string, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString();
    for (const l of chunk.toString().split('\n')) if (l.trim()) this.onLine?.(l);
    cb();
  }
}

let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-train-cli-'));
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

async function run(
  args: string[],
  controller = new AbortController(),
  onLine?: (l: string) => void,
) {
  const stdout = new Capture();
  const stderr = new Capture();
  stdout.onLine = onLine;
  const ctx: CliContext = {
    stdout,
    stderr,
    loadModel: loadDimoo,
    signal: controller.signal,
    env: {},
    home: tmp,
  };
  const code = await runCli(args, ctx);
  return { code, stdout: stdout.text, stderr: stderr.text };
}

interface GoldenTrain {
  batch: number[];
  processed: Array<{ input_ids: number[]; labels: number[] }>;
  recipe: {
    clip_grad_norm: number;
    optimizer: { lr: number; weight_decay: number; betas: number[]; eps: number };
  };
  steps: Array<{ loss: number; grad_norm: number }>;
  params_after: Record<string, { first_row_head: number[]; sum: number }>;
}

function steps(stdout: string) {
  return stdout
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((r) => r.event === 'step');
}

const model = goldenCheckpointDir();

for (const name of ['train_t2i_i2i_padded', 'train_mmu_single']) {
  test(`dimoo train reproduces golden ${name} per-step loss and grad norm`, async () => {
    const g = readGoldenJson<GoldenTrain>(`${name}.json`);
    const data = path.join(tmp, `${name}.jsonl`);
    fs.writeFileSync(data, g.batch.map((i) => JSON.stringify(g.processed[i])).join('\n') + '\n');
    const out = path.join(tmp, `run-${name}`);
    const o = g.recipe.optimizer;
    const r = await run([
      'train',
      '--model',
      model,
      '--data',
      data,
      '--out',
      out,
      '--json',
      '--no-progress',
      '--threads',
      '1',
      '--no-shuffle',
      '--batch-size',
      String(g.batch.length),
      '--steps',
      String(g.steps.length),
      '--lr',
      String(o.lr),
      '--lr-schedule',
      'constant',
      '--weight-decay',
      String(o.weight_decay),
      '--clip-grad',
      String(g.recipe.clip_grad_norm),
      '--save-dtype',
      'float32',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const got = steps(r.stdout);
    assert.equal(got.length, g.steps.length);
    got.forEach((s, i) => {
      const want = g.steps[i]!;
      const rel = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);
      assert.ok(
        rel(s.loss as number, want.loss) <= 1e-4,
        `step ${i + 1} loss ${s.loss} vs ${want.loss}`,
      );
      assert.ok(
        rel(s.gradNorm as number, want.grad_norm) <= 1e-4,
        `step ${i + 1} gradNorm ${s.gradNorm} vs ${want.grad_norm}`,
      );
      assert.equal(s.lr, o.lr);
      for (const k of ['step', 'tokensPerS', 'epoch']) assert.equal(typeof s[k], 'number');
    });
    // The saved checkpoint is the official layout and holds the trained weights.
    const dir = path.join(out, `checkpoint-${g.steps.length}`);
    const ckpt = openCheckpoint(dir);
    for (const [pname, want] of Object.entries(g.params_after)) {
      const v = readTensorFloat32(ckpt.weights.get(pname)!, 0, want.first_row_head.length);
      want.first_row_head.forEach((x, i) =>
        assert.ok(Math.abs(v[i]! - x) <= 1e-5, `${pname}[${i}] ${v[i]} vs ${x}`),
      );
    }
    assert.ok(fs.statSync(path.join(dir, 'vqvae', 'config.json')).isFile());
    assert.match(fs.readFileSync(path.join(out, 'loss-curve.svg'), 'utf8'), /^<svg/);
    assert.equal(
      fs.readFileSync(path.join(out, 'log.jsonl'), 'utf8').trim().split('\n').length,
      g.steps.length,
    );
  });
}

function sha(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

test('Ctrl-C saves a resumable checkpoint; --resume continues bit-identically', async () => {
  const g = readGoldenJson<GoldenTrain>('train_t2i_i2i_padded.json');
  // Item-free but shuffled data of 3 records in batches of 2, cosine schedule with warm-up:
  // everything the position in the run decides must come back on resume.
  const data = path.join(tmp, 'resume.jsonl');
  fs.writeFileSync(data, [0, 1, 0].map((i) => JSON.stringify(g.processed[i])).join('\n') + '\n');
  const common = [
    'train',
    '--model',
    model,
    '--data',
    data,
    '--json',
    '--no-progress',
    '--threads',
    '1',
    '--batch-size',
    '2',
    '--steps',
    '4',
    '--lr',
    '1e-3',
    '--warmup-steps',
    '1',
    '--weight-decay',
    '0.1',
    '--seed',
    '5',
  ];
  const full = await run([...common, '--out', path.join(tmp, 'full')]);
  assert.equal(full.code, 0, full.stderr);

  const controller = new AbortController();
  const part = await run([...common, '--out', path.join(tmp, 'part')], controller, (l) => {
    if ((JSON.parse(l) as { step?: number }).step === 2) controller.abort();
  });
  assert.equal(part.code, 130);
  assert.match(part.stderr, /interrupted after step 2: saved .*checkpoint-2/);
  assert.equal(steps(part.stdout).length, 2);
  const state = JSON.parse(
    fs.readFileSync(path.join(tmp, 'part', 'checkpoint-2', 'trainer_state.json'), 'utf8'),
  ) as { step: number; position: unknown; rng: { seed: number } };
  assert.equal(state.step, 2);
  assert.deepEqual(state.position, { epoch: 2, microBatch: 0, batchesPerEpoch: 1 });
  assert.equal(state.rng.seed, 5);
  const resumed = await run([
    'train',
    '--model',
    model,
    '--data',
    data,
    '--json',
    '--no-progress',
    '--threads',
    '1',
    '--out',
    path.join(tmp, 'part'),
    '--resume',
    path.join(tmp, 'part'),
  ]);
  assert.equal(resumed.code, 0, resumed.stderr);
  const a = steps(full.stdout).map((s) => [s.step, s.loss, s.gradNorm, s.lr]);
  const b = [...steps(part.stdout), ...steps(resumed.stdout)].map((s) => [
    s.step,
    s.loss,
    s.gradNorm,
    s.lr,
  ]);
  assert.deepEqual(b, a);
  for (const f of ['model-00001-of-00001.safetensors', 'optimizer.safetensors']) {
    assert.equal(
      sha(path.join(tmp, 'part', 'checkpoint-4', f)),
      sha(path.join(tmp, 'full', 'checkpoint-4', f)),
      f,
    );
  }
  // Changing what decides the data order, or how the pictures are masked, is refused.
  const resumeWith = (...flag: string[]) =>
    run([
      ...common,
      '--out',
      path.join(tmp, 'part'),
      '--resume',
      path.join(tmp, 'part', 'checkpoint-2'),
      ...flag,
    ]);
  const bad = await resumeWith('--batch-size', '1');
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /saved with batchSize = 2; continuing with 1/);
  const masks = await resumeWith('--image-full-mask', '0.5');
  assert.equal(masks.code, 1);
  assert.match(masks.stderr, /saved with imageFullMask = 0; continuing with 0.5/);
});

test('bad data lines stop before any step, naming file and line; --skip-bad counts them', async () => {
  const g = readGoldenJson<GoldenTrain>('train_t2i_i2i_padded.json');
  const data = path.join(tmp, 'bad.jsonl');
  fs.writeFileSync(
    data,
    [JSON.stringify(g.processed[0]), '{"input_ids": [1, 2], "labels": [1, -100]}'].join('\n') +
      '\n',
  );
  const out = path.join(tmp, 'bad-run');
  const r = await run([
    'train',
    '--model',
    model,
    '--data',
    data,
    '--out',
    out,
    '--steps',
    '1',
    '--json',
    '--no-progress',
  ]);
  assert.equal(r.code, 1);
  // --json: the error is one JSON line on stderr.
  const err = (JSON.parse(r.stderr) as { error: { message: string; code: string } }).error;
  assert.equal(err.code, 'E_DATA');
  assert.ok(
    err.message.startsWith(`${data}:2: labels[0] = 1 but input_ids[0] = 1 is not the mask token`),
    err.message,
  );
  assert.equal(r.stdout, '');
  assert.equal(fs.existsSync(out), false, 'nothing written');
  const s = await run([
    'train',
    '--model',
    model,
    '--data',
    data,
    '--out',
    out,
    '--steps',
    '1',
    '--json',
    '--no-progress',
    '--skip-bad',
    '--threads',
    '1',
  ]);
  assert.equal(s.code, 0, s.stderr);
  assert.match(s.stderr, /skipped .*bad\.jsonl:2: labels\[0\]/);
  assert.match(s.stderr, /training 1 records \(1 bad lines skipped\)/);
  assert.equal(steps(s.stdout).length, 1);
});

test('image files: dimoo encode --items pre-tokenizes a data set; training on it equals encoding on the fly', async () => {
  const sharp = (await import('sharp')).default;
  const d = path.join(tmp, 'imgs');
  fs.mkdirSync(d, { recursive: true });
  const px = Buffer.alloc(64 * 48 * 3);
  for (let i = 0; i < px.length; i++) px[i] = (i * 37) % 251;
  await sharp(px, { raw: { width: 64, height: 48, channels: 3 } })
    .png()
    .toFile(path.join(d, 'a.png'));
  const data = path.join(d, 'items.jsonl');
  fs.writeFileSync(
    data,
    [
      {
        system_prompt: 'Generate an image according to the text prompt.',
        user_prompt: 'a red fox',
        answer_image: 'a.png',
      },
      {
        system_prompt: 's',
        user_prompt: 'what is in the picture',
        user_image: 'a.png',
        answer_text: 'a fox',
      },
      { system_prompt: 's', user_prompt: 'x', answer_image: 'missing.png' },
    ]
      .map((r) => JSON.stringify(r))
      .join('\n') + '\n',
  );
  const encoded = path.join(tmp, 'enc', 'items.jsonl');
  fs.mkdirSync(path.dirname(encoded), { recursive: true });
  const e = await run([
    'encode',
    '--model',
    model,
    '--items',
    data,
    '--tokens-dir',
    path.join(tmp, 'enc', 'grids'),
    '--tokens-out',
    encoded,
    '--json',
    '--no-progress',
    '--threads',
    '1',
  ]);
  assert.equal(e.code, 0, e.stderr);
  const summary = JSON.parse(e.stdout) as {
    records: number;
    encoded: number;
    skipped: Array<{ where: string }>;
  };
  assert.equal(summary.records, 2);
  assert.equal(summary.encoded, 1, 'the shared image is encoded once');
  assert.deepEqual(
    summary.skipped.map((s) => s.where),
    [`${data}:3`],
  );
  const recs = fs
    .readFileSync(encoded, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, string>);
  assert.match(recs[0]!.answer_image!, /^grids\/a-[0-9a-f]{10}\.json$/);
  assert.equal(recs[1]!.user_image, recs[0]!.answer_image);

  // The same two records with the image file itself: encoded on the fly by dimoo train.
  fs.writeFileSync(data, fs.readFileSync(data, 'utf8').split('\n').slice(0, 2).join('\n') + '\n');
  const args = [
    '--model',
    model,
    '--steps',
    '1',
    '--batch-size',
    '2',
    '--json',
    '--no-progress',
    '--threads',
    '1',
    '--lr',
    '1e-3',
  ];
  const a = await run(['train', ...args, '--data', encoded, '--out', path.join(tmp, 'enc-a')]);
  const b = await run(['train', ...args, '--data', data, '--out', path.join(tmp, 'enc-b')]);
  assert.equal(a.code, 0, a.stderr);
  assert.equal(b.code, 0, b.stderr);
  const pick = (s: string) => steps(s).map((r) => [r.loss, r.gradNorm]);
  assert.deepEqual(pick(b.stdout), pick(a.stdout));
});
