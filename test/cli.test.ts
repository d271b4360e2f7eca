/**
 * CLI tests that need no model: argument errors (as a child process, to see
 * exactly what a user sees), and the commands driven in-process against a
 * fake DimooApi (--json shape, token grid files, progress, cancellation).
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { DimooError } from '../src/errors.js';
import type {
  DimooApi,
  EditParams,
  GenerateParams,
  ImageInput,
  ImageResult,
  LoadOptions,
  PaintParams,
  RetouchParams,
  RunOptions,
  TokenGrid,
  UnderstandParams,
} from '../src/pipelines/types.js';
import type { CliContext } from '../src/cli/context.js';
import { checkTokenGrid } from '../src/pipelines/token-grid.js';
import { normalizeArgv, runCli } from '../src/cli/program.js';
import { parseTokenGrid, readTokenGridFile, writeTokenGridFile } from '../src/cli/token-grid.js';
import { parseIntValue, parseNumberValue, parseRect } from '../src/cli/options.js';
import { runDimoo } from './helpers/cli.js';
import { goldenCheckpointDir } from './helpers/golden.js';
import { resolveTaskDefaults } from '../src/pipelines/validate.js';

let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-cli-'));
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

// ------------------------------------------------------------------ helpers

/** Runs the shipped executable (bin/dimoo.js) as a user would. */
function spawnCli(args: string[], env: Record<string, string> = {}) {
  return runDimoo(args, { env, timeoutMs: 60_000 });
}

/**
 * One line "error: ...", nothing that looks like a stack trace; with `json`
 * (the command line had --json) the line is {"error": {message, code, exit_code}}.
 */
function assertOneLineError(
  r: { code: number | null; stderr: string },
  json: boolean,
  ...parts: string[]
): void {
  assert.notEqual(r.code, 0, 'exit code must be non-zero');
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `expected one line on stderr, got:\n${r.stderr}`);
  assert.doesNotMatch(r.stderr, /\n\s+at |node:internal/);
  let message = lines[0]!;
  if (json) {
    const e = (
      JSON.parse(message) as { error: { message: string; code: string; exit_code: number } }
    ).error;
    assert.equal(e.exit_code, r.code);
    assert.match(e.code, /^E_[A-Z]+$/);
    message = e.message;
  } else assert.match(message, /^error: /);
  for (const p of parts) assert.ok(message.includes(p), `"${message}" lacks "${p}"`);
}

class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer | string, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString();
    cb();
  }
}

interface Call {
  method: string;
  params: unknown;
  opts?: RunOptions;
}

/** A DimooApi that records what the CLI asked for and answers with fixed tokens. */
class FakeDimoo implements DimooApi {
  calls: Call[] = [];
  disposed = 0;
  /** When set, the task waits for the signal and fails like an aborted run. */
  hangUntilAborted = false;

  constructor(
    readonly hasVq = true,
    readonly loadOpts: LoadOptions = {},
  ) {}

  private async imageTask(
    method: string,
    params: unknown,
    o: RunOptions | undefined,
    w: number,
    h: number,
  ): Promise<ImageResult> {
    this.calls.push({ method, params, opts: o });
    const gridH = h / 16;
    const gridW = w / 16;
    const steps = (params as { timesteps?: number }).timesteps ?? 3;
    for (let s = 1; s <= steps; s++) {
      o?.onProgress?.({
        task: method as 'generate',
        step: s,
        total: steps,
        masked: steps - s,
        ms: 1,
      });
      if (this.hangUntilAborted) {
        await new Promise<void>((resolve) => {
          if (o?.signal?.aborted) resolve();
          o?.signal?.addEventListener('abort', () => resolve(), { once: true });
        });
        throw new Error('aborted');
      }
    }
    const codes = Array.from({ length: gridH * gridW }, (_, i) => (i * 37) % 8192);
    const r: ImageResult = {
      width: w,
      height: h,
      gridH,
      gridW,
      codes,
      promptIds: [126080, 1, 2, 3],
      codeStart: 6,
      stepMs: Array.from({ length: steps }, () => 1.5),
    };
    if (this.hasVq) r.image = { data: new Uint8Array(w * h * 3).fill(128), width: w, height: h };
    return r;
  }

  private sizeOf(input: ImageInput): [number, number] {
    if ('tokens' in input) return [input.tokens.width, input.tokens.height];
    return [64, 48];
  }

  generate(p: GenerateParams, o?: RunOptions) {
    return this.imageTask('generate', p, o, p.width ?? 1024, p.height ?? 1024);
  }
  edit(p: EditParams, o?: RunOptions) {
    return this.imageTask('edit', p, o, ...this.sizeOf(p.image));
  }
  inpaint(p: PaintParams, o?: RunOptions) {
    return this.imageTask('inpaint', p, o, ...this.sizeOf(p.image));
  }
  outpaint(p: PaintParams, o?: RunOptions) {
    return this.imageTask('outpaint', p, o, ...this.sizeOf(p.image));
  }
  retouch(p: RetouchParams, o?: RunOptions) {
    return this.imageTask('retouch', p, o, ...this.sizeOf(p.image));
  }
  async understand(p: UnderstandParams, o?: RunOptions) {
    this.calls.push({ method: 'understand', params: p, opts: o });
    o?.onProgress?.({ task: 'understand', step: 1, total: 1, block: 0, ms: 2, text: 'a cat' });
    return {
      text: 'a cat',
      ids: [64, 65, 126355],
      promptIds: [126080, 9],
      codeStart: 20,
      stepMs: [2],
    };
  }
  async encodeImage(input: ImageInput, opts?: { crop?: unknown }): Promise<TokenGrid> {
    this.calls.push({ method: 'encodeImage', params: { input, opts } });
    const file = 'path' in input ? input.path : '';
    if (file.includes('broken'))
      throw new DimooError(`${file}: cannot decode image (bad PNG)`, 'E_IMAGE');
    return { height: 32, width: 16, codes: [1, 2] };
  }
  async decodeTokens(grid: TokenGrid) {
    this.calls.push({ method: 'decodeTokens', params: grid });
    return {
      data: new Uint8Array(grid.width * grid.height * 3),
      width: grid.width,
      height: grid.height,
    };
  }
  info() {
    return {
      dir: '/fake',
      name: 'fake',
      hasVq: this.hasVq,
      vqScale: 16,
      codebookSize: 8192,
      device: 'cpu' as const,
      defaults: resolveTaskDefaults({}),
    };
  }
  async dispose() {
    this.disposed++;
  }
}

interface InProcess {
  code: number;
  stdout: string;
  stderr: string;
  fake: FakeDimoo;
}

/** Runs a command line in-process against a fake model; `--model` may be any existing folder. */
async function runFake(
  args: string[],
  o: { hasVq?: boolean; hang?: boolean; controller?: AbortController; stderrTTY?: boolean } = {},
): Promise<InProcess> {
  const stdout = new Capture();
  const stderr = new Capture();
  if (o.stderrTTY) (stderr as unknown as { isTTY: boolean }).isTTY = true;
  let fake = new FakeDimoo(o.hasVq ?? true);
  const controller = o.controller ?? new AbortController();
  const ctx: CliContext = {
    stdout,
    stderr,
    loadModel: async (_dir, loadOpts) => {
      fake = new FakeDimoo(o.hasVq ?? true, loadOpts);
      fake.hangUntilAborted = o.hang === true;
      return fake;
    },
    signal: controller.signal,
    env: {},
    home: tmp,
  };
  const code = await runCli(args, ctx);
  return { code, stdout: stdout.text, stderr: stderr.text, fake };
}

function writeGrid(name: string, grid: TokenGrid): string {
  const p = path.join(tmp, name);
  fs.writeFileSync(p, JSON.stringify(grid));
  return p;
}

const GRID_64x48: TokenGrid = {
  height: 64,
  width: 48,
  codes: Array.from({ length: 12 }, (_, i) => i * 100),
};

// ------------------------------------------------------------------ argument errors

describe('argument errors: one line, non-zero exit, no stack trace', () => {
  const model = goldenCheckpointDir();
  const cases: [string, string[], string[]][] = [
    [
      'size not a multiple of 16',
      ['generate', '--model', model, '--prompt', 'x', '--height', '65', '--json'],
      ['--height', 'multiple of 16'],
    ],
    [
      'width not a number',
      ['generate', '--model', model, '--prompt', 'x', '--width', 'wide', '--json'],
      ['--width', 'integer'],
    ],
    [
      'timesteps < 1',
      ['generate', '--model', model, '--prompt', 'x', '--timesteps', '0', '--json'],
      ['--timesteps', '[1, 1000]'],
    ],
    [
      'understand steps < 1',
      ['understand', '--model', model, '--prompt', 'q', '--image', 'a.png', '--steps', '0'],
      ['--steps'],
    ],
    [
      'cache ratio out of range',
      [
        'generate',
        '--model',
        model,
        '--prompt',
        'x',
        '--use-cache',
        '--cache-ratio',
        '1.5',
        '--json',
      ],
      ['--cache-ratio', '[0, 1]'],
    ],
    [
      'warmup ratio out of range',
      ['generate', '--model', model, '--prompt', 'x', '--warmup-ratio', '-0.1', '--json'],
      ['--warmup-ratio'],
    ],
    [
      'unknown edit type',
      [
        'edit',
        '--model',
        model,
        '--prompt',
        'x',
        '--edit-type',
        'make_it_pop',
        '--image',
        'a.png',
        '--json',
      ],
      ['--edit-type', 'make_it_pop'],
    ],
    [
      'missing --image for edit',
      ['edit', '--model', model, '--prompt', 'x', '--edit-type', 'edit_add', '--json'],
      ['--image'],
    ],
    [
      'missing --image for inpaint',
      ['inpaint', '--model', model, '--prompt', 'x', '--json'],
      ['--image'],
    ],
    [
      'both --image and --image-tokens for understand',
      [
        'understand',
        '--model',
        model,
        '--prompt',
        'q',
        '--image',
        'a.png',
        '--image-tokens',
        'a.json',
      ],
      ['--image', '--image-tokens', 'not both'],
    ],
    [
      'missing --ref-image for style transfer',
      [
        'edit',
        '--model',
        model,
        '--prompt',
        'x',
        '--edit-type',
        'image_ref_transfer',
        '--image',
        'a.png',
        '--json',
      ],
      ['--ref-image'],
    ],
    [
      '--ref-image for another edit type',
      [
        'edit',
        '--model',
        model,
        '--prompt',
        'x',
        '--edit-type',
        'edit_add',
        '--image',
        'a.png',
        '--ref-image',
        'b.png',
        '--json',
      ],
      ['--ref-image', 'edit_add'],
    ],
    [
      'both --image and --image-tokens',
      [
        'inpaint',
        '--model',
        model,
        '--prompt',
        'x',
        '--image',
        'a.png',
        '--image-tokens',
        'g.json',
        '--json',
      ],
      ['not both'],
    ],
    [
      'retouch without regions',
      ['retouch', '--model', model, '--image', 'a.png', '--json'],
      ['--rect'],
    ],
    [
      'bad --rect',
      ['retouch', '--model', model, '--image', 'a.png', '--rect', '1,2,3', '--json'],
      ['--rect', 'x,y,w,h'],
    ],
    [
      '--mask with --mask-h-ratio',
      [
        'inpaint',
        '--model',
        model,
        '--prompt',
        'x',
        '--image',
        'a.png',
        '--mask',
        'm.png',
        '--mask-h-ratio',
        '0.5',
        '--json',
      ],
      ['only one of'],
    ],
    [
      'gen-length not a multiple of block-length',
      [
        'understand',
        '--model',
        model,
        '--prompt',
        'q',
        '--image',
        'a.png',
        '--gen-length',
        '10',
        '--block-length',
        '4',
      ],
      ['--gen-length', '--block-length'],
    ],
    [
      'steps not a multiple of blocks',
      [
        'understand',
        '--model',
        model,
        '--prompt',
        'q',
        '--image',
        'a.png',
        '--gen-length',
        '16',
        '--block-length',
        '8',
        '--steps',
        '3',
      ],
      ['--steps'],
    ],
    [
      'unknown output format',
      ['generate', '--model', model, '--prompt', 'x', '--out', 'x.bmp'],
      ['--out', '.bmp'],
    ],
    [
      'nowhere to write',
      ['generate', '--model', model, '--prompt', 'x'],
      ['--out', '--tokens-out', '--json'],
    ],
    [
      'model folder missing',
      ['generate', '--model', '/no/such/dir', '--prompt', 'x', '--json'],
      ['/no/such/dir'],
    ],
    ['unknown command', ['paint-it'], ['paint-it']],
    ['unknown option', ['inspect', model, '--colour'], ['--colour']],
    [
      'bad device',
      ['generate', '--model', model, '--prompt', 'x', '--device', 'tpu', '--json'],
      ['--device'],
    ],
    ['bad preset', ['init-random', 'x', '--preset', 'huge'], ['--preset', 'huge']],
    [
      'bad crop',
      ['encode', '--model', model, '--image', 'a.png', '--crop', '300', '--tokens-out', 'g.json'],
      ['--crop'],
    ],
  ];
  for (const [name, args, parts] of cases) {
    test(name, () => assertOneLineError(spawnCli(args), args.includes('--json'), ...parts));
  }

  test('inspect a folder that is no checkpoint', () => {
    const empty = fs.mkdtempSync(path.join(tmp, 'empty-'));
    assertOneLineError(spawnCli(['inspect', empty]), false, 'config.json');
  });

  test('malformed token grid JSON', () => {
    const bad = path.join(tmp, 'bad-grid.json');
    fs.writeFileSync(bad, '{"height": 64, "width": 48, "codes": [1, 2,');
    assertOneLineError(
      spawnCli([
        'retouch',
        '--model',
        model,
        '--image-tokens',
        bad,
        '--rect',
        '0,0,16,16',
        '--json',
      ]),
      true,
      bad,
      'not valid JSON',
    );
  });

  test('token grid with the wrong number of codes', () => {
    const bad = writeGrid('short-grid.json', { height: 64, width: 48, codes: [1, 2, 3] });
    assertOneLineError(
      spawnCli([
        'decode',
        '--model',
        model,
        '--image-tokens',
        bad,
        '--out',
        path.join(tmp, 'x.png'),
      ]),
      false,
      '12 cells',
    );
  });

  test('unexpected errors: one line plus a DIMOO_DEBUG hint; the stack only with DIMOO_DEBUG=1', async () => {
    const run = async (
      env: NodeJS.ProcessEnv,
      out = ['--tokens-out', path.join(tmp, 'u.json')],
    ) => {
      const stdout = new Capture();
      const stderr = new Capture();
      const code = await runCli(['generate', '--model', tmp, '--prompt', 'x', ...out], {
        stdout,
        stderr,
        loadModel: async () => {
          throw new TypeError('something broke\nsecond line');
        },
        signal: new AbortController().signal,
        env,
        home: tmp,
      });
      return { code, stderr: stderr.text };
    };
    const r = await run({});
    assert.equal(r.code, 1);
    assert.equal(
      r.stderr,
      'error: TypeError: something broke\nrun with DIMOO_DEBUG=1 for details\n',
    );
    const d = await run({ DIMOO_DEBUG: '1' });
    assert.match(d.stderr, /^error: TypeError: something broke\n/);
    assert.match(d.stderr, /\n\s+at /, 'DIMOO_DEBUG=1 shows the stack');
    const j = await run({}, ['--json']);
    assert.equal(j.code, 1);
    assert.deepEqual(JSON.parse(j.stderr), {
      error: { message: 'TypeError: something broke', code: 'E_INTERNAL', exit_code: 1 },
    });
  });

  test('--help and --version exit 0 on stdout', () => {
    const h = spawnCli(['generate', '--help']);
    assert.equal(h.code, 0);
    assert.match(h.stdout, /--cfg-scale <s>/);
    assert.match(h.stdout, /else 1024\)/);
    const v = spawnCli(['--version']);
    assert.equal(v.code, 0);
    assert.match(v.stdout, /^\d+\.\d+\.\d+/);
  });
});

// ------------------------------------------------------------------ option parsers

describe('option parsers', () => {
  test('integers', () => {
    assert.equal(parseIntValue('--n', '64', { min: 1 }), 64);
    assert.equal(parseIntValue('--n', ' 16 ', { multipleOf: 16 }), 16);
    for (const bad of ['', '1.5', '0x10', '1e3', 'abc', '99999999999999999999']) {
      assert.throws(() => parseIntValue('--n', bad), /--n must be/);
    }
    assert.throws(
      () => parseIntValue('--n', '0', { min: 1 }),
      /--n must be an integer >= 1, got "0"/,
    );
    assert.throws(() => parseIntValue('--n', '33', { multipleOf: 16 }), /multiple of 16/);
  });
  test('numbers', () => {
    assert.equal(parseNumberValue('--r', '0.9', { min: 0, max: 1 }), 0.9);
    assert.equal(parseNumberValue('--r', '.5'), 0.5);
    assert.equal(parseNumberValue('--r', '1e-3'), 0.001);
    for (const bad of ['', 'nan', 'Infinity', '1,5', '0x1']) {
      assert.throws(() => parseNumberValue('--r', bad), /--r must be/);
    }
    assert.throws(() => parseNumberValue('--r', '1.01', { min: 0, max: 1 }), /\[0, 1\]/);
  });
  test('rectangles', () => {
    assert.deepEqual(parseRect('--rect', '1, 2,30,40'), { x: 1, y: 2, width: 30, height: 40 });
    assert.throws(() => parseRect('--rect', '1,2,0,4'), /width and height/);
    assert.throws(() => parseRect('--rect', '-1,2,3,4'), /x,y,w,h/);
  });
});

// ------------------------------------------------------------------ token grid files

describe('token grid files', () => {
  test('round trip, atomic write leaves no temp file', () => {
    const file = path.join(tmp, 'rt', 'grid.json');
    fs.mkdirSync(path.dirname(file), { recursive: true });
    writeTokenGridFile(file, GRID_64x48);
    assert.deepEqual(readTokenGridFile(file), GRID_64x48);
    assert.deepEqual(fs.readdirSync(path.dirname(file)), ['grid.json']);
    assert.deepEqual(Object.keys(JSON.parse(fs.readFileSync(file, 'utf8'))), [
      'height',
      'width',
      'codes',
    ]);
  });
  test('validation names the problem', () => {
    const bad: [unknown, RegExp][] = [
      [[1, 2], /expected an object/],
      [{ height: 60, width: 48, codes: [] }, /"height" must be .*multiple of 16/],
      [{ height: 64, width: 0, codes: [] }, /"width"/],
      [{ height: 64, width: 48 }, /"codes" must be an array/],
      [{ height: 64, width: 48, codes: [1] }, /1 codes .* 12 cells/],
      [
        { ...GRID_64x48, codes: [...GRID_64x48.codes.slice(1), 8192] },
        /codes\[11\] .*\[0, 8192\), got 8192/,
      ],
      [{ ...GRID_64x48, codes: [...GRID_64x48.codes.slice(1), 1.5] }, /codes\[11\]/],
      [{ ...GRID_64x48, codes: [...GRID_64x48.codes.slice(1), '7'] }, /codes\[11\]/],
    ];
    for (const [v, re] of bad) {
      assert.throws(
        () => checkTokenGrid(v, 'g.json'),
        (e: unknown) =>
          e instanceof DimooError && re.test(e.message) && e.message.startsWith('g.json: '),
      );
    }
    assert.throws(() => parseTokenGrid('{', 'g.json'), /g.json: not valid JSON/);
    assert.throws(
      () => readTokenGridFile(path.join(tmp, 'none.json')),
      /none.json: cannot read token grid \(no such file\)/,
    );
  });
});

// ------------------------------------------------------------------ commands against a fake model

describe('task commands (fake model)', () => {
  const model = () => tmp; // any existing folder: the fake loader ignores it

  test('generate --json: shape, parameters passed, defaults from one place', async () => {
    const r = await runFake([
      'generate',
      '--model',
      model(),
      '--prompt',
      'a cat',
      '--height',
      '64',
      '--width',
      '48',
      '--timesteps',
      '8',
      '--temperature',
      '0',
      '--json',
      '--threads',
      '2',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(r.stdout.trimEnd().split('\n').length, 1, 'one JSON document');
    for (const k of [
      'task',
      'width',
      'height',
      'gridH',
      'gridW',
      'codes',
      'promptIds',
      'codeStart',
      'stepMs',
      'totalMs',
    ]) {
      assert.ok(k in j, `--json lacks ${k}`);
    }
    assert.equal(j.task, 'generate');
    assert.equal(j.codes.length, 12);
    assert.equal(j.stepMs.length, 8);
    const p = r.fake.calls[0]!.params as GenerateParams;
    assert.deepEqual(
      { ...p },
      {
        prompt: 'a cat',
        height: 64,
        width: 48,
        timesteps: 8,
        cfgScale: 4,
        temperature: 0,
        useCache: false,
        cacheRatio: 0.9,
        warmupRatio: 0.3,
        refreshInterval: 5,
        // No --seed: one is drawn, and said in --json and on stderr.
        seed: j.seed,
      },
    );
    assert.ok(Number.isSafeInteger(j.seed) && j.seed >= 0);
    assert.equal(r.fake.loadOpts.threads, 2);
    assert.equal(r.fake.disposed, 1);
    assert.equal(r.stderr, `seed ${j.seed}\n`, 'no progress bar when stderr is not a terminal');
  });

  test('--progress draws on stderr only; stdout stays JSON', async () => {
    const r = await runFake([
      'generate',
      '--model',
      model(),
      '--prompt',
      'x',
      '--height',
      '32',
      '--width',
      '32',
      '--timesteps',
      '3',
      '--json',
      '--progress',
    ]);
    assert.equal(r.code, 0, r.stderr);
    JSON.parse(r.stdout);
    assert.match(r.stderr, /generate \|.*\| 3\/3/);
    const quiet = await runFake(
      [
        'generate',
        '--model',
        model(),
        '--prompt',
        'x',
        '--height',
        '32',
        '--width',
        '32',
        '--json',
        '--no-progress',
      ],
      { stderrTTY: true },
    );
    assert.match(quiet.stderr, /^seed \d+\n$/);
    const tty = await runFake(
      [
        'generate',
        '--model',
        model(),
        '--prompt',
        'x',
        '--height',
        '32',
        '--width',
        '32',
        '--timesteps',
        '2',
        '--json',
      ],
      { stderrTTY: true },
    );
    assert.match(tty.stderr, /2\/2/, 'a terminal gets the bar by default');
  });

  test('--tokens-out then retouch --image-tokens continues from the same grid', async () => {
    const grid = path.join(tmp, 'gen-grid.json');
    const g = await runFake([
      'generate',
      '--model',
      model(),
      '--prompt',
      'x',
      '--height',
      '64',
      '--width',
      '48',
      '--tokens-out',
      grid,
    ]);
    assert.equal(g.code, 0, g.stderr);
    assert.match(g.stdout, /wrote .*gen-grid.json \(token grid 3x4\)/);
    const saved = readTokenGridFile(grid);
    assert.equal(saved.height, 64);
    assert.equal(saved.width, 48);

    const out = path.join(tmp, 'retouched.png');
    const r = await runFake([
      'retouch',
      '--model',
      model(),
      '--image-tokens',
      grid,
      '--rect',
      '0,0,16,16',
      '--rect',
      '16,16,32,16',
      '--dilate',
      '1',
      '--out',
      out,
      '--json',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const p = r.fake.calls[0]!.params as RetouchParams;
    assert.deepEqual(p.image, { tokens: saved });
    assert.deepEqual(p.mask, {
      kind: 'rects',
      rects: [
        { x: 0, y: 0, width: 16, height: 16 },
        { x: 16, y: 16, width: 32, height: 16 },
      ],
    });
    assert.equal(p.dilate, 1);
    assert.equal(p.prompt, undefined);
    assert.ok(fs.statSync(out).size > 0);
    assert.equal(JSON.parse(r.stdout).out, out);
  });

  test('--out needs a VQ-VAE; --tokens-out works without one', async () => {
    const noVq = await runFake(
      [
        'generate',
        '--model',
        model(),
        '--prompt',
        'x',
        '--height',
        '32',
        '--width',
        '32',
        '--out',
        path.join(tmp, 'n.png'),
      ],
      { hasVq: false },
    );
    assert.equal(noVq.code, 2, 'a usage error');
    assert.match(noVq.stderr, /^error: .*no VQ-VAE.*--tokens-out/);
    assert.equal(noVq.fake.calls.length, 0, 'refused before any compute');
    const img = await runFake(
      ['inpaint', '--model', model(), '--prompt', 'x', '--image', 'in.png', '--json'],
      { hasVq: false },
    );
    assert.match(img.stderr, /no VQ-VAE.*--image-tokens/);
    const grid = path.join(tmp, 'novq.json');
    const ok = await runFake(
      [
        'generate',
        '--model',
        model(),
        '--prompt',
        'x',
        '--height',
        '32',
        '--width',
        '32',
        '--tokens-out',
        grid,
      ],
      { hasVq: false },
    );
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(readTokenGridFile(grid).codes.length, 4);
  });

  test('edit: defaults of the i2i script, two images for style transfer', async () => {
    const g = writeGrid('in.json', GRID_64x48);
    const ref = writeGrid('ref.json', { height: 48, width: 48, codes: Array(9).fill(5) });
    const r = await runFake([
      'edit',
      '--model',
      model(),
      '--prompt',
      'x',
      '--edit-type',
      'image_ref_transfer',
      '--image-tokens',
      g,
      '--ref-image-tokens',
      ref,
      '--json',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const p = r.fake.calls[0]!.params as EditParams;
    assert.equal(p.editType, 'image_ref_transfer');
    assert.equal(p.cfgScale, 2.5);
    assert.equal(p.cfgImg, 4);
    assert.equal(p.timesteps, 64);
    assert.deepEqual(p.refImage, { tokens: { height: 48, width: 48, codes: Array(9).fill(5) } });
    const d = await runFake([
      'edit',
      '--model',
      model(),
      '--prompt',
      'x',
      '--edit-type',
      'canny_pred',
      '--image',
      'a.png',
      '--cfg-img',
      '1.5',
      '--json',
    ]);
    const dp = d.fake.calls[0]!.params as EditParams;
    assert.deepEqual(dp.image, { path: 'a.png' });
    assert.equal(dp.cfgImg, 1.5);
    assert.equal(dp.refImage, undefined);
  });

  test('inpaint / outpaint masks: default ratio, explicit ratio, png, rects', async () => {
    const g = writeGrid('paint.json', { height: 64, width: 96, codes: Array(24).fill(3) });
    const base = ['--model', model(), '--prompt', 'x', '--image-tokens', g, '--json'];
    const def = await runFake(['inpaint', ...base]);
    assert.deepEqual((def.fake.calls[0]!.params as PaintParams).mask, {
      kind: 'ratio',
      hRatio: 1,
      wRatio: 0.2,
    });
    const ratio = await runFake([
      'outpaint',
      ...base,
      '--mask-h-ratio',
      '0.5',
      '--mask-w-ratio',
      '0.5',
      '--use-cache',
    ]);
    const rp = ratio.fake.calls[0]!.params as PaintParams;
    assert.equal(ratio.fake.calls[0]!.method, 'outpaint');
    assert.deepEqual(rp.mask, { kind: 'ratio', hRatio: 0.5, wRatio: 0.5 });
    assert.equal(rp.useCache, true);
    const png = await runFake(['inpaint', ...base, '--mask', 'm.png', '--dilate', '2']);
    const pp = png.fake.calls[0]!.params as PaintParams;
    assert.deepEqual(pp.mask, { kind: 'png', path: 'm.png' });
    assert.equal(pp.dilate, 2);
    const rects = await runFake(['inpaint', ...base, '--rect', '0,0,32,32']);
    assert.deepEqual((rects.fake.calls[0]!.params as PaintParams).mask, {
      kind: 'rects',
      rects: [{ x: 0, y: 0, width: 32, height: 32 }],
    });
  });

  test('understand: text on stdout, --json shape, mmu defaults and flags', async () => {
    const g = writeGrid('mmu.json', GRID_64x48);
    const plain = await runFake([
      'understand',
      '--model',
      model(),
      '--prompt',
      'what is it?',
      '--image-tokens',
      g,
    ]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(plain.stdout, 'a cat\n');
    const p = plain.fake.calls[0]!.params as UnderstandParams;
    assert.equal(p.question, 'what is it?');
    // Lengths not given are left to the library (the checkpoint's own, else the original's).
    assert.equal(p.steps, undefined);
    assert.equal(p.genLength, undefined);
    assert.equal(p.blockLength, undefined);
    assert.equal(p.temperature, 0);
    assert.equal(p.scriptLayout, false);
    assert.equal(p.earlyStop, true);
    const j = await runFake([
      'understand',
      '--model',
      model(),
      '--prompt',
      'q',
      '--image-tokens',
      g,
      '--json',
      '--script-layout',
      '--no-early-stop',
      '--gen-length',
      '16',
      '--block-length',
      '8',
      '--steps',
      '8',
    ]);
    const out = JSON.parse(j.stdout);
    for (const k of ['text', 'ids', 'promptIds', 'codeStart', 'stepMs'])
      assert.ok(k in out, `--json lacks ${k}`);
    const jp = j.fake.calls[0]!.params as UnderstandParams;
    assert.equal(jp.scriptLayout, true);
    assert.equal(jp.earlyStop, false);
    assert.equal(jp.useCache, false);
    const base = ['understand', '--model', model(), '--prompt', 'q', '--image-tokens', g];
    const dual = await runFake([...base, '--use-cache']);
    assert.equal((dual.fake.calls[0]!.params as UnderstandParams).useCache, true);
    assert.equal((dual.fake.calls[0]!.params as UnderstandParams).cacheRatio, undefined);
    const ml = await runFake([
      ...base,
      '--use-cache',
      'ml-cache',
      '--cache-ratio',
      '0.8',
      '--refresh-interval',
      '3',
    ]);
    const mp = ml.fake.calls[0]!.params as UnderstandParams;
    assert.deepEqual(
      [mp.useCache, mp.cacheRatio, mp.warmupRatio, mp.refreshInterval],
      ['ml-cache', 0.8, 0.3, 3],
    );
    // Text only: no image at all; several: a list, in the order given; one keeps `image`.
    const textOnly = await runFake(['understand', '--model', model(), '--prompt', 'why?']);
    assert.equal(textOnly.code, 0, textOnly.stderr);
    const tp = textOnly.fake.calls[0]!.params as UnderstandParams;
    assert.equal(tp.image, undefined);
    assert.equal(tp.images, undefined);
    const g2 = writeGrid('mmu2.json', { height: 16, width: 32, codes: [7, 8] });
    const several = await runFake([...base, '--image-tokens', g2, '--image-tokens', g]);
    assert.equal(several.code, 0, several.stderr);
    const sp = several.fake.calls[0]!.params as UnderstandParams;
    assert.equal(sp.image, undefined);
    assert.deepEqual(
      sp.images!.map((x) => ('tokens' in x ? x.tokens.width : 0)),
      [GRID_64x48.width, 32, GRID_64x48.width],
    );
    const files = await runFake([
      'understand',
      '--model',
      model(),
      '--prompt',
      'q',
      '--image',
      'a.png',
      '--image_path',
      'b.png',
    ]);
    assert.deepEqual((files.fake.calls[0]!.params as UnderstandParams).images, [
      { path: 'a.png' },
      { path: 'b.png' },
    ]);
    assert.deepEqual((dual.fake.calls[0]!.params as UnderstandParams).image, {
      tokens: GRID_64x48,
    });
    const badMode = await runFake([...base, '--use-cache', 'triple']);
    assert.equal(badMode.code, 2, 'a usage error');
    assert.match(badMode.stderr, /--use-cache.*dual, ml-cache/);
  });

  test('Ctrl-C: exit 130, nothing written', async () => {
    const controller = new AbortController();
    const out = path.join(tmp, 'cancelled.png');
    const grid = path.join(tmp, 'cancelled.json');
    const run = runFake(
      [
        'generate',
        '--model',
        model(),
        '--prompt',
        'x',
        '--height',
        '32',
        '--width',
        '32',
        '--out',
        out,
        '--tokens-out',
        grid,
      ],
      { hang: true, controller },
    );
    setTimeout(() => controller.abort(), 20);
    const r = await run;
    assert.equal(r.code, 130);
    assert.match(r.stderr, /^seed \d+\nerror: cancelled\n$/);
    assert.equal(r.stdout, '');
    assert.ok(!fs.existsSync(out) && !fs.existsSync(grid));
    assert.equal(r.fake.disposed, 1, 'the model is released on cancel');
    assert.ok(r.fake.calls[0]!.opts?.signal, 'the signal reaches the library');
  });

  test('decode writes the image of a grid', async () => {
    const g = writeGrid('dec.json', GRID_64x48);
    const out = path.join(tmp, 'dec.webp');
    const r = await runFake(['decode', '--model', model(), '--image-tokens', g, '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /wrote .*dec.webp \(48x64/);
    assert.deepEqual(r.fake.calls[0]!.params, GRID_64x48);
    assert.ok(fs.statSync(out).size > 0);
  });

  test('encode: one image, a folder, a JSONL list; unreadable files skipped and reported', async () => {
    const single = path.join(tmp, 'single.json');
    fs.writeFileSync(path.join(tmp, 'one.png'), 'x');
    const one = await runFake([
      'encode',
      '--model',
      model(),
      '--image',
      path.join(tmp, 'one.png'),
      '--crop',
      '512',
      '--tokens-out',
      single,
    ]);
    assert.equal(one.code, 0, one.stderr);
    assert.deepEqual(readTokenGridFile(single), { height: 32, width: 16, codes: [1, 2] });
    assert.deepEqual((one.fake.calls[0]!.params as { opts: unknown }).opts, { crop: 512 });

    const dir = path.join(tmp, 'imgs');
    fs.mkdirSync(path.join(dir, 'sub'), { recursive: true });
    for (const f of ['b.png', 'a.jpg', 'broken.png', 'notes.txt', 'sub/c.webp'])
      fs.writeFileSync(path.join(dir, f), 'x');
    const jsonl = path.join(tmp, 'folder.jsonl');
    const r = await runFake(['encode', '--model', model(), '--image', dir, '--tokens-out', jsonl]);
    assert.equal(r.code, 0, r.stderr);
    const recs = fs
      .readFileSync(jsonl, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.deepEqual(
      recs.map((x) => path.relative(dir, x.image)),
      ['a.jpg', 'b.png', path.join('sub', 'c.webp')],
    );
    assert.deepEqual(recs[0], {
      image: path.join(dir, 'a.jpg'),
      height: 32,
      width: 16,
      codes: [1, 2],
    });
    assert.match(r.stderr, /skipped .*broken.png: .*bad PNG/);
    assert.match(r.stdout, /3 image\(s\).*1 skipped/);
    assert.deepEqual(
      fs.readdirSync(tmp).filter((f) => f.endsWith('.tmp')),
      [],
    );

    const list = path.join(dir, 'list.jsonl');
    fs.writeFileSync(
      list,
      '{"image": "b.png", "caption": "hi"}\n\nnot json\n{"image": "broken.png"}\n{"path": "x"}\n',
    );
    const lo = path.join(tmp, 'list-out.jsonl');
    const l = await runFake([
      'encode',
      '--model',
      model(),
      '--list',
      list,
      '--tokens-out',
      lo,
      '--json',
    ]);
    assert.equal(l.code, 0, l.stderr);
    const summary = JSON.parse(l.stdout);
    assert.equal(summary.encoded, 1);
    assert.equal(summary.skipped.length, 3);
    assert.deepEqual(JSON.parse(fs.readFileSync(lo, 'utf8')), {
      image: 'b.png',
      caption: 'hi',
      height: 32,
      width: 16,
      codes: [1, 2],
    });
    assert.equal(
      (l.fake.calls[0]!.params as { input: { path: string } }).input.path,
      path.join(dir, 'b.png'),
      'relative to the list file',
    );

    const none = await runFake(['encode', '--model', model(), '--list', list, '--tokens-out', lo], {
      hasVq: false,
    });
    assert.match(none.stderr, /no VQ-VAE/);
  });

  test('encode: all files unreadable is an error', async () => {
    const dir = path.join(tmp, 'allbad');
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'broken.png'), 'x');
    const r = await runFake([
      'encode',
      '--model',
      model(),
      '--image',
      dir,
      '--tokens-out',
      path.join(tmp, 'allbad.jsonl'),
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /error: no image could be encoded/);
  });
});

// ------------------------------------------------------------------ spellings and exit codes

describe("the original scripts' spellings and usage exit codes", () => {
  test('--checkpoint, --cfg_scale, --steps on image commands and --timesteps on understand are accepted', async () => {
    const model = goldenCheckpointDir();
    const g = await runFake([
      'generate',
      '--checkpoint',
      model,
      '--prompt',
      'x',
      '--cfg_scale',
      '2.5',
      '--steps',
      '7',
      '--width=32',
      '--height',
      '32',
      '--json',
    ]);
    assert.equal(g.code, 0, g.stderr);
    const p = g.fake.calls[0]!.params as GenerateParams;
    assert.deepEqual([p.cfgScale, p.timesteps, p.width], [2.5, 7, 32]);
    const grid = writeGrid('alias.json', GRID_64x48);
    const u = await runFake([
      'understand',
      '--model',
      model,
      '--image_tokens',
      grid,
      '--prompt',
      'what?',
      '--timesteps',
      '4',
      '--gen_length',
      '8',
      '--block-length',
      '4',
    ]);
    assert.equal(u.code, 0, u.stderr);
    assert.equal((u.fake.calls[0]!.params as UnderstandParams).steps, 4);
  });

  test('--image_path is --image; nothing after -- is rewritten', () => {
    assert.deepEqual(
      normalizeArgv(['edit', '--image_path', 'a.png', '--cfg_img=2', '--', '--x_y']),
      ['edit', '--image', 'a.png', '--cfg-img=2', '--', '--x_y'],
    );
  });

  test('edit: multi_view_<view> and image_ref_transfer need no --prompt; other types do', async () => {
    const grid = writeGrid('mv.json', GRID_64x48);
    const mv = await runFake([
      'edit',
      '--model',
      goldenCheckpointDir(),
      '--edit-type',
      'multi_view_left',
      '--image-tokens',
      grid,
      '--tokens-out',
      path.join(tmp, 'mv-out.json'),
      '--json',
    ]);
    assert.equal(mv.code, 0, mv.stderr);
    const p = mv.fake.calls[0]!.params as EditParams;
    assert.deepEqual([p.editType, p.prompt], ['multi_view_left', '']);
    const none = await runFake([
      'edit',
      '--model',
      goldenCheckpointDir(),
      '--edit-type',
      'edit_add',
      '--image-tokens',
      grid,
      '--json',
    ]);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /--prompt is required for --edit-type edit_add/);
  });

  test('usage errors exit 2: unknown flag, missing required flag, bad value', async () => {
    const model = goldenCheckpointDir();
    assert.equal(
      (await runFake(['generate', '--model', model, '--prompt', 'x', '--bogus'])).code,
      2,
    );
    assert.equal((await runFake(['generate', '--prompt', 'x'])).code, 2);
    assert.equal(
      (await runFake(['generate', '--model', model, '--prompt', 'x', '--width', 'wide'])).code,
      2,
    );
    assert.equal((await runFake(['--help'])).code, 0);
  });
});
