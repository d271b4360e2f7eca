/** `dimoo generate`: text-to-image (the original's inference_t2i.py). */
import type { Command } from 'commander';
import type { GenerateParams } from '../../pipelines/types.js';
import {
  addImageOutputOptions,
  addModelOptions,
  addSamplingOptions,
  runImageCommand,
  samplingParams,
  type ImageOutFlags,
  type ModelCommandFlags,
  type SamplingFlags,
} from '../common.js';
import type { CliContext } from '../context.js';
import { LIMITS, T2I, VQ_SCALE } from '../defaults.js';
import { intOpt } from '../options.js';
import { runGenerateBatch } from './generate-batch.js';
import { DimooError } from '../../errors.js';

interface GenerateFlags extends ModelCommandFlags, SamplingFlags, ImageOutFlags {
  prompt?: string;
  prompts?: string;
  outDir?: string;
  height?: number;
  width?: number;
}

export function buildGenerateParams(f: GenerateFlags): GenerateParams {
  if (f.prompt === undefined)
    throw new DimooError(
      'give --prompt TEXT (or --prompts FILE for one image per line)',
      'E_PARAM',
    );
  // A size not given is the checkpoint's own (generation_config.json), else the original's.
  return {
    prompt: f.prompt,
    ...(f.height !== undefined && { height: f.height }),
    ...(f.width !== undefined && { width: f.width }),
    ...samplingParams(f),
  };
}

export function registerGenerate(program: Command, ctx: CliContext): void {
  const cmd = program
    .command('generate')
    .description('text-to-image')
    .option('--prompt <text>', 'what to draw')
    .option(
      '--prompts <file>',
      'one image per prompt of a .txt (a line each), .jsonl ({"prompt", "seed"?} a line) or .json file; skips images already in --out-dir',
    )
    .option('--out-dir <dir>', 'with --prompts: the folder the images go to (created if missing)')
    .option(
      '--height <px>',
      `image height, a multiple of ${VQ_SCALE} (default: the checkpoint's generation_config.json, else ${T2I.height})`,
      intOpt('--height', { min: VQ_SCALE, max: LIMITS.maxSide, multipleOf: VQ_SCALE }),
    )
    .option(
      '--width <px>',
      `image width, a multiple of ${VQ_SCALE} (default: the checkpoint's generation_config.json, else ${T2I.width})`,
      intOpt('--width', { min: VQ_SCALE, max: LIMITS.maxSide, multipleOf: VQ_SCALE }),
    );
  addSamplingOptions(cmd, T2I);
  addImageOutputOptions(cmd);
  addModelOptions(cmd);
  cmd.action(async (f: GenerateFlags) => {
    if (f.prompts !== undefined) return runGenerateBatch(ctx, { ...f, prompts: f.prompts });
    if (f.outDir !== undefined)
      throw new DimooError(
        '--out-dir goes with --prompts FILE; for one image give --out FILE',
        'E_PARAM',
      );
    const params = buildGenerateParams(f);
    await runImageCommand(ctx, 'generate', f, params, [], (api, p, o) => api.generate(p, o));
  });
}
