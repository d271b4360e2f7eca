/**
 * The CLI as a user runs it (bin/dimoo.js on the golden tiny checkpoint):
 * batch generation from a prompt file, the seed rule, the `parameters` text
 * chunk of written PNGs, multi_view_<view>, --json errors, output folders,
 * inspect/quantize's folder spellings and the shell completion scripts.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import type { Command } from 'commander';
import { buildProgram } from '../src/cli/program.js';
import { readPngText } from '../src/image/png-text.js';
import { readImage } from '../src/image/io.js';
import { parseParameters } from '../src/pipelines/parameters.js';
import { TextTokenizer } from '../src/models/tokenizer.js';
import { readTokenGridFile } from '../src/cli/token-grid.js';
import { runDimoo } from './helpers/cli.js';
import { goldenCheckpointDir } from './helpers/golden.js';

const model = goldenCheckpointDir();
let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-cli-batch-'));
});
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const SMALL = ['--height', '32', '--width', '32', '--timesteps', '2'];

function ok(args: string[]) {
  const r = runDimoo(args, { timeoutMs: 120_000 });
  assert.equal(r.code, 0, `dimoo ${args.join(' ')}:\n${r.stderr}`);
  return r;
}

function jsonLines(s: string): Record<string, unknown>[] {
  return s
    .trim()
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

function jsonError(r: { code: number | null; stderr: string }): {
  message: string;
  code: string;
  exit_code: number;
} {
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  return (JSON.parse(lines[0]!) as { error: { message: string; code: string; exit_code: number } })
    .error;
}

const params = (file: string) =>
  parseParameters(readPngText(fs.readFileSync(file)).parameters ?? '');

describe('generate --prompts FILE', () => {
  test('.jsonl: one image per prompt, line seeds kept, resumable, one progress bar', () => {
    const file = path.join(tmp, 'p.jsonl');
    fs.writeFileSync(
      file,
      '{"prompt": "a red fox", "seed": 7}\n\n{"prompt": "a blue boat"}\n{"prompt": ""}\n{"prompt": "a tall tree"}\n',
    );
    const dir = path.join(tmp, 'out', 'jsonl'); // created, parents too
    const args = [
      'generate',
      '--model',
      model,
      '--prompts',
      file,
      '--out-dir',
      dir,
      ...SMALL,
      '--seed',
      '100',
    ];
    const r = ok([...args, '--json', '--progress']);
    const rows = jsonLines(r.stdout);
    assert.deepEqual(
      rows.map((x) => [x.index, x.from, x.prompt, x.seed, x.skipped]),
      [
        [0, `${file}: line 1`, 'a red fox', 7, false],
        [1, `${file}: line 3`, 'a blue boat', 101, false],
        [2, `${file}: line 5`, 'a tall tree', 102, false],
      ],
    );
    assert.equal(fs.readdirSync(dir).length, 3);
    assert.equal(path.basename(rows[1]!.out as string), '1_a_blue_boat_32x32_t2_cfg4.png');
    // One bar over all images: 3 images x 2 steps.
    assert.match(r.stderr, /generate \|.*\| 6\/6 image 3\/3/);
    assert.doesNotMatch(r.stderr, /\| 2\/2 /);
    const p = params(rows[1]!.out as string);
    assert.equal(p.prompt, 'a blue boat');
    assert.equal(p.settings.Seed, '101');

    // Resume: the missing image is made again with the seed a full run gives it; the rest are skipped.
    const before = fs.readFileSync(rows[1]!.out as string);
    fs.rmSync(rows[1]!.out as string);
    const again = jsonLines(ok([...args, '--json']).stdout);
    assert.deepEqual(
      again.map((x) => [x.index, x.skipped]),
      [
        [0, true],
        [2, true],
        [1, false],
      ],
    );
    assert.ok(fs.readFileSync(rows[1]!.out as string).equals(before), 'same seed, same PNG');
    const none = ok(args);
    assert.match(none.stderr, /all 3 images .* exist/);
  });

  test(".txt and .json (the original's list of strings)", () => {
    const txt = path.join(tmp, 'p.txt');
    fs.writeFileSync(txt, 'a cat\n\n  a dog  \n');
    const json = path.join(tmp, 'p.json');
    fs.writeFileSync(json, JSON.stringify(['a cat', { prompt: 'a dog', seed: 3 }]));
    for (const [file, dir] of [
      [txt, 'txt'],
      [json, 'json'],
    ] as const) {
      const r = ok([
        'generate',
        '--model',
        model,
        '--prompts',
        file,
        '--out-dir',
        path.join(tmp, dir),
        ...SMALL,
      ]);
      assert.match(r.stdout, /wrote .*0_a_cat_32x32_t2_cfg4\.png/);
      assert.match(r.stdout, /wrote .*1_a_dog_32x32_t2_cfg4\.png/);
    }
  });

  test('bad files and flags: exit 2, naming the file and the line', () => {
    const cases: [string, string, RegExp][] = [
      [
        'bad.jsonl',
        '{"prompt": "a"}\n{"prompt": 3}\n',
        /bad\.jsonl: line 2: "prompt" must be a string/,
      ],
      ['broken.jsonl', '{"prompt": "a"}\n\n{"prompt": \n', /broken\.jsonl: line 3: not valid JSON/],
      ['noprompt.jsonl', '{"text": "a"}\n', /noprompt\.jsonl: line 1: no "prompt" field/],
      [
        'seed.jsonl',
        '{"prompt": "a", "seed": -1}\n',
        /seed\.jsonl: line 1: "seed" must be a non-negative integer/,
      ],
      ['obj.json', '{"prompt": "a"}', /obj\.json: expected an array of prompts/],
      ['item.json', '["a", 5]', /item\.json: item 2: expected a prompt string/],
      ['empty.txt', '\n \n', /empty\.txt: no prompts/],
      ['p.csv', 'a\n', /unknown prompt file type "\.csv"/],
    ];
    for (const [name, text, want] of cases) {
      const file = path.join(tmp, name);
      fs.writeFileSync(file, text);
      const r = runDimoo([
        'generate',
        '--model',
        model,
        '--prompts',
        file,
        '--out-dir',
        path.join(tmp, 'x'),
        '--json',
      ]);
      assert.equal(r.code, 2, `${name}: ${r.stderr}`);
      assert.match(jsonError(r).message, want);
    }
    const file = path.join(tmp, 'p.txt');
    for (const [extra, want] of [
      [[], /--prompts needs --out-dir/],
      [['--out-dir', tmp, '--prompt', 'x'], /--prompt TEXT or --prompts FILE, not both/],
      [['--out-dir', tmp, '--out', path.join(tmp, 'a.png')], /--out names one image/],
    ] as const) {
      const r = runDimoo(['generate', '--model', model, '--prompts', file, ...extra]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, want);
    }
  });
});

describe('seeds and the parameters text chunk', () => {
  test('no --seed: one is drawn and said; the PNG says how to make it again, and that makes it again', async () => {
    const a = path.join(tmp, 'a.png');
    const r = ok([
      'generate',
      '--model',
      model,
      '--prompt',
      'a red fox, in "snow": 2',
      ...SMALL,
      '--out',
      a,
      '--json',
    ]);
    const seed = (JSON.parse(r.stdout) as { seed: number }).seed;
    assert.ok(Number.isSafeInteger(seed));
    assert.match(r.stderr, new RegExp(`^seed ${seed}$`, 'm'));
    const p = params(a);
    assert.equal(p.prompt, 'a red fox, in "snow": 2');
    assert.equal(p.settings.Seed, String(seed));
    assert.equal(p.settings.Task, 'generate');
    assert.equal(p.settings.Model, 'dimoo-tiny');
    // Made again from what the image says.
    const [w, h] = p.settings.Size!.split('x');
    const b = path.join(tmp, 'b.png');
    ok([
      'generate',
      '--model',
      model,
      '--prompt',
      p.prompt,
      '--width',
      w!,
      '--height',
      h!,
      '--timesteps',
      p.settings.Steps!,
      '--cfg-scale',
      p.settings['CFG scale']!,
      '--temperature',
      p.settings.Temperature!,
      '--seed',
      p.settings.Seed!,
      '--out',
      b,
    ]);
    assert.deepEqual((await readImage(b)).data, (await readImage(a)).data);
  });

  test('--seed 0 is seed 0 (not "random" as in the original): two runs agree', () => {
    const runs = [1, 2].map((i) => {
      const g = path.join(tmp, `zero${i}.json`);
      const r = ok([
        'generate',
        '--model',
        model,
        '--prompt',
        'x',
        ...SMALL,
        '--seed',
        '0',
        '--tokens-out',
        g,
      ]);
      assert.match(r.stderr, /^seed 0$/m);
      return readTokenGridFile(g).codes;
    });
    assert.deepEqual(runs[0], runs[1]);
  });
});

describe('tasks of the original', () => {
  test('edit --edit-type multi_view_left needs no --prompt and asks for the left view', async () => {
    const grid = path.join(tmp, 'in.json');
    fs.writeFileSync(grid, JSON.stringify({ height: 32, width: 32, codes: [1, 2, 3, 4] }));
    const r = ok([
      'edit',
      '--model',
      model,
      '--edit-type',
      'multi_view_left',
      '--image-tokens',
      grid,
      '--timesteps',
      '2',
      '--json',
    ]);
    const tok = TextTokenizer.fromFile(path.join(model, 'tokenizer.json'));
    const text = await tok.decode((JSON.parse(r.stdout) as { promptIds: number[] }).promptIds);
    // The decoder puts spaces between tokens; the words are what matters.
    assert.ok(
      text.replace(/\s/g, '').includes('<user>Generatetheleftviewbasedontheprovidedfrontview.'),
      text,
    );
    const bad = runDimoo([
      'edit',
      '--model',
      model,
      '--edit-type',
      'multi_view_Left2',
      '--image-tokens',
      grid,
      '--json',
    ]);
    assert.equal(bad.code, 2);
    assert.match(jsonError(bad).message, /--edit-type must be one of .*multi_view_<view>/);
  });
});

describe('errors and outputs', () => {
  test('with --json, usage errors are {"error": ...} on stderr, exit 2', () => {
    const r = runDimoo(['generate', '--model', model, '--prompt', 'x', '--json', '--bogus']);
    assert.equal(r.code, 2);
    assert.deepEqual(jsonError(r), {
      message: "unknown option '--bogus'",
      code: 'E_USAGE',
      exit_code: 2,
    });
    const text = runDimoo(['generate', '--model', model, '--prompt', 'x', '--bogus']);
    assert.equal(text.code, 2);
    assert.match(text.stderr, /^error: unknown option '--bogus'/);
  });

  test('--out into a missing folder names the folder, before any work', () => {
    const missing = path.join(tmp, 'no', 'such');
    const r = runDimoo([
      'generate',
      '--model',
      model,
      '--prompt',
      'x',
      '--out',
      path.join(missing, 'x.png'),
    ]);
    assert.equal(r.code, 2);
    assert.equal(
      r.stderr,
      `error: --out ${path.join(missing, 'x.png')}: folder ${missing} does not exist (create it first)\n`,
    );
    assert.doesNotMatch(r.stderr, /\.tmp/);
  });

  test('inspect and quantize take the folder positionally or as --model', () => {
    const a = ok(['inspect', model, '--json']).stdout;
    assert.equal(ok(['inspect', '--model', model, '--json']).stdout, a);
    assert.equal(ok(['inspect', '--checkpoint', model, '--json']).stdout, a);
    const none = runDimoo(['inspect', '--json']);
    assert.equal(none.code, 2);
    assert.match(jsonError(none).message, /MODEL_DIR or --model/);
    const q = path.join(tmp, 'q8');
    const j = JSON.parse(
      ok(['quantize', '--model', model, '--bits', '8', '--out', q, '--json']).stdout,
    ) as { bits: number };
    assert.equal(j.bits, 8);
    assert.ok(fs.existsSync(path.join(q, 'config.json')));
  });
});

// ------------------------------------------------------------------ completion

class Sink extends Writable {
  override _write(_c: unknown, _e: BufferEncoding, cb: () => void): void {
    cb();
  }
}

function commandPaths(cmd: Command, prefix = ''): string[] {
  return cmd.commands.flatMap((c) => {
    const p = prefix ? `${prefix} ${c.name()}` : c.name();
    return [p, ...commandPaths(c, p)];
  });
}

const program = buildProgram({
  stdout: new Sink(),
  stderr: new Sink(),
  loadModel: () => Promise.reject(new Error('unused')),
  signal: new AbortController().signal,
  env: {},
  home: os.tmpdir(),
});

describe('shell completion', () => {
  /** What bash completes for the words typed so far (the last one being completed). */
  function complete(script: string, words: string[]): string[] {
    const file = path.join(tmp, 'dimoo.bash');
    fs.writeFileSync(script === '' ? file : file, script);
    const arr = words.map((w) => `'${w}'`).join(' ');
    const r = spawnSync(
      'bash',
      [
        '-c',
        `source '${file}'; COMP_WORDS=(${arr}); COMP_CWORD=${words.length - 1}; _dimoo_complete; printf '%s\\n' "\${COMPREPLY[@]}"`,
      ],
      { encoding: 'utf8', cwd: tmp },
    );
    assert.equal(r.status, 0, r.stderr);
    return r.stdout.split('\n').filter((l) => l !== '');
  }

  test("bash: every command and subcommand, and each command's flags", () => {
    const script = ok(['completion', 'bash']).stdout;
    const paths = commandPaths(program);
    assert.ok(paths.includes('completion') && paths.includes('lora merge'));
    const top = complete(script, ['dimoo', '']);
    for (const c of program.commands) assert.ok(top.includes(c.name()), `bash misses ${c.name()}`);
    const shapesSubs = program.commands
      .find((c) => c.name() === 'shapes')!
      .commands.map((c) => c.name());
    assert.ok(shapesSubs.includes('generate') && shapesSubs.includes('init'));
    assert.deepEqual(
      complete(script, ['dimoo', 'shapes', '']).filter((w) => !w.startsWith('-')),
      shapesSubs,
    );
    assert.deepEqual(complete(script, ['dimoo', 'generate', '--prom']), ['--prompt', '--prompts']);
    // A flag that takes a value completes file names.
    fs.writeFileSync(path.join(tmp, 'prompts-file.txt'), 'a\n');
    assert.deepEqual(complete(script, ['dimoo', 'generate', '--prompts', 'prompts-f']), [
      'prompts-file.txt',
    ]);
    for (const p of paths) {
      const cmd = p
        .split(' ')
        .reduce<Command>((c, n) => c.commands.find((x) => x.name() === n)!, program);
      const flags = complete(script, ['dimoo', ...p.split(' '), '--']);
      // Hidden options (test and tuning knobs, e.g. worker --lock-ms) are not offered, as in --help.
      for (const o of cmd.options)
        if (o.long && !o.hidden) assert.ok(flags.includes(o.long), `${p}: bash misses ${o.long}`);
    }
  });

  test('zsh and fish scripts name every command path', () => {
    const zsh = ok(['completion', 'zsh']).stdout;
    assert.match(zsh, /^#compdef dimoo\n/);
    assert.match(zsh, /bashcompinit/);
    const fish = ok(['completion', 'fish']).stdout;
    for (const p of commandPaths(program)) {
      assert.ok(zsh.includes(`"${p}"`), `zsh misses ${p}`);
      assert.ok(fish.includes(`'${p}'`), `fish misses ${p}`);
    }
    const bad = runDimoo(['completion', 'tcsh']);
    assert.equal(bad.code, 2);
  });

  test("the README's claim: model commands take --threads and --device, all but serve --json", () => {
    const has = (name: string, flag: string) =>
      program.commands.find((c) => c.name() === name)!.options.some((o) => o.long === flag);
    for (const c of [
      'generate',
      'edit',
      'inpaint',
      'outpaint',
      'retouch',
      'understand',
      'encode',
      'decode',
      'serve',
    ]) {
      assert.ok(has(c, '--threads') && has(c, '--device'), c);
      if (c !== 'serve') assert.ok(has(c, '--json'), `${c} lacks --json`);
    }
    for (const c of ['inspect', 'init-random', 'quantize', 'demo'])
      assert.ok(has(c, '--json'), `${c} lacks --json`);
  });
});
