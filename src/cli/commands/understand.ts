/**
 * `dimoo understand`: answer a question about an image (the original's
 * inference_mmu.py), about several images, or with text only.
 */
import type { Command } from 'commander';
import { DimooError } from '../../errors.js';
import type { ImageInput, UnderstandParams } from '../../pipelines/types.js';
import {
  addCacheScheduleOptions,
  addModelOptions,
  checkVqNeeds,
  runTask,
  settleSeed,
  type ModelCommandFlags,
} from '../common.js';
import type { CliContext } from '../context.js';
import { readTokenGridFile } from '../token-grid.js';
import { LIMITS, MMU } from '../defaults.js';
import { withModel } from '../model.js';
import { choiceOpt, intOpt, numOpt } from '../options.js';
import { formatMs, writeJson } from '../output.js';

interface UnderstandFlags extends ModelCommandFlags {
  prompt: string;
  image: string[];
  imageTokens: string[];
  steps?: number;
  genLength?: number;
  blockLength?: number;
  temperature: number;
  cfgScale: number;
  remasking: 'low_confidence' | 'random';
  seed?: number;
  useCache?: true | 'dual' | 'ml-cache';
  cacheRatio: number;
  warmupRatio: number;
  refreshInterval: number;
  scriptLayout?: boolean;
  earlyStop: boolean;
}

/**
 * The images of the question: --image files or --image-tokens grids, each
 * repeatable (in the order given); none asks a text-only question.
 */
function collect(v: string, prev: string[]): string[] {
  return [...prev, v];
}

function understandImages(f: UnderstandFlags): ImageInput[] {
  if (f.image.length && f.imageTokens.length) {
    throw new DimooError('give --image files or --image-tokens grids, not both', 'E_PARAM');
  }
  if (f.image.length) return f.image.map((file) => ({ path: file }));
  return f.imageTokens.map((file) => ({ tokens: readTokenGridFile(file) }));
}

export function buildUnderstandParams(f: UnderstandFlags): UnderstandParams {
  const images = understandImages(f);
  // Lengths not given come from the library: the checkpoint's own defaults
  // (generation_config.json), else the original script's (short answers
  // shrinking the block and step counts with them). Given ones are checked
  // here so the message names the flags.
  if (f.genLength !== undefined) {
    const blockLength = f.blockLength ?? Math.min(MMU.blockLength, f.genLength);
    const steps = f.steps ?? Math.min(MMU.steps, f.genLength);
    if (f.genLength % blockLength !== 0) {
      throw new DimooError(
        `--gen-length (${f.genLength}) must be a multiple of --block-length (${blockLength})`,
        'E_PARAM',
      );
    }
    const blocks = f.genLength / blockLength;
    if (steps % blocks !== 0) {
      throw new DimooError(
        `--steps (${steps}) must be a multiple of the number of blocks, --gen-length / --block-length = ${blocks}`,
        'E_PARAM',
      );
    }
  }
  const p: UnderstandParams = {
    question: f.prompt,
    // One image keeps the single-image form (and its 1024² crop); several go as a list.
    ...(images.length === 1 ? { image: images[0]! } : images.length > 1 ? { images } : {}),
    ...(f.genLength !== undefined && { genLength: f.genLength }),
    ...(f.blockLength !== undefined && { blockLength: f.blockLength }),
    ...(f.steps !== undefined && { steps: f.steps }),
    temperature: f.temperature,
    cfgScale: f.cfgScale,
    remasking: f.remasking,
    earlyStop: f.earlyStop,
    scriptLayout: f.scriptLayout === true,
    useCache: f.useCache ?? false,
  };
  if (f.useCache === 'ml-cache') {
    Object.assign(p, {
      cacheRatio: f.cacheRatio,
      warmupRatio: f.warmupRatio,
      refreshInterval: f.refreshInterval,
    });
  }
  if (f.seed !== undefined) p.seed = f.seed;
  return p;
}

export function registerUnderstand(program: Command, ctx: CliContext): void {
  const cmd = program
    .command('understand')
    .description('answer a question about images, or a text-only question')
    .requiredOption('--prompt <text>', 'the question')
    .option(
      '--image <file>',
      'an image (png, jpeg, webp); repeat for several, in order; none: a text-only question',
      collect,
      [],
    )
    .option(
      '--image-tokens <file.json>',
      'a token grid instead of --image (repeatable)',
      collect,
      [],
    )
    .option(
      '--steps <n>',
      `denoising steps in total (default: the checkpoint's generation_config.json, else ${MMU.steps}, or --gen-length if smaller)`,
      intOpt('--steps', { min: 1, max: LIMITS.maxGenLength }),
    )
    .option(
      '--gen-length <n>',
      `answer length in tokens (default: the checkpoint's generation_config.json, else ${MMU.genLength})`,
      intOpt('--gen-length', { min: 1, max: LIMITS.maxGenLength }),
    )
    .option(
      '--block-length <n>',
      `tokens per block (default: the checkpoint's generation_config.json, else ${MMU.blockLength}, or --gen-length if smaller)`,
      intOpt('--block-length', { min: 1, max: LIMITS.maxGenLength }),
    )
    .option(
      '--temperature <t>',
      'sampling temperature (0 = greedy)',
      numOpt('--temperature', { min: 0 }),
      MMU.temperature,
    )
    .option(
      '--cfg-scale <s>',
      'guidance scale (0 = off)',
      numOpt('--cfg-scale', { min: 0 }),
      MMU.cfgScale,
    )
    .option(
      '--remasking <how>',
      'low_confidence or random',
      choiceOpt('--remasking', ['low_confidence', 'random'] as const),
      MMU.remasking,
    )
    .option('--seed <n>', 'random seed', intOpt('--seed', { min: 0 }))
    .option(
      '--use-cache [mode]',
      'reuse K/V between steps (faster; answers can differ): dual (prompt, image and other blocks, the default) or ml-cache (dual, and within a block only unsure positions are recomputed; greedy, --cfg-scale 0)',
      choiceOpt('--use-cache', ['dual', 'ml-cache'] as const),
    )
    .option(
      '--script-layout',
      "reproduce inference_mmu.py's doubled row breaks (a bug, for comparison)",
    )
    .option('--no-early-stop', 'decode every block even after </answer>');
  addCacheScheduleOptions(cmd);
  addModelOptions(cmd);
  cmd.action(async (f: UnderstandFlags) => {
    const params = buildUnderstandParams(f);
    await withModel(ctx, f, async (api) => {
      checkVqNeeds(api, {}, params.images ?? [params.image]);
      // Greedy low-confidence decoding draws no random numbers; a seed matters only otherwise.
      const sampled = (params.temperature ?? 0) > 0 || params.remasking === 'random';
      const seed = sampled ? settleSeed(ctx, params) : null;
      const { result: r, totalMs } = await runTask(ctx, f.progress, (o) =>
        api.understand(params, o),
      );
      if (f.json) {
        writeJson(ctx.stdout, {
          task: 'understand',
          seed,
          text: r.text,
          ids: r.ids,
          promptIds: r.promptIds,
          codeStart: r.codeStart,
          stepMs: r.stepMs,
          totalMs,
        });
      } else {
        ctx.stdout.write(r.text + '\n');
        ctx.stderr.write(`(${r.stepMs.length} steps in ${formatMs(totalMs)})\n`);
      }
    });
  });
}
