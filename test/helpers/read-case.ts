/**
 * Golden case access for the sampler/prompt tests: a case's JSON and, when it
 * has one, its .safetensors arrays (through the project's safetensors reader).
 */
import { SafetensorsFile } from '../../src/checkpoint/safetensors.js';
import { goldenCase, readGoldenJson } from './golden.js';

export interface GoldenCase<T> {
  json: T;
  /** Float32 array of a tensor in the case's .safetensors file. */
  f32(name: string): Float32Array;
  /** Integer (I64/BOOL/U8...) tensor as plain numbers. */
  ints(name: string): number[];
  has(name: string): boolean;
}

export function readCase<T = Record<string, unknown>>(name: string): GoldenCase<T> {
  const json = readGoldenJson<T>(`${name}.json`);
  let st: SafetensorsFile | undefined;
  const file = (): SafetensorsFile =>
    (st ??= SafetensorsFile.open(goldenCase(`${name}.safetensors`)));
  return {
    json,
    f32: (n) => file().readFloat32(n),
    ints: (n) => file().readIntegers(n),
    has: (n) => file().has(n),
  };
}
