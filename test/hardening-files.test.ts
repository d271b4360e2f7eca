/**
 * Regression tests for bad files and environments (issue 15, items 1-3, 8, 9):
 * each case ends in a clear error naming the file / tensor / cause, or a
 * correct result; never a crash, a hang, or exit 0 with wrong data.
 * Golden files are copied to a temp folder first and only the copies mutated.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DimooError } from '../src/errors.js';
import { SafetensorsFile } from '../src/checkpoint/safetensors.js';
import { openCheckpoint } from '../src/checkpoint/folder.js';
import { loadLladaConfig } from '../src/checkpoint/config.js';
import { Dimoo } from '../src/pipelines/dimoo.js';
import { writeRandomCheckpoint } from '../src/tools/random-checkpoint.js';
import { goldenCheckpointDir } from './helpers/golden.js';
import { tinyGenerateArgs } from './helpers/cli.js';

const GOLDEN = goldenCheckpointDir();
const SHARD1 = 'model-00001-of-00002.safetensors';
const SHARD2 = 'model-00002-of-00002.safetensors';
let tmp: string;

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-hardening-'));
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** A fresh copy of the golden checkpoint (vqvae included) to mutate. */
function copyCheckpoint(name: string): string {
  const dst = path.join(tmp, name);
  fs.cpSync(GOLDEN, dst, { recursive: true });
  return dst;
}

// The compiled CLI (npm test builds first): tsx would add seconds per spawn.
const CLI_JS = path.resolve('dist/src/cli/main.js');

function cli(args: string[], timeout = 120_000) {
  const r = spawnSync(process.execPath, [CLI_JS, ...args], {
    encoding: 'utf8',
    env: { ...process.env, DIMOO_DEBUG: '' },
    timeout,
    maxBuffer: 16 << 20,
  });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** Non-zero exit with one "error: ..." line that says each part, no internal-error hint. */
function assertCleanError(r: ReturnType<typeof cli>, ...parts: (string | RegExp)[]): void {
  assert.equal(r.signal, null, `killed by ${r.signal} (hang or crash)\n${r.stderr}`);
  assert.notEqual(r.code, 0, `exit 0:\n${r.stdout}`);
  assert.match(r.stderr, /^error: /m);
  assert.doesNotMatch(r.stderr, /DIMOO_DEBUG|\n\s+at /, 'looks like an internal error');
  for (const p of parts) {
    if (typeof p === 'string') assert.ok(r.stderr.includes(p), `stderr lacks "${p}":\n${r.stderr}`);
    else assert.match(r.stderr, p);
  }
}

function rejectsWith(fn: () => unknown, ...parts: (string | RegExp)[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof DimooError, `not a DimooError: ${String(e)}`);
    for (const p of parts) {
      if (typeof p === 'string') assert.ok(e.message.includes(p), `"${e.message}" lacks "${p}"`);
      else assert.match(e.message, p);
    }
    return true;
  });
}

// ------------------------------------------------------------------ 1. long prompts

describe('1. long prompts on the model thread', () => {
  test('an 18 700-character prompt (1 100 tokens) runs through the CLI (was SIGSEGV in ORT start-up)', () => {
    const out = path.join(tmp, 'long-prompt.png');
    const r = cli(tinyGenerateArgs(GOLDEN, 'aaaaaaaaaaaaaaaa '.repeat(1100), out));
    assert.equal(r.signal, null, r.stderr);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(fs.statSync(out).size > 0);
  });
});

// ------------------------------------------------------------------ 2. safetensors layout

describe('2. safetensors: tensors contiguous from 0 to the end of the file', () => {
  const mutate = (name: string, edit: (b: Buffer) => Buffer): string => {
    const p = path.join(tmp, `${name}.safetensors`);
    fs.writeFileSync(p, edit(fs.readFileSync(path.join(GOLDEN, SHARD2))));
    return p;
  };

  test('the golden shards pass', () => {
    for (const s of [SHARD1, SHARD2]) SafetensorsFile.open(path.join(GOLDEN, s));
  });

  test('header length one byte short (every tensor read askew) is refused', () => {
    // Writers pad the header JSON with spaces; one byte short still parses.
    const p = mutate('short-header', (b) => {
      const n = Number(b.readBigUInt64LE(0));
      const json = b.subarray(8, 8 + n).toString() + ' '.repeat(8);
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(json.length - 1), 0);
      return Buffer.concat([len, Buffer.from(json), b.subarray(8 + n)]);
    });
    rejectsWith(() => SafetensorsFile.open(p), p, /trailing bytes|header length/);
  });

  test('trailing bytes after the data are refused', () => {
    const p = mutate('trailing', (b) => Buffer.concat([b, Buffer.alloc(3)]));
    rejectsWith(() => SafetensorsFile.open(p), p, '3 trailing bytes');
  });

  test('a gap between tensors is refused', () => {
    const p = mutate('gap', (b) => {
      const n = Number(b.readBigUInt64LE(0));
      const header = JSON.parse(b.subarray(8, 8 + n).toString()) as Record<
        string,
        { data_offsets?: [number, number] }
      >;
      // Move every tensor after the first 2 bytes later, leaving a hole.
      const entries = Object.entries(header)
        .filter(([k]) => k !== '__metadata__')
        .sort((x, y) => x[1].data_offsets![0] - y[1].data_offsets![0]);
      const first = entries[0]![1].data_offsets!;
      for (const [, v] of entries.slice(1))
        v.data_offsets = [v.data_offsets![0] + 2, v.data_offsets![1] + 2];
      let json = JSON.stringify(header);
      json += ' '.repeat((8 - (json.length % 8)) % 8);
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(json.length), 0);
      const data = b.subarray(8 + n);
      return Buffer.concat([
        len,
        Buffer.from(json),
        data.subarray(0, first[1]),
        Buffer.alloc(2),
        data.subarray(first[1]),
      ]);
    });
    rejectsWith(() => SafetensorsFile.open(p), p, /2 unused bytes before tensor/);
  });

  test('Dimoo refuses a checkpoint whose shard has a short header (no silent 1e25 weights)', () => {
    const dir = copyCheckpoint('short-header-ckpt');
    const p = path.join(dir, SHARD2);
    const b = fs.readFileSync(p);
    const n = Number(b.readBigUInt64LE(0));
    const json = b.subarray(8, 8 + n).toString() + ' '.repeat(8);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length - 1), 0);
    fs.writeFileSync(p, Buffer.concat([len, Buffer.from(json), b.subarray(8 + n)]));
    rejectsWith(() => openCheckpoint(dir), p);
  });
});

// ------------------------------------------------------------------ 3. absurd configs

describe('3. config sizes that cannot be real', () => {
  const withConfig = (name: string, patch: Record<string, unknown>): string => {
    const dir = copyCheckpoint(name);
    const file = path.join(dir, 'config.json');
    const cfg = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
    fs.writeFileSync(file, JSON.stringify({ ...cfg, ...patch }));
    return dir;
  };

  test('n_layers 1e12 is refused at parse time (inspect grew to 4.4 GB)', () => {
    const dir = withConfig('huge-layers', { n_layers: 1_000_000_000_000 });
    rejectsWith(() => loadLladaConfig(path.join(dir, 'config.json')), 'n_layers', 'beyond');
    const r = cli(['inspect', dir], 60_000);
    assertCleanError(r, 'n_layers');
  });

  test('n_layers that does not match the weights is refused (the missing block named)', () => {
    const dir = withConfig('three-layers', { n_layers: 3 });
    rejectsWith(() => openCheckpoint(dir), 'missing tensor', 'blocks.2.');
  });

  test('a huge d_model / vocab is refused before allocating', () => {
    for (const [f, v] of [
      ['d_model', 2 ** 40],
      ['vocab_size', 2 ** 40],
      ['mlp_hidden_size', 2 ** 40],
    ] as const) {
      const dir = withConfig(`huge-${f}`, { [f]: v });
      rejectsWith(() => openCheckpoint(dir), f);
    }
  });
});

// ------------------------------------------------------------------ 8. system errors

describe('8. system errors name the file and the cause', () => {
  for (const entry of ['.', 'vqvae']) {
    test(`a weight-map entry "${entry}" (a folder) is named, not a bare EISDIR`, () => {
      const dir = copyCheckpoint(`wm-${entry === '.' ? 'dot' : entry}`);
      const idx = path.join(dir, 'model.safetensors.index.json');
      const j = JSON.parse(fs.readFileSync(idx, 'utf8')) as { weight_map: Record<string, string> };
      const first = Object.keys(j.weight_map)[0]!;
      j.weight_map[first] = entry;
      fs.writeFileSync(idx, JSON.stringify(j));
      rejectsWith(() => openCheckpoint(dir), 'it is a folder');
      assertCleanError(cli(['inspect', dir], 60_000), 'it is a folder');
    });
  }

  test('init-random under a parent that cannot hold folders fails (was an endless mkdir loop)', async () => {
    const target = `/proc/dimoo-test-${process.pid}/ck`;
    await assert.rejects(writeRandomCheckpoint(target, 'tiny'), (e: unknown) => {
      assert.ok(e instanceof DimooError, String(e));
      assert.match(e.message, /cannot create folder/);
      return true;
    });
    assertCleanError(
      cli(['init-random', '--preset', 'tiny', target], 60_000),
      'cannot create folder',
    );
  });

  test('init-random and quantize onto a read-only file system name the file and EROFS', (t) => {
    const ro = path.join(tmp, 'ro');
    fs.mkdirSync(ro);
    const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', ro], {
      encoding: 'utf8',
    });
    if (m.status !== 0) {
      t.skip(
        `cannot mount a read-only tmpfs here (${(m.stderr || m.error?.message || '').trim()})`,
      );
      return;
    }
    try {
      assertCleanError(
        cli(['init-random', '--preset', 'tiny', ro], 60_000),
        `${ro}/config.json`,
        'EROFS',
      );
      assertCleanError(
        cli(['init-random', '--preset', 'tiny', path.join(ro, 'x')], 60_000),
        'EROFS',
      );
      assertCleanError(
        cli(['quantize', GOLDEN, '--bits', '8', '--out', path.join(ro, 'q')], 60_000),
        'EROFS',
      );
    } finally {
      spawnSync('umount', [ro]);
    }
  });
});

// ------------------------------------------------------------------ 9. silently different output

describe('9. inputs that would silently change the output', () => {
  test('a tokenizer.json without the added special tokens is refused, naming them', async () => {
    const dir = copyCheckpoint('no-added-tokens');
    const file = path.join(dir, 'tokenizer.json');
    const tok = JSON.parse(fs.readFileSync(file, 'utf8')) as {
      added_tokens: { content: string }[];
    };
    tok.added_tokens = tok.added_tokens.filter(
      (a) => a.content !== '<IMAGE>' && a.content !== '<answer>',
    );
    fs.writeFileSync(file, JSON.stringify(tok));
    await assert.rejects(Dimoo.load(dir, { threads: 1 }), (e: unknown) => {
      assert.ok(e instanceof DimooError, String(e));
      assert.ok(e.message.includes(file), e.message);
      assert.match(e.message, /<IMAGE> <answer>/);
      return true;
    });
  });

  test('NaN in a weight stops generation with an error naming the step and the tensor', async () => {
    const dir = copyCheckpoint('nan-weight');
    const shard = new Map(SafetensorsFile.open(path.join(dir, SHARD2)).tensors);
    const t = shard.get('model.transformer.ln_f.weight')!;
    const fd = fs.openSync(t.file, 'r+');
    fs.writeSync(fd, Buffer.from([0xc0, 0x7f]), 0, 2, t.byteOffset + 2 * 5); // bf16 NaN at element 5
    fs.closeSync(fd);
    const m = await Dimoo.load(dir, { threads: 1 });
    try {
      await assert.rejects(
        m.generate({ prompt: 'a cat', width: 32, height: 32, timesteps: 2, cfgScale: 0 }),
        (e: unknown) => {
          assert.ok(e instanceof DimooError, String(e));
          assert.match(e.message, /step 1 of 2/);
          assert.match(e.message, /model\.transformer\.ln_f\.weight/);
          assert.match(e.message, /element 5/);
          return true;
        },
      );
      await assert.rejects(
        m.understand({
          question: 'what?',
          image: { tokens: { width: 32, height: 32, codes: [1, 2, 3, 4] } },
          genLength: 4,
          blockLength: 4,
          steps: 2,
        }),
        /non-finite logits at understanding step 1 .*ln_f/,
      );
    } finally {
      await m.dispose();
    }
  });

  test('NaN in the VQ decoder weights stops before an image is written', async () => {
    const dir = copyCheckpoint('nan-vq');
    const file = path.join(dir, 'vqvae', 'diffusion_pytorch_model.safetensors');
    const st = SafetensorsFile.open(file);
    const name = st.names.find((n) => n.startsWith('decoder.conv_out.weight'))!;
    const t = st.info(name);
    const fd = fs.openSync(file, 'r+');
    const nan = t.dtype === 'F32' ? Buffer.from([0, 0, 0xc0, 0x7f]) : Buffer.from([0x00, 0x7e]);
    if (t.dtype === 'BF16') nan.set([0xc0, 0x7f]);
    fs.writeSync(fd, nan, 0, nan.length, t.byteOffset);
    fs.closeSync(fd);
    const m = await Dimoo.load(dir, { threads: 1 });
    try {
      await assert.rejects(
        m.decodeTokens({ width: 32, height: 32, codes: [1, 2, 3, 4] }),
        (e: unknown) => {
          assert.ok(e instanceof DimooError, String(e));
          assert.ok(e.message.includes(name), e.message);
          return true;
        },
      );
    } finally {
      await m.dispose();
    }
  });

  test('encode of an empty folder exits non-zero and says so', () => {
    const empty = path.join(tmp, 'empty-folder');
    fs.mkdirSync(empty);
    const out = path.join(tmp, 'empty.jsonl');
    assertCleanError(
      cli(['encode', '--model', GOLDEN, '--image', empty, '--tokens-out', out], 60_000),
      'holds no images',
    );
    assert.ok(!fs.existsSync(out));
  });
});
