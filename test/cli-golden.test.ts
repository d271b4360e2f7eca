/**
 * The CLI end to end on real checkpoints: init-random + inspect on a temp
 * folder, and every golden case through `dimoo <task> ... --json` (token for
 * token), encode/decode on the golden VQ images, Ctrl-C on a real run, demo.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { countParameters, loadLladaConfig } from '../src/checkpoint/config.js';
import type { TokenGrid } from '../src/pipelines/types.js';
import { readTokenGridFile } from '../src/cli/token-grid.js';
import { runDimoo, spawnDimoo } from './helpers/cli.js';
import { goldenCheckpointDir } from './helpers/golden.js';
import { readCase } from './helpers/read-case.js';


let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-cli-golden-'));
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** The shipped executable (bin/dimoo.js on dist/). */
const cli = (args: string[]) => runDimoo(args);

/** Runs a command that must succeed with --json and returns the parsed result. */
function cliJson<T = Record<string, unknown>>(args: string[]): T {
  const r = cli([...args, '--json']);
  assert.equal(r.code, 0, `dimoo ${args.join(' ')} failed:\n${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

function gridFile(name: string, g: TokenGrid): string {
  const p = path.join(tmp, name);
  fs.writeFileSync(p, JSON.stringify(g));
  return p;
}

// ------------------------------------------------------------------ init-random + inspect

describe('init-random + inspect', () => {
  test('tiny preset with grouped K/V, then inspect (table and --json)', () => {
    const dir = path.join(tmp, 'rand-tiny');
    const made = cliJson<{
      parameters: number;
      nKvHeads: number;
      vq: string;
      shardFiles: string[];
    }>(['init-random', dir, '--preset', 'tiny', '--seed', '7', '--n-kv-heads', '2']);
    assert.equal(made.nKvHeads, 2);
    assert.equal(made.vq, 'tiny');
    assert.equal(made.shardFiles.length, 2);
    assert.ok(fs.existsSync(path.join(dir, 'vqvae', 'diffusion_pytorch_model.safetensors')));

    const info = cliJson<{
      config: { nKvHeads: number; nHeads: number };
      parameters: { total: number };
      dtypes: Record<string, number>;
      memory: Record<string, number>;
      hasVqvae: boolean;
      vqvae: { numVqEmbeddings: number } | null;
    }>(['inspect', dir]);
    assert.equal(info.config.nKvHeads, 2);
    assert.equal(
      info.parameters.total,
      countParameters(loadLladaConfig(path.join(dir, 'config.json'))).total,
    );
    assert.equal(info.parameters.total, made.parameters);
    assert.deepEqual(info.dtypes, { BF16: 21 });
    assert.equal(info.memory.fp32, info.parameters.total * 4);
    assert.equal(info.vqvae?.numVqEmbeddings, 8192);

    const table = cli(['inspect', dir]);
    assert.equal(table.code, 0, table.stderr);
    for (const want of [
      /n_heads \/ n_kv_heads\s+4 \/ 2 \(grouped K\/V\)/,
      /parameters\s+8\.63 M/,
      /BF16\s+21/,
      /fp32\s+32\.9 MiB/,
      /int4/,
      /vqvae\s+yes/,
    ]) {
      assert.match(table.stdout, want);
    }
  });

  test('--vq none leaves no vqvae folder; inspect says so', () => {
    const dir = path.join(tmp, 'rand-novq');
    assert.equal(cli(['init-random', dir, '--preset', 'tiny', '--vq', 'none']).code, 0);
    assert.ok(!fs.existsSync(path.join(dir, 'vqvae')));
    assert.match(cli(['inspect', dir]).stdout, /vqvae\s+none/);
  });

  test('--n-kv-heads that does not divide n_heads is refused', () => {
    const r = cli(['init-random', path.join(tmp, 'bad'), '--preset', 'tiny', '--n-kv-heads', '3']);
    assert.equal(r.code, 2, 'a usage error');
    assert.equal(r.stderr, "error: --n-kv-heads 3 must divide the preset's n_heads (4)\n");
  });

  test('inspect the golden checkpoint', () => {
    const info = cliJson<{ parameters: { total: number }; config: { dModel: number } }>([
      'inspect',
      goldenCheckpointDir(),
    ]);
    assert.equal(info.config.dModel, 32);
    assert.equal(info.parameters.total, 8_631_712);
  });
});

// ------------------------------------------------------------------ golden tasks through the CLI

interface T2iCase {
  prompt_text: string;
  height: number;
  width: number;
  params: {
    timesteps: number;
    cfg_scale: number;
    cache_ratio: number;
    warmup_ratio: number;
    refresh_interval: number;
    use_cache: boolean;
  };
  prompt_ids: number[];
  code_start: number;
  vq_codes: number[];
}

interface ImageJson {
  codes: number[];
  promptIds: number[];
  codeStart: number;
  stepMs: number[];
  width: number;
  height: number;
}

const model = goldenCheckpointDir();

describe('golden cases through the CLI', () => {
  for (const name of [
    't2i_64x48_cfg4',
    't2i_48x80_cfg4',
    't2i_64x48_cfg0',
    'mlcache_t2i_64x48_cfg4',
    'mlcache_t2i_48x80_cfg4',
  ]) {
    test(`generate ${name}`, () => {
      const c = readCase<T2iCase>(name).json;
      const p = c.params;
      const args = [
        'generate',
        '--model',
        model,
        '--prompt',
        c.prompt_text,
        '--height',
        String(c.height),
        '--width',
        String(c.width),
        '--timesteps',
        String(p.timesteps),
        '--temperature',
        '0',
        '--cfg-scale',
        String(p.cfg_scale),
      ];
      if (p.use_cache) {
        args.push(
          '--use-cache',
          '--cache-ratio',
          String(p.cache_ratio),
          '--warmup-ratio',
          String(p.warmup_ratio),
          '--refresh-interval',
          String(p.refresh_interval),
        );
      }
      const j = cliJson<ImageJson>(args);
      assert.deepEqual(j.codes, c.vq_codes);
      assert.deepEqual(j.promptIds, c.prompt_ids);
      assert.equal(j.codeStart, c.code_start);
      assert.equal(j.stepMs.length, p.timesteps);
    });
  }

  test('generate --out writes the golden decoded image; --tokens-out the golden grid', async () => {
    const cs = readCase<T2iCase>('t2i_64x48_cfg4');
    const c = cs.json;
    const out = path.join(tmp, 't2i.png');
    const grid = path.join(tmp, 't2i.json');
    const r = cli([
      'generate',
      '--model',
      model,
      '--prompt',
      c.prompt_text,
      '--height',
      '64',
      '--width',
      '48',
      '--timesteps',
      '8',
      '--temperature',
      '0',
      '--out',
      out,
      '--tokens-out',
      grid,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(readTokenGridFile(grid), { height: 64, width: 48, codes: c.vq_codes });
    const { readImage } = await import('../src/image/io.js');
    const img = await readImage(out);
    const want = cs.ints('decoded_image_uint8');
    assert.equal(img.data.length, want.length);
    let worst = 0;
    for (let i = 0; i < want.length; i++)
      worst = Math.max(worst, Math.abs(img.data[i]! - want[i]!));
    assert.ok(worst <= 1, `decoded pixels differ by up to ${worst}`);
  });

  test('edit i2i_edit_add with --image-tokens', () => {
    const c = readCase<{
      prompt_text: string;
      input_image_grids: (TokenGrid & { grid_h: number })[];
      vq_codes: number[];
      cond_input_initial: number[];
      code_start: number;
    }>('i2i_edit_add').json;
    const g = c.input_image_grids[0]!;
    const file = gridFile('edit-in.json', { height: g.height, width: g.width, codes: g.codes });
    const j = cliJson<ImageJson>([
      'edit',
      '--model',
      model,
      '--prompt',
      c.prompt_text,
      '--edit-type',
      'edit_add',
      '--image-tokens',
      file,
      '--timesteps',
      '8',
      '--temperature',
      '0',
    ]);
    assert.deepEqual(j.codes, c.vq_codes);
    // For image-to-image the conditional sequence (image included) is the prompt fed to the model.
    assert.deepEqual(j.promptIds, c.cond_input_initial);
    assert.equal(j.codeStart, c.code_start);
  });

  test('edit i2i_image_ref_transfer with two token grids', () => {
    const c = readCase<{
      prompt_text: string;
      input_image_grids: TokenGrid[];
      vq_codes: number[];
      cond_input_initial: number[];
      code_start: number;
    }>('i2i_image_ref_transfer').json;
    const [first, second] = c.input_image_grids as [TokenGrid, TokenGrid];
    // The golden case's first image is the one being restyled, the second the style reference.
    const img = gridFile('style-in.json', {
      height: first.height,
      width: first.width,
      codes: first.codes,
    });
    const ref = gridFile('style-ref.json', {
      height: second.height,
      width: second.width,
      codes: second.codes,
    });
    const j = cliJson<ImageJson>([
      'edit',
      '--model',
      model,
      '--prompt',
      c.prompt_text,
      '--edit-type',
      'image_ref_transfer',
      '--image-tokens',
      img,
      '--ref-image-tokens',
      ref,
      '--timesteps',
      '8',
      '--temperature',
      '0',
    ]);
    assert.deepEqual(j.codes, c.vq_codes);
    assert.deepEqual(j.promptIds, c.cond_input_initial);
    assert.equal(j.codeStart, c.code_start);
  });

  for (const task of ['inpaint', 'outpaint'] as const) {
    test(`${task} ${task}_96x64 with the centred rectangle`, () => {
      const c = readCase<{
        prompt_text: string;
        input_grid: { codes: number[] };
        image_size: { height: number; width: number };
        paint: { mask_h_ratio: number; mask_w_ratio: number };
        vq_codes: number[];
        prompt_ids: number[];
        code_start: number;
      }>(`${task}_96x64`).json;
      const file = gridFile(`${task}-in.json`, { ...c.image_size, codes: c.input_grid.codes });
      const j = cliJson<ImageJson>([
        task,
        '--model',
        model,
        '--prompt',
        c.prompt_text,
        '--image-tokens',
        file,
        '--mask-h-ratio',
        String(c.paint.mask_h_ratio),
        '--mask-w-ratio',
        String(c.paint.mask_w_ratio),
        '--timesteps',
        '8',
        '--temperature',
        '0',
      ]);
      assert.deepEqual(j.codes, c.vq_codes);
      assert.deepEqual(j.promptIds, c.prompt_ids);
      assert.equal(j.codeStart, c.code_start);
    });
  }

  for (const name of ['mmu_single_breaks', 'mmu_script_layout']) {
    test(`understand ${name}`, () => {
      const c = readCase<{
        question: string;
        image_grid: TokenGrid;
        answer_ids: number[];
        answer_text: string;
        initial_sequence: number[];
        code_start: number;
      }>(name).json;
      const g = c.image_grid;
      const file = gridFile(`${name}.json`, { height: g.height, width: g.width, codes: g.codes });
      const args = [
        'understand',
        '--model',
        model,
        '--prompt',
        c.question,
        '--image-tokens',
        file,
        '--gen-length',
        '16',
        '--block-length',
        '8',
        '--steps',
        '8',
        '--temperature',
        '0',
      ];
      if (name === 'mmu_script_layout') args.push('--script-layout');
      const j = cliJson<{
        text: string;
        ids: number[];
        promptIds: number[];
        codeStart: number;
        stepMs: number[];
      }>(args);
      assert.deepEqual(j.ids, c.answer_ids);
      assert.equal(j.text, c.answer_text);
      assert.deepEqual(j.promptIds, c.initial_sequence);
      assert.equal(j.codeStart, c.code_start);
      assert.equal(j.stepMs.length, 8);
    });
  }

  test('retouch from a generated grid changes only the marked cells', () => {
    const c = readCase<T2iCase>('t2i_64x48_cfg4').json;
    const grid = path.join(tmp, 'retouch-src.json');
    assert.equal(
      cli([
        'generate',
        '--model',
        model,
        '--prompt',
        c.prompt_text,
        '--height',
        '64',
        '--width',
        '48',
        '--timesteps',
        '8',
        '--temperature',
        '0',
        '--tokens-out',
        grid,
      ]).code,
      0,
    );
    // Cells (row 1, col 1) and (row 2, col 1): x 16..32, y 16..48.
    const j = cliJson<ImageJson>([
      'retouch',
      '--model',
      model,
      '--prompt',
      'a blue boat',
      '--image-tokens',
      grid,
      '--rect',
      '16,16,16,32',
      '--timesteps',
      '4',
      '--temperature',
      '1',
      '--seed',
      '3',
    ]);
    const before = readTokenGridFile(grid).codes;
    const marked = new Set([1 * 3 + 1, 2 * 3 + 1]);
    for (let i = 0; i < before.length; i++) {
      if (!marked.has(i))
        assert.equal(j.codes[i], before[i], `cell ${i} outside the rectangle changed`);
    }
  });

  test('Ctrl-C on a real run: exit 130, no output file', async () => {
    const out = path.join(tmp, 'sigint.png');
    const child = spawnDimoo(
      [
        'generate',
        '--model',
        model,
        '--prompt',
        'a cat',
        '--height',
        '512',
        '--width',
        '512',
        '--timesteps',
        '64',
        '--out',
        out,
        '--progress',
      ],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stderr = '';
    let sent = false;
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      // Interrupt once sampling is under way (the first progress line).
      if (!sent && /\d+\/64/.test(stderr)) {
        sent = true;
        child.kill('SIGINT');
      }
    });
    const code = await new Promise<number | null>((resolve) =>
      child.on('close', (c) => resolve(c)),
    );
    assert.ok(sent, `never saw progress:\n${stderr}`);
    assert.equal(code, 130, stderr);
    assert.match(stderr, /error: cancelled/);
    assert.doesNotMatch(stderr, /\n\s+at /);
    assert.ok(!fs.existsSync(out));
    assert.deepEqual(
      fs.readdirSync(tmp).filter((f) => f.includes('sigint')),
      [],
    );
  });
});

// ------------------------------------------------------------------ encode / decode on the golden VQ

describe('encode / decode through the CLI', () => {
  const vq = readCase<{
    images: Record<string, { indices: number[]; height: number; width: number }>;
  }>('vq');

  test('encode --crop none gives the golden indices; decode gives the golden pixels', async () => {
    const { writeImage, readImage } = await import('../src/image/io.js');
    for (const [name, info] of Object.entries(vq.json.images)) {
      const png = path.join(tmp, `${name}.png`);
      await writeImage(png, {
        data: Uint8Array.from(vq.ints(`${name}.image_uint8`)),
        width: info.width,
        height: info.height,
        channels: 3,
      });
      const grid = path.join(tmp, `${name}.json`);
      const r = cli([
        'encode',
        '--model',
        model,
        '--image',
        png,
        '--crop',
        'none',
        '--tokens-out',
        grid,
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(readTokenGridFile(grid), {
        height: info.height,
        width: info.width,
        codes: info.indices,
      });

      const out = path.join(tmp, `${name}-dec.png`);
      const d = cli(['decode', '--model', model, '--image-tokens', grid, '--out', out]);
      assert.equal(d.code, 0, d.stderr);
      const img = await readImage(out);
      const want = vq.ints(`${name}.decoded_uint8`);
      let worst = 0;
      for (let i = 0; i < want.length; i++)
        worst = Math.max(worst, Math.abs(img.data[i]! - want[i]!));
      assert.ok(worst <= 1, `${name}: decoded pixels differ by up to ${worst}`);
    }
  });

  test('encode a folder into JSONL, skipping a corrupt file', async () => {
    const { writeImage } = await import('../src/image/io.js');
    const dir = path.join(tmp, 'enc-folder');
    fs.mkdirSync(dir, { recursive: true });
    const [name, info] = Object.entries(vq.json.images)[0]!;
    await writeImage(path.join(dir, 'a.png'), {
      data: Uint8Array.from(vq.ints(`${name}.image_uint8`)),
      width: info.width,
      height: info.height,
      channels: 3,
    });
    fs.writeFileSync(path.join(dir, 'b.png'), Buffer.from('\x89PNG\r\n\x1a\nnot really'));
    const out = path.join(tmp, 'folder.jsonl');
    const r = cli([
      'encode',
      '--model',
      model,
      '--image',
      dir,
      '--crop',
      'none',
      '--tokens-out',
      out,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /skipped .*b\.png/);
    const recs = fs
      .readFileSync(out, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.equal(recs.length, 1);
    assert.deepEqual(recs[0].codes, info.indices);
  });
});

// ------------------------------------------------------------------ demo

describe('demo', () => {
  test('creates the checkpoint once, writes an image, says it is noise', async () => {
    const dir = path.join(tmp, 'demo-ck');
    const out = path.join(tmp, 'demo.png');
    const t0 = Date.now();
    const first = cli(['demo', '--dir', dir, '--out', out, '--size', '64']);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stderr, /creating a tiny random-weight checkpoint/);
    assert.match(first.stdout, /weights are random.*noise/);
    assert.ok(fs.statSync(out).size > 0);
    // Like every PNG the CLI writes, it says how it was made.
    const { readPngText } = await import('../src/image/png-text.js');
    assert.match(readPngText(fs.readFileSync(out)).parameters ?? '', /\nTask: generate, .*Seed: 0, Size: 64x64/);
    const again = cliJson<{ createdCheckpoint: boolean; randomWeights: boolean }>([
      'demo',
      '--dir',
      dir,
      '--out',
      out,
      '--size',
      '64',
    ]);
    assert.equal(again.createdCheckpoint, false);
    assert.equal(again.randomWeights, true);
    assert.ok(Date.now() - t0 < 60_000);
  });
});
