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

interface GenerateFlags extends ModelCommandFlags, SamplingFlags, ImageOutFlags {
  prompt: string;
  height: number;
  width: number;
}

export function buildGenerateParams(f: GenerateFlags): GenerateParams {
  return { prompt: f.prompt, height: f.height, width: f.width, ...samplingParams(f) };
}

export function registerGenerate(program: Command, ctx: CliContext): void {
  const cmd = program
    .command('generate')
    .description('text-to-image')
    .requiredOption('--prompt <text>', 'what to draw')
    .option(
      '--height <px>',
      `image height, a multiple of ${VQ_SCALE}`,
      intOpt('--height', { min: VQ_SCALE, max: LIMITS.maxSide, multipleOf: VQ_SCALE }),
      T2I.height,
    )
    .option(
      '--width <px>',
      `image width, a multiple of ${VQ_SCALE}`,
      intOpt('--width', { min: VQ_SCALE, max: LIMITS.maxSide, multipleOf: VQ_SCALE }),
      T2I.width,
    );
  addSamplingOptions(cmd, T2I);
  addImageOutputOptions(cmd);
  addModelOptions(cmd);
  cmd.action(async (f: GenerateFlags) => {
    const params = buildGenerateParams(f);
    await runImageCommand(ctx, 'generate', f, [], (api, o) => api.generate(params, o));
  });
}
