/**
 * Options and steps shared by the task commands: model flags, MaskGIT/ML-Cache
 * flags, image inputs (a picture or a token grid file), outputs and the run
 * itself with progress bar and Ctrl-C.
 */
import { DEFAULT_MODEL_ENV, SHIPPED_MODEL_PATH } from '../checkpoint/default-model.js';
import type { Command } from 'commander';
import { DimooError } from '../errors.js';
import type {
  DimooApi,
  ImageInput,
  ImageResult,
  ImageSamplingParams,
  RunOptions,
  TaskName,
} from '../pipelines/types.js';
import type { CliContext } from './context.js';
import { CACHE, LIMITS } from './defaults.js';
import { requireVq, withModel, type ModelFlags } from './model.js';
import { choiceOpt, intOpt, numOpt } from './options.js';
import { parseLoraRef, type LoraRef } from '../checkpoint/lora.js';

/** Repeatable --lora DIR[:SCALE]. */
export const loraOpt = (raw: string, prev: LoraRef[] | undefined): LoraRef[] => [
  ...(prev ?? []),
  parseLoraRef(raw),
];
import { checkImageOutPath, checkOutFolder, formatMs, writeJson, writeRgbImage } from './output.js';
import { imageParameters, type ImageTaskParams } from '../pipelines/parameters.js';
import { drawSeed } from '../pipelines/validate.js';
import { createProgressBar, type ProgressMode } from './progress.js';
import { readTokenGridFile, writeTokenGridFile } from './token-grid.js';

/** The flags of addModelOptions: which model to load and how, plus the output style. */
export interface ModelCommandFlags extends ModelFlags {
  json?: boolean;
  progress?: ProgressMode;
}

export function addModelOptions(cmd: Command): Command {
  return cmd
    .option(
      '--model <dir|id>',
      `checkpoint folder (official Lumina-DiMOO layout) or Hugging Face id (e.g. Alpha-VLLM/Lumina-DiMOO); default: $${DEFAULT_MODEL_ENV}, else the shipped shapes model (${SHIPPED_MODEL_PATH})`,
    )
    .option('--revision <rev>', 'Hugging Face ids: branch, tag or commit (default main)')
    .option(
      '--threads <n>',
      'CPU threads for ONNX Runtime',
      intOpt('--threads', { min: 1, max: 1024 }),
    )
    .option(
      '--device <cpu|webgpu>',
      'execution device',
      choiceOpt('--device', ['cpu', 'webgpu'] as const),
    )
    .option(
      '--precision <fp32|fp16>',
      'weight precision (fp16: float16 weights on WebGPU, float32 math)',
      choiceOpt('--precision', ['fp32', 'fp16'] as const),
    )
    .option(
      '--lora <dir[:scale]>',
      'add a LoRA adapter (PEFT folder) on the fly; repeat for several',
      loraOpt,
    )
    .option('--json', 'print a machine-readable result on stdout')
    .option('--progress', 'show a progress bar on stderr even when it is not a terminal')
    .option('--no-progress', 'never show a progress bar');
}

export interface SamplingFlags {
  timesteps: number;
  cfgScale: number;
  temperature: number;
  seed?: number;
  useCache?: boolean;
  cacheRatio: number;
  warmupRatio: number;
  refreshInterval: number;
}

export function addSamplingOptions(
  cmd: Command,
  d: { timesteps: number; cfgScale: number; temperature: number },
): Command {
  cmd
    .option(
      '--timesteps <n>',
      'MaskGIT sampling steps',
      intOpt('--timesteps', { min: 1, max: LIMITS.maxTimesteps }),
      d.timesteps,
    )
    .option('--cfg-scale <s>', 'text guidance scale', numOpt('--cfg-scale', { min: 0 }), d.cfgScale)
    .option(
      '--temperature <t>',
      'sampling temperature (0 = greedy)',
      numOpt('--temperature', { min: 0 }),
      d.temperature,
    )
    .option(
      '--seed <n>',
      'random seed (same seed, same image on any machine)',
      intOpt('--seed', { min: 0 }),
    )
    .option('--use-cache', 'ML-Cache: reuse K/V and logits of confident positions (faster)');
  return addCacheScheduleOptions(cmd);
}

/** --cache-ratio / --warmup-ratio / --refresh-interval: the ML-Cache schedule (images and understanding). */
export function addCacheScheduleOptions(cmd: Command): Command {
  return cmd
    .option(
      '--cache-ratio <r>',
      'ML-Cache: fraction of positions reused at a partial step',
      numOpt('--cache-ratio', { min: 0, max: 1 }),
      CACHE.cacheRatio,
    )
    .option(
      '--warmup-ratio <r>',
      'ML-Cache: fraction of steps run in full first',
      numOpt('--warmup-ratio', { min: 0, max: 1 }),
      CACHE.warmupRatio,
    )
    .option(
      '--refresh-interval <n>',
      'ML-Cache: a full pass every n steps after warmup',
      intOpt('--refresh-interval', { min: 1 }),
      CACHE.refreshInterval,
    );
}

export function samplingParams(f: SamplingFlags): ImageSamplingParams {
  const p: ImageSamplingParams = {
    timesteps: f.timesteps,
    cfgScale: f.cfgScale,
    temperature: f.temperature,
    useCache: f.useCache === true,
    cacheRatio: f.cacheRatio,
    warmupRatio: f.warmupRatio,
    refreshInterval: f.refreshInterval,
  };
  if (f.seed !== undefined) p.seed = f.seed;
  return p;
}

/**
 * Exactly one of a picture (`--image`) and a token grid file (`--image-tokens`).
 * The grid file is read and validated here, before the model loads.
 */
export function imageInputFrom(
  picture: string | undefined,
  tokensFile: string | undefined,
  flags: { image: string; tokens: string },
  why: string,
  required: boolean,
): ImageInput | undefined {
  if (picture !== undefined && tokensFile !== undefined) {
    throw new DimooError(`give either ${flags.image} or ${flags.tokens}, not both`, 'E_PARAM');
  }
  if (picture !== undefined) return { path: picture };
  if (tokensFile !== undefined) return { tokens: readTokenGridFile(tokensFile) };
  if (required) {
    throw new DimooError(
      `${why} needs an input image: give ${flags.image} FILE or ${flags.tokens} FILE.json`,
      'E_PARAM',
    );
  }
  return undefined;
}

export interface ImageOutFlags {
  out?: string;
  tokensOut?: string;
  json?: boolean;
}

export function addImageOutputOptions(cmd: Command): Command {
  return cmd
    .option('--out <file>', 'write the image (.png, .jpg, .webp; needs the checkpoint VQ-VAE)')
    .option('--tokens-out <file.json>', 'write the token grid {"height","width","codes"}');
}

/** Parse-time checks: a known image extension, and somewhere for the result to go. */
export function checkImageOutputs(f: ImageOutFlags): void {
  if (f.out !== undefined) checkImageOutPath('--out', f.out);
  if (f.tokensOut !== undefined) checkOutFolder('--tokens-out', f.tokensOut);
  if (f.out === undefined && f.tokensOut === undefined && !f.json) {
    throw new DimooError(
      'nothing to write: give --out FILE.png, --tokens-out FILE.json or --json',
      'E_PARAM',
    );
  }
}

/** Model-time checks: decoding --out and encoding --image need the VQ-VAE. */
export function checkVqNeeds(
  api: DimooApi,
  f: ImageOutFlags,
  inputs: (ImageInput | undefined)[],
): void {
  if (f.out !== undefined) requireVq(api, 'to write --out (--tokens-out works without one)');
  for (const input of inputs) {
    if (input && 'path' in input)
      requireVq(api, `to encode ${input.path} (give a token grid with --image-tokens instead)`);
  }
}

export interface Timed<T> {
  result: T;
  totalMs: number;
}

/** Runs one task with a progress bar and the Ctrl-C signal. */
export async function runTask<T>(
  ctx: CliContext,
  progress: ProgressMode,
  fn: (o: RunOptions) => Promise<T>,
): Promise<Timed<T>> {
  const bar = createProgressBar(ctx.stderr, progress);
  const t0 = performance.now();
  try {
    const result = await fn({ onProgress: (e) => bar.onTaskEvent(e), signal: ctx.signal });
    return { result, totalMs: performance.now() - t0 };
  } finally {
    bar.stop();
  }
}

/** The --json shape of an image task; scripts depend on these keys. */
export function imageResultJson(
  task: TaskName,
  r: ImageResult,
  totalMs: number,
  files: { out?: string; tokensOut?: string },
  seed?: number,
): Record<string, unknown> {
  return {
    task,
    seed: seed ?? null,
    width: r.width,
    height: r.height,
    gridH: r.gridH,
    gridW: r.gridW,
    codes: r.codes,
    promptIds: r.promptIds,
    codeStart: r.codeStart,
    stepMs: r.stepMs,
    totalMs,
    out: files.out ?? null,
    tokensOut: files.tokensOut ?? null,
  };
}

/**
 * The seed rule (pipelines/validate.ts drawSeed): a given --seed is used as
 * it is, otherwise one is drawn; either way it is said on stderr (and in
 * --json and the PNG), so the image can be made again.
 */
export function settleSeed(ctx: CliContext, params: { seed?: number }): number {
  if (params.seed === undefined) params.seed = drawSeed();
  ctx.stderr.write(`seed ${params.seed}\n`);
  return params.seed;
}

/** Writes --tokens-out and --out (both atomic), then the summary or JSON. */
export async function finishImageTask(
  ctx: CliContext,
  task: TaskName,
  flags: ImageOutFlags,
  timed: Timed<ImageResult>,
  made?: { parameters: string; seed: number },
): Promise<void> {
  const r = timed.result;
  if (flags.tokensOut !== undefined) {
    writeTokenGridFile(flags.tokensOut, { height: r.height, width: r.width, codes: r.codes });
  }
  if (flags.out !== undefined) {
    if (!r.image)
      throw new DimooError(`${task} returned no decoded image to write to ${flags.out}`, 'E_STATE');
    await writeRgbImage(flags.out, r.image, made?.parameters);
  }
  if (flags.json) {
    writeJson(ctx.stdout, imageResultJson(task, r, timed.totalMs, flags, made?.seed));
    return;
  }
  const what = `${r.width}x${r.height}, ${r.stepMs.length} steps in ${formatMs(timed.totalMs)}`;
  if (flags.out !== undefined) ctx.stdout.write(`wrote ${flags.out} (${what})\n`);
  if (flags.tokensOut !== undefined)
    ctx.stdout.write(`wrote ${flags.tokensOut} (token grid ${r.gridW}x${r.gridH})\n`);
}

/**
 * The body every image command shares once its parameters are built: check
 * the output paths, load the model, check the VQ-VAE is there for image
 * inputs/outputs, run with a progress bar, write the results.
 */
export async function runImageCommand<P extends ImageTaskParams>(
  ctx: CliContext,
  task: TaskName,
  flags: ModelCommandFlags & ImageOutFlags,
  params: P,
  imageInputs: (ImageInput | undefined)[],
  run: (api: DimooApi, params: P, o: RunOptions) => Promise<ImageResult>,
): Promise<void> {
  checkImageOutputs(flags);
  await withModel(ctx, flags, async (api) => {
    checkVqNeeds(api, flags, imageInputs);
    const seed = settleSeed(ctx, params);
    const timed = await runTask(ctx, flags.progress, (o) => run(api, params, o));
    const parameters = imageParameters(task, params, timed.result, api);
    await finishImageTask(ctx, task, flags, timed, { parameters, seed });
  });
}
