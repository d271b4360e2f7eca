/** `dimoo understand`: answer a question about an image (the original's inference_mmu.py). */
import type { Command } from 'commander';
import { DimooError } from '../../errors.js';
import type { UnderstandParams } from '../../pipelines/types.js';
import {
  addCacheScheduleOptions,
  addModelOptions,
  checkVqNeeds,
  imageInputFrom,
  runTask,
  type ModelCommandFlags,
} from '../common.js';
import type { CliContext } from '../context.js';
import { LIMITS, MMU } from '../defaults.js';
import { withModel } from '../model.js';
import { choiceOpt, intOpt, numOpt } from '../options.js';
import { formatMs, writeJson } from '../output.js';

interface UnderstandFlags extends ModelCommandFlags {
  prompt: string;
  image?: string;
  imageTokens?: string;
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

export function buildUnderstandParams(f: UnderstandFlags): UnderstandParams {
  const image = imageInputFrom(
    f.image,
    f.imageTokens,
    { image: '--image', tokens: '--image-tokens' },
    'understand',
    true,
  )!;
  // Lengths not given come from the library: the checkpoint's own defaults
  // (generation_config.json), else the original script's. Given ones are
  // checked here so the message names the flags.
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
    image,
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
    Object.assign(p, { cacheRatio: f.cacheRatio, warmupRatio: f.warmupRatio, refreshInterval: f.refreshInterval });
  }
  if (f.seed !== undefined) p.seed = f.seed;
  return p;
}

export function registerUnderstand(program: Command, ctx: CliContext): void {
  const cmd = program
    .command('understand')
    .description('answer a question about an image')
    .requiredOption('--prompt <text>', 'the question')
    .option('--image <file>', 'the image (png, jpeg, webp)')
    .option('--image-tokens <file.json>', 'its token grid instead of --image')
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
      checkVqNeeds(api, {}, [params.image]);
      const { result: r, totalMs } = await runTask(ctx, f.progress, (o) =>
        api.understand(params, o),
      );
      if (f.json) {
        writeJson(ctx.stdout, {
          task: 'understand',
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
