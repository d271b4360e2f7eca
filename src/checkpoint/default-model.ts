/**
 * The model used when none is named (`--model` omitted on any command, the
 * server and its web page, `Dimoo.load()` without a folder): the one owner of
 * that choice.
 *
 *   1. `DIMOO_MODEL` (a checkpoint folder or a Hugging Face id), when set;
 *   2. the shapes model shipped in this package (`models/shapes/`, trained by
 *      `npm run train:shapes`), when this copy has it complete;
 *   3. none: the caller says how to get one.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DimooError } from '../errors.js';
import { INDEX_FILE, SINGLE_FILE } from './layout.js';

export const DEFAULT_MODEL_ENV = 'DIMOO_MODEL';
/** Where the shipped model lives, relative to the package root. */
export const SHIPPED_MODEL_PATH = path.join('models', 'shapes');

/** The package root: the nearest folder above this file with a package.json (works from src/ and dist/src/). */
export function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    const up = path.dirname(dir);
    if (up === dir)
      throw new Error('dimoo: no package.json above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
}

/** The shipped model's folder (whether or not it is there). */
export function shippedModelDir(): string {
  return path.join(packageRoot(), SHIPPED_MODEL_PATH);
}

/** Whether `dir` holds a complete checkpoint: config, weights and the VQ-VAE. */
export function isCompleteCheckpoint(dir: string): boolean {
  const has = (f: string): boolean => fs.existsSync(path.join(dir, f));
  return (
    has('config.json') &&
    has('tokenizer.json') &&
    (has(INDEX_FILE) || has(SINGLE_FILE)) &&
    has(path.join('vqvae', 'config.json'))
  );
}

export interface DefaultModel {
  dir: string;
  /** Why this one: the environment variable or the shipped model. */
  source: 'env' | 'shipped';
}

/** The model to use when none is named, or undefined when there is none (`shipped`: for tests). */
export function findDefaultModel(
  env: Record<string, string | undefined> = process.env,
  shipped = shippedModelDir(),
): DefaultModel | undefined {
  const fromEnv = env[DEFAULT_MODEL_ENV];
  if (fromEnv !== undefined && fromEnv.trim() !== '') return { dir: fromEnv, source: 'env' };
  return isCompleteCheckpoint(shipped) ? { dir: shipped, source: 'shipped' } : undefined;
}

/** `given` when set, else the default model; a clear error when there is neither. */
export function resolveModel(
  given: string | undefined,
  env: Record<string, string | undefined> = process.env,
  flag = '--model',
  shipped = shippedModelDir(),
): string {
  if (given !== undefined) return given;
  const d = findDefaultModel(env, shipped);
  if (d) return d.dir;
  throw new DimooError(
    `no model given (${flag}), ${DEFAULT_MODEL_ENV} is not set, and this copy has no shipped model in ${shipped} ` +
      '(train it with `npm run train:shapes`, or name a checkpoint folder or Hugging Face id)',
    'E_PARAM',
  );
}
