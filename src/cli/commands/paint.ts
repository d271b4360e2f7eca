/** `dimoo inpaint` / `dimoo outpaint`: the original's painting mode of inference_t2i.py. */
import type { Command } from 'commander';
import type { PaintParams } from '../../pipelines/types.js';
import {
  addImageOutputOptions,
  addModelOptions,
  addSamplingOptions,
  imageInputFrom,
  runImageCommand,
  samplingParams,
  type ImageOutFlags,
  type ModelCommandFlags,
  type SamplingFlags,
} from '../common.js';
import type { CliContext } from '../context.js';
import { PAINT, T2I } from '../defaults.js';
import { addMaskOptions, maskSpecFrom, type MaskFlags } from '../mask-flags.js';

interface PaintFlags extends ModelCommandFlags, SamplingFlags, ImageOutFlags, MaskFlags {
  prompt: string;
  image?: string;
  imageTokens?: string;
}

export function buildPaintParams(
  task: 'inpaint' | 'outpaint',
  f: PaintFlags,
  fromCli: (name: string) => boolean,
): PaintParams {
  const image = imageInputFrom(
    f.image,
    f.imageTokens,
    { image: '--image', tokens: '--image-tokens' },
    task,
    true,
  )!;
  const p: PaintParams = { prompt: f.prompt, image, dilate: f.dilate, ...samplingParams(f) };
  const mask = maskSpecFrom(f, fromCli, task);
  if (mask !== undefined) p.mask = mask;
  return p;
}

function registerPaint(program: Command, ctx: CliContext, task: 'inpaint' | 'outpaint'): void {
  const cmd = program
    .command(task)
    .description(
      task === 'inpaint'
        ? 'regenerate the masked region of an image'
        : 'extrapolate: regenerate everything outside the masked region',
    )
    .requiredOption('--prompt <text>', 'what the image should show')
    .option('--image <file>', 'input image (png, jpeg, webp)')
    .option('--image-tokens <file.json>', 'input token grid instead of --image');
  addMaskOptions(cmd, {
    ratio: { h: PAINT.maskHRatio, w: PAINT.maskWRatio },
    dilate: PAINT.dilate,
  });
  addSamplingOptions(cmd, T2I);
  addImageOutputOptions(cmd);
  addModelOptions(cmd);
  cmd.action(async (f: PaintFlags, c: Command) => {
    const params = buildPaintParams(task, f, (n) => c.getOptionValueSource(n) === 'cli');
    await runImageCommand(ctx, task, f, params, [params.image], (api, p, o) =>
      task === 'inpaint' ? api.inpaint(p, o) : api.outpaint(p, o),
    );
  });
}

export function registerInpaint(program: Command, ctx: CliContext): void {
  registerPaint(program, ctx, 'inpaint');
}

export function registerOutpaint(program: Command, ctx: CliContext): void {
  registerPaint(program, ctx, 'outpaint');
}
