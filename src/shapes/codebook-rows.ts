/**
 * The shapes model's image-token rows start from what each code looks like.
 * The VQ-VAE's codes are fixed cell thumbnails (4x4 RGB block means,
 * vq-dictionary.ts), so a code's colour and outline are known before any
 * training: each image code's embedding and output-head row start as a fixed
 * random projection of its standardised thumbnail (plus part of the random
 * row), so that similar-looking codes start similar. Reading "what colour is
 * the triangle" or predicting a red cell then need not be learnt code by code
 * from a few sightings each. Thumbnail-less rows (FILLER) stay random.
 */
import * as fs from 'node:fs';
import { DimooError } from '../errors.js';
import { openCheckpoint } from '../checkpoint/folder.js';
import { readTensorFloat32, SafetensorsFile } from '../checkpoint/safetensors.js';
import { f32ToBf16Scalar } from '../checkpoint/dtypes.js';
import { VQ_WEIGHTS_FILE } from '../checkpoint/vq-config.js';
import { Prng } from '../samplers/prng.js';
import { FILLER } from './vq-dictionary.js';
import * as path from 'node:path';

/** Share of a row's variance that comes from the thumbnail (the rest: its random init). */
export const CODEBOOK_SHARE = 0.8;

const CODEBOOK_TENSOR = 'quantize.embedding.weight';
const ROWS = ['model.transformer.wte.weight', 'model.transformer.ff_out.weight'] as const;

/**
 * Row k of the result: the thumbnail of code k, standardised per channel over
 * the real thumbnails, through a fixed Gaussian projection to `dModel` values
 * of unit variance each. Null for filler codes.
 */
export function projectedThumbnails(
  codebook: Float32Array,
  codes: number,
  dim: number,
  dModel: number,
  seed: number,
): Array<Float32Array | null> {
  const real: number[] = [];
  for (let k = 0; k < codes; k++)
    if (!codebook.subarray(k * dim, (k + 1) * dim).every((x) => x === FILLER)) real.push(k);
  if (real.length < 2)
    throw new DimooError('the VQ-VAE codebook has fewer than two thumbnails', 'E_PARAM');
  const mean = new Float64Array(dim);
  const sq = new Float64Array(dim);
  for (const k of real)
    for (let j = 0; j < dim; j++) {
      const x = codebook[k * dim + j]!;
      mean[j]! += x;
      sq[j]! += x * x;
    }
  const sd = new Float64Array(dim);
  for (let j = 0; j < dim; j++) {
    mean[j] = mean[j]! / real.length;
    sd[j] = Math.sqrt(Math.max(sq[j]! / real.length - mean[j]! ** 2, 1e-12));
  }
  // Gaussian entries of variance 1/dim: each output of a standardised input has variance ~1.
  const rng = new Prng(seed, 7);
  const P = new Float64Array(dModel * dim);
  for (let i = 0; i < P.length; i++) {
    const u = rng.uniform();
    const v = rng.uniform();
    P[i] = (Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v)) / Math.sqrt(dim);
  }
  const out: Array<Float32Array | null> = new Array<Float32Array | null>(codes).fill(null);
  const z = new Float64Array(dim);
  for (const k of real) {
    for (let j = 0; j < dim; j++) z[j] = (codebook[k * dim + j]! - mean[j]!) / sd[j]!;
    const row = new Float32Array(dModel);
    for (let i = 0; i < dModel; i++) {
      let s = 0;
      for (let j = 0; j < dim; j++) s += P[i * dim + j]! * z[j]!;
      row[i] = s;
    }
    out[k] = row;
  }
  return out;
}

/**
 * Rewrites, in place, the image-code rows (from `imageStart`) of a freshly
 * written shapes checkpoint's embedding and head: sqrt(share) x the projected
 * thumbnail at the tensor's own init scale + sqrt(1 - share) x the random row.
 * Returns how many codes got a thumbnail.
 */
export function seedImageRowsFromCodebook(
  dir: string,
  imageStart: number,
  seed: number,
  share = CODEBOOK_SHARE,
): number {
  const ckpt = openCheckpoint(dir);
  if (!ckpt.vqvaeDir) throw new DimooError(`${dir}: no vqvae/ folder`, 'E_CHECKPOINT');
  const vqFile = SafetensorsFile.open(path.join(ckpt.vqvaeDir, VQ_WEIGHTS_FILE));
  const cbInfo = vqFile.info(CODEBOOK_TENSOR);
  const [codes, dim] = cbInfo.shape as [number, number];
  const D = ckpt.config.dModel;
  if (imageStart + codes > ckpt.config.embeddingSize)
    throw new DimooError(
      `${dir}: ${codes} image codes from ${imageStart} do not fit the vocabulary (${ckpt.config.embeddingSize})`,
      'E_CHECKPOINT',
    );
  const thumbs = projectedThumbnails(readTensorFloat32(cbInfo), codes, dim, D, seed);
  const a = Math.sqrt(share);
  const b = Math.sqrt(1 - share);
  for (const name of ROWS) {
    const info = ckpt.weights.get(name);
    if (!info) throw new DimooError(`${dir}: weight ${name} is missing`, 'E_CHECKPOINT');
    if (info.dtype !== 'BF16')
      throw new DimooError(`${dir}: ${name} is ${info.dtype}, expected BF16`, 'E_CHECKPOINT');
    const rows = readTensorFloat32(info, imageStart * D, codes * D);
    // The random rows' own scale (their RMS) sets the thumbnail part's.
    let ss = 0;
    for (const x of rows) ss += x * x;
    const scale = Math.sqrt(ss / rows.length);
    const bytes = new Uint16Array(codes * D);
    for (let k = 0; k < codes; k++) {
      const t = thumbs[k];
      for (let i = 0; i < D; i++) {
        const r = rows[k * D + i]!;
        bytes[k * D + i] = f32ToBf16Scalar(t ? a * scale * t[i]! + b * r : r);
      }
    }
    const fd = fs.openSync(info.file, 'r+');
    try {
      fs.writeSync(
        fd,
        new Uint8Array(bytes.buffer),
        0,
        bytes.byteLength,
        info.byteOffset + imageStart * D * 2,
      );
    } finally {
      fs.closeSync(fd);
    }
  }
  return thumbs.filter((t) => t !== null).length;
}
