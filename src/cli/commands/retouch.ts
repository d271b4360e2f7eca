/**
 * `dimoo retouch`: re-mask the marked cells of an existing token grid and
 * resample only those; every other cell stays as it was, bit for bit.
 */
import type { Command } from 'commander';
import { DimooError } from '../../errors.js';
import type { RetouchParams } from '../../pipelines/types.js';
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
import { RETOUCH } from '../defaults.js';
import { addMaskOptions, maskSpecFrom, type MaskFlags } from '../mask-flags.js';

interface RetouchFlags extends ModelCommandFlags, SamplingFlags, ImageOutFlags, MaskFlags {
  prompt?: string;
  image?: string;
  imageTokens?: string;
}

export function buildRetouchParams(f: RetouchFlags): RetouchParams {
  const image = imageInputFrom(
    f.image,
    f.imageTokens,
    { image: '--image', tokens: '--image-tokens' },
    'retouch',
    true,
  )!;
  const mask = maskSpecFrom(f, () => false, 'retouch');
  if (mask === undefined) {
    throw new DimooError(
      'retouch needs the regions to regenerate: give --rect x,y,w,h (repeatable) or --mask FILE.png',
      'E_PARAM',
    );
  }
  const p: RetouchParams = { image, mask, dilate: f.dilate, ...samplingParams(f) };
  if (f.prompt !== undefined) p.prompt = f.prompt;
  return p;
}

export function registerRetouch(program: Command, ctx: CliContext): void {
  const cmd = program
    .command('retouch')
    .description('regenerate marked regions of an image or token grid, keeping the rest exactly')
    .option('--prompt <text>', 'what the marked regions should show')
    .option('--image <file>', 'input image (png, jpeg, webp)')
    .option('--image-tokens <file.json>', 'input token grid (e.g. from generate --tokens-out)');
  addMaskOptions(cmd, { dilate: RETOUCH.dilate });
  addSamplingOptions(cmd, RETOUCH);
  addImageOutputOptions(cmd);
  addModelOptions(cmd);
  cmd.action(async (f: RetouchFlags) => {
    const params = buildRetouchParams(f);
    await runImageCommand(ctx, 'retouch', f, params, [params.image], (api, p, o) =>
      api.retouch(p, o),
    );
  });
}
