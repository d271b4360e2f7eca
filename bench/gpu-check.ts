/**
 * GPU check: WebGPU-vs-CPU parity on the golden cases, then the GPU bench rows
 * (t2i sampling steps of the `1b` and real 8B shapes on the WebGPU provider),
 * inside a time budget so it fits one short run on a lent GPU machine.
 *
 *   node dist/bench/gpu-check.js [--out DIR] [--budget-s 300] [--golden DIR]
 *        [--rows 1b:fp32,1b:fp16,1b:int4,8b:fp16,8b:int4,8b:fp32] [--sizes 256,512]
 *        [--cpu-baseline]
 *        [--cache DIR]
 *
 * Rows: PRESET:PRECISION, PRESET one of the random presets (tiny, small, 1b,
 * 8b), PRECISION fp32 (the bf16 checkpoint, linears upcast at load), fp16
 * (float16 weights, float32 compute), fp16c (float16 compute), int8 or int4
 * (a block-quantized copy written by quantizeCheckpoint).
 * A row that does not fit in the time left is skipped and says so. Results go
 * to stdout and, with --out, to DIR/gpu-check.json.
 *
 * `--prepare PRESET[:PRECISION]` only writes that checkpoint (the main run
 * starts these in child processes so checkpoints are written while the GPU
 * runs the parity part).
 */
import { spawn, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { openCheckpoint } from '../src/checkpoint/folder.js';
import { quantizeCheckpoint } from '../src/tools/quantize.js';
import { countParameters, type LladaConfig } from '../src/checkpoint/config.js';
import { probeWebGpu, type Device } from '../src/models/device.js';
import {
  isPresetName,
  writeRandomCheckpoint,
  type PresetName,
} from '../src/tools/random-checkpoint.js';
import { SafetensorsFile } from '../src/checkpoint/safetensors.js';
import { Transformer } from '../src/models/transformer.js';
import { VqModel } from '../src/models/vq-model.js';
import { Dimoo } from '../src/pipelines/dimoo.js';
import type { EditType, TokenGrid } from '../src/pipelines/types.js';

type Precision = 'fp32' | 'fp16' | 'fp16c' | 'int8' | 'int4';
const PRECISIONS: readonly Precision[] = ['fp32', 'fp16', 'fp16c', 'int8', 'int4'];
/** Rows that read the bf16 checkpoint itself (the others read a quantized copy). */
const isFloat = (p: Precision): boolean => p === 'fp32' || p === 'fp16' || p === 'fp16c';
interface Row {
  preset: PresetName;
  precision: Precision;
}

interface Args {
  out?: string;
  budgetS: number;
  golden: string;
  rows: Row[];
  sizes: number[];
  cpuBaseline: boolean;
  cache: string;
  prepare?: Row;
  skipParity: boolean;
}

function parseRow(s: string): Row {
  const [preset, precision = 'fp32'] = s.split(':');
  if (!isPresetName(preset)) throw new Error(`--rows: unknown preset "${preset}"`);
  if (!PRECISIONS.includes(precision as Precision)) {
    throw new Error(`--rows: unknown precision "${precision}" (${PRECISIONS.join(', ')})`);
  }
  return { preset, precision: precision as Precision };
}

function parseArgs(argv: string[]): Args {
  const a: Args = {
    budgetS: 300,
    golden: path.resolve(process.cwd(), '../shared/golden'),
    rows: ['1b:fp32', '1b:fp16', '1b:int4', '8b:fp16', '8b:int4', '8b:fp32'].map(parseRow),
    sizes: [256, 512],
    cpuBaseline: false,
    cache: process.env.DIMOO_BENCH_CACHE ?? path.join(os.tmpdir(), 'dimoo-gpu-bench'),
    skipParity: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const v = (): string => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${k} needs a value`);
      return x;
    };
    if (k === '--out') a.out = v();
    else if (k === '--budget-s') a.budgetS = Number(v());
    else if (k === '--golden') a.golden = path.resolve(v());
    else if (k === '--rows') a.rows = v().split(',').filter(Boolean).map(parseRow);
    else if (k === '--sizes') a.sizes = v().split(',').map(Number);
    else if (k === '--cpu-baseline') a.cpuBaseline = true;
    else if (k === '--cache') a.cache = path.resolve(v());
    else if (k === '--prepare') a.prepare = parseRow(v());
    else if (k === '--skip-parity') a.skipParity = true;
    else throw new Error(`unknown argument ${k}`);
  }
  if (!(a.budgetS > 0)) throw new Error('--budget-s must be positive');
  if (a.sizes.some((s) => !(s >= 16 && s % 16 === 0))) throw new Error('--sizes: multiples of 16');
  return a;
}

const t0 = performance.now();
const elapsedS = (): number => (performance.now() - t0) / 1000;
const log = (s: string): void => {
  process.stdout.write(`[${elapsedS().toFixed(1).padStart(6)} s] ${s}\n`);
};
const errText = (e: unknown): string =>
  ((e as Error)?.message ?? String(e)).split('\n')[0]!.slice(0, 400);

// ---- checkpoints ---------------------------------------------------------

const MARK = '.complete';

async function ensureCheckpoint(cache: string, row: Row): Promise<string> {
  const src = path.join(cache, row.preset);
  if (!fs.existsSync(path.join(src, MARK))) {
    fs.rmSync(src, { recursive: true, force: true });
    await writeRandomCheckpoint(src, row.preset, { seed: 0 });
    fs.writeFileSync(path.join(src, MARK), '');
  }
  if (isFloat(row.precision)) return src;
  const dst = path.join(cache, `${row.preset}-${row.precision}`);
  if (fs.existsSync(path.join(dst, MARK))) return dst;
  fs.rmSync(dst, { recursive: true, force: true });
  await quantizeCheckpoint(src, dst, { bits: row.precision === 'int8' ? 8 : 4, format: 'nbits' });
  fs.writeFileSync(path.join(dst, MARK), '');
  return dst;
}

const children = new Set<ReturnType<typeof spawn>>();

/** Starts `--prepare` for a row in a child process; resolves with its folder or rejects with its error. */
function prepareInBackground(args: Args, row: Row): Promise<string> {
  const self = fileURLToPath(import.meta.url);
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        ...process.execArgv,
        self,
        '--prepare',
        `${row.preset}:${row.precision}`,
        '--cache',
        args.cache,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    children.add(child);
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => {
      children.delete(child);
      const m = /^PREPARED (.+)$/m.exec(out);
      const failed = /^gpu-check: (?:Error: )?(.+)$/m.exec(out);
      if (code === 0 && m) resolve(m[1]!);
      else
        reject(
          new Error(
            failed?.[1] ?? (out.trim().split('\n').slice(-3).join(' | ') || `exit ${code}`),
          ),
        );
    });
  });
}

// ---- parity ----------------------------------------------------------------

interface Grid {
  codes: number[];
  grid_h: number;
  grid_w: number;
}
interface GoldenCase {
  prompt_text: string;
  width: number;
  height: number;
  vq_codes: unknown;
  params: Record<string, number | boolean | undefined>;
  edit_type: string;
  input_image_grids: Grid[];
  input_grid: Grid;
  paint: { mask_h_ratio: number; mask_w_ratio: number };
  question: string;
  image_grid: Grid;
  answer_ids: number[];
  answer_text: string;
}
const grid = (g: Grid): TokenGrid => ({
  height: g.grid_h * 16,
  width: g.grid_w * 16,
  codes: g.codes,
});
const flat = (v: unknown): number[] => (v as unknown[]).flat(3) as number[];
const num = (v: number | boolean | undefined): number | undefined =>
  typeof v === 'number' ? v : undefined;

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return a.length === b.length ? d : Infinity;
}

async function runParity(golden: string): Promise<Record<string, unknown>> {
  const ckptDir = path.join(golden, 'dimoo-tiny');
  const cases = path.join(golden, 'cases', 'dimoo-tiny');
  const readCase = <T>(name: string): T =>
    JSON.parse(fs.readFileSync(path.join(cases, name), 'utf8')) as T;
  const res: Record<string, unknown> = {};

  // Forward logits on the golden sequences: WebGPU vs CPU on this machine.
  const ckpt = openCheckpoint(ckptDir);
  const gpu = await Transformer.load(ckpt, { device: 'webgpu' });
  const cpu = await Transformer.load(ckpt, { device: 'cpu' });
  const V = ckpt.config.embeddingSize;
  const fj = readCase<{ sequences: Record<string, { input_ids: number[] }> }>('forward.json');
  let worst = 0;
  let argmaxRows = 0;
  let argmaxSame = 0;
  for (const seq of Object.values(fj.sequences)) {
    const ids = seq.input_ids;
    const rows = ids.map((_, i) => i);
    const g = (await gpu.forward({ ids, logitRows: rows })).logits!;
    const c = (await cpu.forward({ ids, logitRows: rows })).logits!;
    worst = Math.max(worst, maxAbsDiff(g, c));
    for (let r = 0; r < ids.length; r++) {
      let b1 = 0;
      let b2 = -1;
      let gb = 0;
      for (let j = 0; j < V; j++) {
        const x = c[r * V + j]!;
        if (x > c[r * V + b1]!) {
          b2 = b1;
          b1 = j;
        } else if (j !== b1 && (b2 < 0 || x > c[r * V + b2]!)) b2 = j;
        if (g[r * V + j]! > g[r * V + gb]!) gb = j;
      }
      if (c[r * V + b1]! - c[r * V + b2]! > 1e-3) {
        argmaxRows++;
        if (gb === b1) argmaxSame++;
      }
    }
  }
  res.logits_max_abs_diff_webgpu_vs_cpu = worst;
  res.argmax_agreement = `${argmaxSame}/${argmaxRows} rows (CPU top-1 gap > 1e-3)`;
  log(`logits max |WebGPU - CPU| ${worst.toExponential(2)}; argmax ${argmaxSame}/${argmaxRows}`);
  await gpu.dispose();
  await cpu.dispose();

  // VQ-VAE against the golden tensors.
  const vqFile = path.join(cases, 'vq.safetensors');
  if (fs.existsSync(vqFile)) {
    const vq = await VqModel.load(path.join(ckptDir, 'vqvae'), { device: 'webgpu' });
    const ref = SafetensorsFile.open(vqFile);
    let lat = 0;
    let pix = 0;
    let idxOk = true;
    for (const key of [...ref.tensors.keys()].filter((k) => k.endsWith('.preprocessed'))) {
      const name = key.slice(0, -'.preprocessed'.length);
      const shape = ref.tensors.get(key)!.shape;
      const [H, W] = [shape[2]!, shape[3]!];
      const enc = await vq.encodeFloat(ref.readFloat32(key), W, H);
      lat = Math.max(lat, maxAbsDiff(enc.latents, ref.readFloat32(`${name}.latents`)));
      const want = Array.from(ref.readInt64(`${name}.indices`), Number);
      idxOk &&= want.every((v, i) => v === enc.codes[i]);
      const dec = await vq.decodeFloat(enc.codes, H / 16, W / 16);
      pix = Math.max(pix, maxAbsDiff(dec.pixels, ref.readFloat32(`${name}.decoded_float`)));
    }
    await vq.dispose();
    res.vq = { latents_max_abs_diff: lat, indices_exact: idxOk, decoded_max_abs_diff: pix };
    log(
      `VQ-VAE: latents ${lat.toExponential(2)}, decoded ${pix.toExponential(2)}, indices exact ${idxOk}`,
    );
  }

  // Every golden sampling case through the library on WebGPU: token for token.
  const margins = readCase<{ margins: Record<string, Record<string, number>> }>(
    'index.json',
  ).margins;
  const dimoo = await Dimoo.load(ckptDir, { device: 'webgpu' });
  const results: Record<string, string> = {};
  const run = async (
    name: string,
    f: (g: GoldenCase) => Promise<{ codes?: number[]; ids?: number[] }>,
    want: (g: GoldenCase) => number[],
  ): Promise<void> => {
    const g = readCase<GoldenCase>(`${name}.json`);
    try {
      const t = performance.now();
      const r = await f(g);
      const got = r.codes ?? r.ids ?? [];
      const w = want(g);
      const same = got.length === w.length && got.every((v, i) => v === w[i]);
      const diff = same
        ? 0
        : got.filter((v, i) => v !== w[i]).length + Math.abs(got.length - w.length);
      const m = margins[name] ?? {};
      results[name] =
        `${same ? 'token-exact' : `${diff} tokens differ`} (min argmax margin ${m.argmax_gap_min?.toExponential(1)}; ${((performance.now() - t) / 1000).toFixed(1)} s)`;
    } catch (e) {
      results[name] = `error: ${errText(e)}`;
    }
    log(`${name}: ${results[name]}`);
  };
  for (const name of [
    't2i_64x48_cfg4',
    't2i_48x80_cfg4',
    't2i_64x48_cfg0',
    'mlcache_t2i_64x48_cfg4',
    'mlcache_t2i_48x80_cfg4',
  ]) {
    await run(
      name,
      (g) =>
        dimoo.generate({
          prompt: g.prompt_text,
          width: g.width,
          height: g.height,
          timesteps: num(g.params.timesteps),
          cfgScale: num(g.params.cfg_scale),
          temperature: num(g.params.temperature),
          useCache: g.params.use_cache === true,
          cacheRatio: num(g.params.cache_ratio),
          warmupRatio: num(g.params.warmup_ratio),
          refreshInterval: num(g.params.refresh_interval),
        }),
      (g) => flat(g.vq_codes),
    );
  }
  for (const name of ['i2i_edit_add', 'i2i_image_ref_transfer']) {
    await run(
      name,
      (g) =>
        dimoo.edit({
          prompt: g.prompt_text,
          editType: g.edit_type as EditType,
          image: { tokens: grid(g.input_image_grids[0]!) },
          refImage: g.input_image_grids[1] ? { tokens: grid(g.input_image_grids[1]) } : undefined,
          timesteps: num(g.params.timesteps),
          cfgScale: num(g.params.cfg_scale),
          cfgImg: num(g.params.cfg_img),
          temperature: num(g.params.temperature),
        }),
      (g) => flat(g.vq_codes),
    );
  }
  for (const [name, task] of [
    ['inpaint_96x64', 'inpaint'],
    ['outpaint_96x64', 'outpaint'],
  ] as const) {
    await run(
      name,
      (g) =>
        dimoo[task]({
          prompt: g.prompt_text,
          image: { tokens: grid(g.input_grid) },
          mask: { kind: 'ratio', hRatio: g.paint.mask_h_ratio, wRatio: g.paint.mask_w_ratio },
          timesteps: num(g.params.timesteps),
          cfgScale: num(g.params.cfg_scale),
          temperature: num(g.params.temperature),
        }),
      (g) => flat(g.vq_codes),
    );
  }
  for (const name of ['mmu_single_breaks', 'mmu_script_layout']) {
    await run(
      name,
      (g) =>
        dimoo.understand({
          question: g.question,
          image: { tokens: grid(g.image_grid) },
          genLength: num(g.params.gen_length),
          blockLength: num(g.params.block_length),
          steps: num(g.params.steps),
          temperature: num(g.params.temperature),
          earlyStop: false,
          scriptLayout: name === 'mmu_script_layout',
        }),
      (g) => g.answer_ids,
    );
  }
  await dimoo.dispose();
  res.golden_cases = results;
  res.golden_cases_token_exact = `${Object.values(results).filter((s) => s.startsWith('token-exact')).length}/${Object.keys(results).length}`;
  return res;
}

// ---- bench -----------------------------------------------------------------

const MASK = 126336;
const NEWLINE = 126084;

/** A first text-to-image step's pair of sequences (every image token masked). */
function t2iStep(size: number): {
  cond: number[];
  uncond: number[];
  imageRows: number[];
  uncondImageRows: number[];
} {
  const g = size / 16;
  const body: number[] = [126354, 126349];
  for (let r = 0; r < g; r++) {
    for (let c = 0; c < g; c++) body.push(MASK);
    body.push(NEWLINE);
  }
  body.push(126350, 126355);
  const prompt = Array.from({ length: 48 }, (_, i) => 1000 + ((i * 7919) % 90000));
  const uncondPrompt = prompt.slice(0, 12);
  const rows = (pre: number): number[] => {
    const out: number[] = [];
    body.forEach((id, i) => id === MASK && out.push(pre + i));
    return out;
  };
  return {
    cond: [...prompt, ...body],
    uncond: [...uncondPrompt, ...body],
    imageRows: rows(prompt.length),
    uncondImageRows: rows(uncondPrompt.length),
  };
}

/** Multiply-adds x2 of one forward over L tokens with B image-logit rows. */
function forwardFlops(c: LladaConfig, L: number, B: number): number {
  const p = countParameters(c);
  return (
    2 * L * p.perLayer * c.nLayers +
    4 * L * L * c.nLayers * c.nHeads * c.headDim +
    2 * B * c.dModel * 8192
  );
}

function gpuMemoryMiB(): number | undefined {
  try {
    const s = execFileSync(
      'nvidia-smi',
      ['--query-gpu=memory.used', '--format=csv,noheader,nounits'],
      { encoding: 'utf8', timeout: 5000 },
    );
    return Number(s.trim().split('\n')[0]);
  } catch {
    return undefined;
  }
}

async function benchRow(
  dir: string,
  row: Row,
  device: Device,
  sizes: number[],
  deadlineS: number,
): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = { preset: row.preset, precision: row.precision, device };
  const ckpt = openCheckpoint(dir);
  let t = performance.now();
  const precision =
    row.precision === 'fp16' ? 'fp16' : row.precision === 'fp16c' ? 'fp16-compute' : 'fp32';
  const m = await Transformer.load(ckpt, {
    device,
    precision: device === 'webgpu' ? precision : 'fp32',
  });
  out.load_s = +((performance.now() - t) / 1000).toFixed(2);
  out.gpu_mem_mib_after_load = device === 'webgpu' ? gpuMemoryMiB() : undefined;
  try {
    for (const size of sizes) {
      const s = t2iStep(size);
      const step = async (): Promise<void> => {
        await m.forward({ ids: s.cond, imageRows: s.imageRows });
        await m.forward({ ids: s.uncond, imageRows: s.uncondImageRows });
      };
      t = performance.now();
      await step(); // first run compiles shaders / warms caches
      const firstMs = performance.now() - t;
      const times: number[] = [];
      while (times.length < 5 && elapsedS() + (times.at(-1) ?? firstMs) / 1000 < deadlineS) {
        t = performance.now();
        await step();
        times.push(performance.now() - t);
        if (times.reduce((a, b) => a + b, 0) > 20_000) break;
      }
      const flops =
        forwardFlops(ckpt.config, s.cond.length, s.imageRows.length) +
        forwardFlops(ckpt.config, s.uncond.length, s.uncondImageRows.length);
      const med = times.length
        ? [...times].sort((a, b) => a - b)[Math.floor(times.length / 2)]!
        : undefined;
      out[`step_ms_${size}`] = med !== undefined ? +med.toFixed(1) : null;
      out[`first_step_ms_${size}`] = +firstMs.toFixed(1);
      out[`tflops_${size}`] =
        med !== undefined ? +(flops / (med / 1000) / 1e12).toPrecision(3) : null;
      out[`tokens_${size}`] = `${s.cond.length}+${s.uncond.length}`;
      log(
        `${row.preset}:${row.precision} ${device} ${size}x${size}: step ${med?.toFixed(1)} ms (first ${firstMs.toFixed(0)} ms), ${out[`tflops_${size}`]} TFLOP/s, runs ${times.length}`,
      );
      if (elapsedS() > deadlineS) break;
    }
    out.gpu_mem_mib_after_steps = device === 'webgpu' ? gpuMemoryMiB() : undefined;
  } finally {
    await m.dispose();
  }
  return out;
}

/** Rough seconds a row needs once its checkpoint exists (load + warm-up + a few steps). */
function rowCostS(row: Row): number {
  const base = row.preset === '8b' ? 120 : row.preset === '1b' ? 30 : 10;
  return row.precision === 'fp32' ? base : base * 0.6;
}

// ---- main ------------------------------------------------------------------

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.prepare) {
    const dir = await ensureCheckpoint(args.cache, args.prepare);
    process.stdout.write(`PREPARED ${dir}\n`);
    return;
  }
  const result: Record<string, unknown> = {
    started: new Date().toISOString(),
    node: process.version,
    onnxruntime: ort.env.versions,
    host: {
      cpus: os.cpus().length,
      cpu: os.cpus()[0]?.model,
      mem_gb: +(os.totalmem() / 1e9).toFixed(1),
    },
    budget_s: args.budgetS,
  };
  const save = (): void => {
    if (!args.out) return;
    fs.mkdirSync(args.out, { recursive: true });
    fs.writeFileSync(path.join(args.out, 'gpu-check.json'), JSON.stringify(result, null, 2) + '\n');
  };
  fs.mkdirSync(args.cache, { recursive: true });

  // Checkpoints are written in child processes while the GPU does the parity part:
  // one bf16 source per preset, then its quantized copies (which read the source).
  const wanted = new Map<string, Promise<string>>();
  const background = (p: Promise<string>): Promise<string> => {
    p.catch(() => {}); // awaited (and reported) per row
    return p;
  };
  const sources = new Map<PresetName, Promise<string>>();
  for (const preset of new Set(args.rows.map((r) => r.preset))) {
    sources.set(preset, background(prepareInBackground(args, { preset, precision: 'fp32' })));
  }
  for (const r of args.rows) {
    const key = `${r.preset}:${r.precision}`;
    const src = sources.get(r.preset)!;
    wanted.set(
      key,
      isFloat(r.precision) ? src : background(src.then(() => prepareInBackground(args, r))),
    );
  }

  const status = await probeWebGpu();
  result.webgpu = status;
  log(`WebGPU: ${status.available ? `available, shader-f16 ${status.shaderF16}` : status.reason}`);
  save();
  if (!status.available) {
    process.exitCode = 2;
    return;
  }

  if (!args.skipParity) {
    try {
      result.parity = await runParity(args.golden);
    } catch (e) {
      result.parity = { error: errText(e) };
      log(`parity failed: ${errText(e)}`);
    }
    save();
  }

  const rows: Record<string, unknown>[] = [];
  result.bench = rows;
  for (const row of args.rows) {
    const name = `${row.preset}:${row.precision}`;
    const left = args.budgetS - elapsedS();
    if (left < rowCostS(row)) {
      rows.push({
        preset: row.preset,
        precision: row.precision,
        skipped: `time: ${left.toFixed(0)} s left, needs ~${rowCostS(row)} s`,
      });
      log(`${name}: skipped (time)`);
      continue;
    }
    let dir: string;
    try {
      log(`${name}: waiting for its checkpoint`);
      dir = await Promise.race([
        wanted.get(name)!,
        new Promise<never>((_, rej) =>
          setTimeout(
            () => rej(new Error('checkpoint not ready in time')),
            Math.max(1, args.budgetS - elapsedS() - rowCostS(row)) * 1000,
          ).unref(),
        ),
      ]);
    } catch (e) {
      rows.push({
        preset: row.preset,
        precision: row.precision,
        skipped: `checkpoint: ${errText(e)}`,
      });
      log(`${name}: no checkpoint: ${errText(e)}`);
      save();
      continue;
    }
    try {
      rows.push(
        await benchRow(
          dir,
          row,
          'webgpu',
          row.preset === '8b' ? args.sizes.slice(-1) : args.sizes,
          args.budgetS - 5,
        ),
      );
    } catch (e) {
      rows.push({
        preset: row.preset,
        precision: row.precision,
        device: 'webgpu',
        error: errText(e),
      });
      log(`${name} on WebGPU failed: ${errText(e)}`);
    }
    if (
      args.cpuBaseline &&
      row.preset !== '8b' &&
      (row.precision === 'fp32' || !isFloat(row.precision)) &&
      args.budgetS - elapsedS() > rowCostS(row) * 2
    ) {
      try {
        rows.push(await benchRow(dir, row, 'cpu', args.sizes.slice(0, 1), args.budgetS - 5));
      } catch (e) {
        rows.push({
          preset: row.preset,
          precision: row.precision,
          device: 'cpu',
          error: errText(e),
        });
      }
    }
    save();
  }
  result.finished_s = +elapsedS().toFixed(1);
  save();
  log('done');
  process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  // Background writers still running (rows skipped for time) must not keep the run alive.
  for (const c of children) c.kill('SIGKILL');
  process.exit(process.exitCode ?? 0);
}

main().catch((e) => {
  process.stderr.write(`gpu-check: ${(e as Error).stack ?? String(e)}\n`);
  for (const c of children) c.kill('SIGKILL');
  process.exit(1);
});
