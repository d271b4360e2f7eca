/** `dimoo edit`: image-to-image (the original's inference_i2i.py), every edit type. */
import type { Command } from 'commander';
import { DimooError } from '../../errors.js';
import type { EditParams, EditType } from '../../pipelines/types.js';
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
import {
  EDIT_TYPES_HELP,
  I2I,
  editTypeHasFixedPrompt,
  editTypeTakesRef,
  isEditType,
} from '../defaults.js';
import { numOpt } from '../options.js';

interface EditFlags extends ModelCommandFlags, SamplingFlags, ImageOutFlags {
  prompt?: string;
  editType: EditType;
  cfgImg: number;
  image?: string;
  imageTokens?: string;
  refImage?: string;
  refImageTokens?: string;
}

export function buildEditParams(f: EditFlags): EditParams {
  const image = imageInputFrom(
    f.image,
    f.imageTokens,
    { image: '--image', tokens: '--image-tokens' },
    `edit (--edit-type ${f.editType})`,
    true,
  )!;
  const wantsRef = editTypeTakesRef(f.editType);
  const refImage = imageInputFrom(
    f.refImage,
    f.refImageTokens,
    { image: '--ref-image', tokens: '--ref-image-tokens' },
    `--edit-type ${f.editType} (the style reference)`,
    wantsRef,
  );
  if (!wantsRef && refImage !== undefined) {
    throw new DimooError(
      `--ref-image is only used by --edit-type image_ref_transfer, not ${f.editType}`,
      'E_PARAM',
    );
  }
  // Dense prediction, style transfer and multi-view use fixed prompts (the original ignores
  // its --prompt there); every other type needs the user's text.
  if (f.prompt === undefined && !editTypeHasFixedPrompt(f.editType)) {
    throw new DimooError(`--prompt is required for --edit-type ${f.editType}`, 'E_PARAM');
  }
  const p: EditParams = {
    prompt: f.prompt ?? '',
    editType: f.editType,
    image,
    cfgImg: f.cfgImg,
    ...samplingParams(f),
  };
  if (refImage !== undefined) p.refImage = refImage;
  return p;
}

export function registerEdit(program: Command, ctx: CliContext): void {
  const cmd = program
    .command('edit')
    .description(
      'image-to-image: editing, control, dense prediction, subject-driven, style transfer',
    )
    .option(
      '--prompt <text>',
      'the instruction (not needed by *_dense, image_ref_transfer and multi_view*: their prompts are fixed)',
    )
    .requiredOption(
      '--edit-type <type>',
      `one of ${EDIT_TYPES_HELP}`,
      (v: string): EditType => {
        if (isEditType(v)) return v;
        throw new DimooError(`--edit-type must be one of ${EDIT_TYPES_HELP}; got "${v}"`, 'E_PARAM');
      },
    )
    .option('--image <file>', 'input image (png, jpeg, webp)')
    .option('--image-tokens <file.json>', 'input token grid instead of --image')
    .option('--ref-image <file>', 'style reference image (image_ref_transfer)')
    .option('--ref-image-tokens <file.json>', 'style reference token grid instead of --ref-image')
    .option('--cfg-img <s>', 'image guidance scale', numOpt('--cfg-img', { min: 0 }), I2I.cfgImg);
  addSamplingOptions(cmd, I2I);
  addImageOutputOptions(cmd);
  addModelOptions(cmd);
  cmd.action(async (f: EditFlags) => {
    const params = buildEditParams(f);
    await runImageCommand(ctx, 'edit', f, params, [params.image, params.refImage], (api, p, o) =>
      api.edit(p, o),
    );
  });
}
