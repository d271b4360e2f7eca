/**
 * Pictures for training the shapes VQ-VAE, drawn on the fly: the i-th
 * training picture is a pure function of (seed, i), held-out scenes (the
 * split of world.isHeldOut) are skipped, and the evaluation pictures are the
 * first held-out scenes of their own stream.
 */
import type { Image8 } from '../image/image.js';
import { Prng } from '../samplers/prng.js';
import { renderScene } from './render.js';
import { isHeldOut, sampleScene } from './world.js';

const TRAIN_STREAM = 0x51a9e001;
const EVAL_STREAM = 0x51a9e002;

/** The i-th training picture: scene attempts (i, 0), (i, 1), ... until one is not held out. */
export function vqTrainImage(seed: number, holdout: number, index: number): Image8 {
  for (let attempt = 0; ; attempt++) {
    const scene = sampleScene(new Prng(seed, TRAIN_STREAM, index, attempt));
    if (!isHeldOut(scene, holdout)) return renderScene(scene);
  }
}

/** `count` held-out pictures (the same for every run with this seed and fraction). */
export function vqEvalImages(seed: number, holdout: number, count: number): Image8[] {
  if (holdout <= 0) throw new Error('vqEvalImages: the held-out fraction must be > 0');
  const out: Image8[] = [];
  const prng = new Prng(seed, EVAL_STREAM);
  while (out.length < count) {
    const scene = sampleScene(prng);
    if (isHeldOut(scene, holdout)) out.push(renderScene(scene));
  }
  return out;
}
