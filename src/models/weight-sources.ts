/**
 * Where a checkpoint's weights are, as the graph builders take them: one
 * owner for the external-data folder and the per-tensor byte ranges, shared
 * by inference (models/transformer.ts) and training (training/engine.ts), so
 * both read a Hugging Face cache snapshot the same way.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DimooError } from '../errors.js';
import type { FileBytes, QuantizedLinear } from '../checkpoint/quantized.js';
import type { ExternalBytes, QuantizedLinearSource, WeightSource } from '../graph/transformer.js';

export interface WeightFiles {
  dir: string;
  weights: Map<
    string,
    { dtype: string; shape: number[]; file: string; byteOffset: number; byteLength: number }
  >;
  quantized?: Map<string, QuantizedLinear>;
}

/**
 * The folder ONNX Runtime resolves external data against, and each file's
 * location inside it. ORT refuses locations that leave that folder after
 * following links, and a Hugging Face cache snapshot links every file into
 * `../../blobs/`: so the folder is the deepest one holding every file's real
 * path (the checkpoint folder itself when nothing is a link).
 */
export function externalDataRoot(ckpt: WeightFiles): {
  folder: string;
  rel: (file: string) => string;
} {
  const files = new Set<string>();
  for (const w of ckpt.weights.values()) files.add(w.file);
  for (const q of ckpt.quantized?.values() ?? []) files.add(q.data.file).add(q.scales.file);
  const real = new Map<string, string>();
  for (const f of files) real.set(f, fs.realpathSync(f));
  let folder = real.size ? path.dirname(real.values().next().value!) : fs.realpathSync(ckpt.dir);
  for (const r of real.values()) {
    while (path.relative(folder, r).startsWith('..')) folder = path.dirname(folder);
  }
  const rel = (file: string): string => {
    const r = real.get(file) ?? fs.realpathSync(file);
    return path.relative(folder, r).split(path.sep).join('/');
  };
  return { folder, rel };
}

export interface WeightSources {
  /** The external-data folder for the ORT session. */
  folder: string;
  /** A float weight's bytes (named error when missing or of another dtype). */
  weight: (name: string) => WeightSource;
  /** A quantized linear's blocks and scales, or undefined when the weight is not quantized. */
  quantized: (name: string) => QuantizedLinearSource | undefined;
}

export function weightSources(ckpt: WeightFiles): WeightSources {
  const { folder, rel } = externalDataRoot(ckpt);
  const ext = (b: FileBytes): ExternalBytes => ({
    location: rel(b.file),
    byteOffset: b.byteOffset,
    byteLength: b.byteLength,
  });
  return {
    folder,
    weight: (name) => {
      const w = ckpt.weights.get(name);
      if (!w) throw new DimooError(`${ckpt.dir}: weight ${name} is missing`, 'E_CHECKPOINT');
      if (w.dtype !== 'BF16' && w.dtype !== 'F16' && w.dtype !== 'F32')
        throw new DimooError(
          `${w.file}: tensor ${name} has unsupported dtype ${w.dtype}`,
          'E_CHECKPOINT',
        );
      return { dtype: w.dtype, shape: w.shape, ...ext(w) };
    },
    quantized: (name) => {
      const q = ckpt.quantized?.get(name);
      if (!q) return undefined;
      return {
        bits: q.bits,
        blockSize: q.blockSize,
        N: q.N,
        K: q.K,
        ...(q.layout !== undefined && { layout: q.layout }),
        data: ext(q.data),
        scales: ext(q.scales),
      };
    },
  };
}
