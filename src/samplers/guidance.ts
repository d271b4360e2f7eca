/**
 * Classifier-free guidance on logits rows, in float32 with the original's
 * operation order (every intermediate rounded to float32, scales cast to
 * float32 as torch's CPU kernels cast Python scalars), so guided logits are
 * bit-identical to the reference given identical inputs.
 *
 *   guideTextToImage(cond, uncond, scale, out?)
 *       out = f32(1 + scale) * cond - f32(scale) * uncond
 *       (generators/image_generation_generator.py; skipped there when scale == 0)
 *   guideImageToImage(cond, uncondText, uncondImage, textScale, imageScale, out?)
 *       out = (cond + sT * (cond - uT)) + sI * (cond - uI)
 *       (generators/image_to_image_generator.py; run whenever sT > 0 or sI > 0)
 *   guideText(cond, uncond, scale, out?)
 *       out = uncond + f32(scale + 1) * (cond - uncond)
 *       (generators/text_understanding_generator.py; skipped when scale == 0)
 *
 * Arrays are flat (rows x width, any row order) and must have equal length;
 * `out` defaults to `cond` (in place) and may alias any input.
 */
import { DimooError } from '../errors.js';

const f32 = Math.fround;

function checkScale(s: number, name: string): void {
  if (!Number.isFinite(s))
    throw new DimooError(`${name} must be a finite number, got ${s}`, 'E_PARAM');
}

function checkLengths(
  name: string,
  ref: Float32Array,
  ...others: Array<[string, Float32Array]>
): void {
  for (const [n, a] of others) {
    if (a.length !== ref.length) {
      throw new DimooError(`${n} has ${a.length} values but ${name} has ${ref.length}`, 'E_PARAM');
    }
  }
}

/** Text-to-image CFG: `(1 + s) * cond - s * uncond`, elementwise in float32. */
export function guideTextToImage(
  cond: Float32Array,
  uncond: Float32Array,
  scale: number,
  out: Float32Array = cond,
): Float32Array {
  checkScale(scale, 'cfgScale');
  checkLengths('cond', cond, ['uncond', uncond], ['out', out]);
  const a = f32(1 + scale);
  const b = f32(scale);
  for (let i = 0; i < cond.length; i++) {
    // Float32Array stores round each product; the subtraction is rounded on store.
    out[i] = f32(a * cond[i]!) - f32(b * uncond[i]!);
  }
  return out;
}

/** Image-to-image CFG: `cond + sT * (cond - uText) + sI * (cond - uImage)`, float32, left to right. */
export function guideImageToImage(
  cond: Float32Array,
  uncondText: Float32Array,
  uncondImage: Float32Array,
  textScale: number,
  imageScale: number,
  out: Float32Array = cond,
): Float32Array {
  checkScale(textScale, 'cfgScale');
  checkScale(imageScale, 'cfgImg');
  checkLengths(
    'cond',
    cond,
    ['uncondText', uncondText],
    ['uncondImage', uncondImage],
    ['out', out],
  );
  const st = f32(textScale);
  const si = f32(imageScale);
  for (let i = 0; i < cond.length; i++) {
    const c = cond[i]!;
    const left = f32(c + f32(st * f32(c - uncondText[i]!)));
    out[i] = left + f32(si * f32(c - uncondImage[i]!));
  }
  return out;
}

/** Text-understanding CFG (LLaDA): `uncond + (s + 1) * (cond - uncond)`, float32. */
export function guideText(
  cond: Float32Array,
  uncond: Float32Array,
  scale: number,
  out: Float32Array = cond,
): Float32Array {
  checkScale(scale, 'cfgScale');
  checkLengths('cond', cond, ['uncond', uncond], ['out', out]);
  const a = f32(scale + 1);
  for (let i = 0; i < cond.length; i++) {
    const u = uncond[i]!;
    out[i] = u + f32(a * f32(cond[i]! - u));
  }
  return out;
}
