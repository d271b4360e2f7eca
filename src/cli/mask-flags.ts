/**
 * Mask flags of the painting and retouching commands: a PNG (--mask), pixel
 * rectangles (--rect, repeatable) or the original's centred rectangle
 * (--mask-h-ratio / --mask-w-ratio). They exclude each other.
 */
import type { Command } from 'commander';
import { DimooError } from '../errors.js';
import type { MaskSpec } from '../pipelines/types.js';
import { intOpt, numOpt, rectListOpt, type Rect } from './options.js';

export interface MaskFlags {
  mask?: string;
  rect?: Rect[];
  maskHRatio?: number;
  maskWRatio?: number;
  dilate: number;
}

export function addMaskOptions(
  cmd: Command,
  o: { ratio?: { h: number; w: number }; dilate: number },
): Command {
  cmd
    .option('--mask <file.png>', 'mask image: transparent (or white, if opaque) = regenerate')
    .option(
      '--rect <x,y,w,h>',
      'region to regenerate, in pixels (repeatable)',
      rectListOpt('--rect'),
    );
  if (o.ratio) {
    cmd
      .option(
        '--mask-h-ratio <r>',
        'centred rectangle: fraction of the height',
        numOpt('--mask-h-ratio', { min: 0, max: 1 }),
        o.ratio.h,
      )
      .option(
        '--mask-w-ratio <r>',
        'centred rectangle: fraction of the width',
        numOpt('--mask-w-ratio', { min: 0, max: 1 }),
        o.ratio.w,
      );
  }
  return cmd.option(
    '--dilate <cells>',
    'grow the mask by this many token cells',
    intOpt('--dilate', { min: 0 }),
    o.dilate,
  );
}

/** `fromCli(name)`: whether the user typed the option (defaults do not count). */
export function maskSpecFrom(
  f: MaskFlags,
  fromCli: (name: string) => boolean,
  what: string,
): MaskSpec | undefined {
  const ratioGiven = fromCli('maskHRatio') || fromCli('maskWRatio');
  const given = [
    f.mask !== undefined && '--mask',
    f.rect !== undefined && '--rect',
    ratioGiven && '--mask-h-ratio/--mask-w-ratio',
  ].filter((x): x is string => typeof x === 'string');
  if (given.length > 1)
    throw new DimooError(`${what}: give only one of ${given.join(', ')}`, 'E_PARAM');
  if (f.mask !== undefined) return { kind: 'png', path: f.mask };
  if (f.rect !== undefined) return { kind: 'rects', rects: f.rect };
  if (f.maskHRatio !== undefined && f.maskWRatio !== undefined) {
    return { kind: 'ratio', hRatio: f.maskHRatio, wRatio: f.maskWRatio };
  }
  return undefined;
}
