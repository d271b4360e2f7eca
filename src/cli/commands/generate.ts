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
  height?: number;
  width?: number;
}

export function buildGenerateParams(f: GenerateFlags): GenerateParams {
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
    .requiredOption('--prompt <text>', 'what to draw')
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
    const params = buildGenerateParams(f);
    await runImageCommand(ctx, 'generate', f, [], (api, o) => api.generate(params, o));
  });
}
