/**
 * Opens an official Hugging Face Lumina-DiMOO checkpoint folder and checks
 * that its weights are exactly what config.json implies, so shape problems
 * surface here with a clear message rather than deep inside an export.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DimooError } from '../errors.js';
import { type LladaConfig, loadLladaConfig } from './config.js';
import { SafetensorsFile, type TensorInfo } from './safetensors.js';
import {
  expectedTensors,
  findSideFiles,
  INDEX_FILE,
  SINGLE_FILE,
  sideFileList,
  WEIGHT_DTYPES,
  type Checkpoint,
} from './layout.js';
import { isQuantizedCheckpoint, openQuantizedCheckpoint } from './quantized.js';

const E = 'E_CHECKPOINT';

function exists(p: string): boolean {
  return fs.existsSync(p);
}

function readJson(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new DimooError(`${file}: cannot read (${(e as Error).message})`, E);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new DimooError(`${file}: not valid JSON (${(e as Error).message})`, E);
  }
}

/** Reads model.safetensors.index.json: tensor name -> shard file name. */
export function readIndex(file: string): { weightMap: Map<string, string>; totalSize?: number } {
  const j = readJson(file);
  if (typeof j !== 'object' || j === null || Array.isArray(j)) {
    throw new DimooError(`${file}: must be a JSON object with "weight_map"`, E);
  }
  const wm = (j as Record<string, unknown>).weight_map;
  if (typeof wm !== 'object' || wm === null || Array.isArray(wm)) {
    throw new DimooError(`${file}: "weight_map" must be an object of tensor name -> shard file`, E);
  }
  const weightMap = new Map<string, string>();
  for (const [name, shard] of Object.entries(wm as Record<string, unknown>)) {
    if (typeof shard !== 'string' || shard.length === 0) {
      throw new DimooError(
        `${file}: weight_map["${name}"] must be a shard file name, got ${JSON.stringify(shard)}`,
        E,
      );
    }
    // Shards must live in the checkpoint folder itself; refuse paths that escape it.
    if (path.isAbsolute(shard) || shard.split(/[\\/]/).includes('..') || /[\\/]/.test(shard)) {
      throw new DimooError(
        `${file}: weight_map["${name}"] = "${shard}" is not a plain file name in the checkpoint folder`,
        E,
      );
    }
    weightMap.set(name, shard);
  }
  const meta = (j as Record<string, unknown>).metadata;
  let totalSize: number | undefined;
  if (
    meta &&
    typeof meta === 'object' &&
    typeof (meta as Record<string, unknown>).total_size === 'number'
  ) {
    totalSize = (meta as Record<string, unknown>).total_size as number;
  }
  return { weightMap, totalSize };
}

function fmt(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

function listSome(names: string[], n = 5): string {
  const head = names.slice(0, n).join(', ');
  return names.length > n ? `${head}, ... (${names.length} in all)` : head;
}

/** Loads the weight table from model.safetensors or from the index + shards. */
export function loadWeightTable(dir: string): {
  weights: Map<string, TensorInfo>;
  files: string[];
  indexPath?: string;
} {
  const single = path.join(dir, SINGLE_FILE);
  const indexPath = path.join(dir, INDEX_FILE);
  // Same preference as transformers: a single file wins over an index.
  if (exists(single)) {
    const f = SafetensorsFile.open(single);
    return { weights: new Map(f.tensors), files: [single] };
  }
  if (!exists(indexPath)) {
    throw new DimooError(`${dir}: no weights found (neither ${SINGLE_FILE} nor ${INDEX_FILE})`, E);
  }
  const { weightMap } = readIndex(indexPath);
  if (weightMap.size === 0) throw new DimooError(`${indexPath}: weight_map is empty`, E);
  const shards = new Map<string, SafetensorsFile>();
  for (const shard of new Set(weightMap.values())) {
    const p = path.join(dir, shard);
    if (!exists(p)) {
      const users = [...weightMap].filter(([, s]) => s === shard).map(([n]) => n);
      throw new DimooError(
        `${indexPath}: shard "${shard}" is missing from ${dir} (it should hold ${listSome(users, 3)})`,
        E,
      );
    }
    shards.set(shard, SafetensorsFile.open(p));
  }
  const weights = new Map<string, TensorInfo>();
  for (const [name, shard] of weightMap) {
    const f = shards.get(shard)!;
    const t = f.tensors.get(name);
    if (!t) {
      throw new DimooError(
        `${indexPath}: maps tensor "${name}" to shard "${shard}", but ${f.path} has no such tensor`,
        E,
      );
    }
    weights.set(name, t);
  }
  return { weights, files: [...shards.values()].map((s) => s.path).sort(), indexPath };
}

/** Compares weights with what the config implies; throws on the first kind of mismatch found. */
export function validateWeights(
  config: LladaConfig,
  weights: Map<string, TensorInfo>,
  where: string,
): void {
  const expected = expectedTensors(config);
  const want = new Map(expected.map((e) => [e.name, e]));
  const missing = expected.filter((e) => !weights.has(e.name)).map((e) => e.name);
  if (missing.length > 0) {
    throw new DimooError(
      `${where}: missing tensor(s) that config.json requires: ${listSome(missing)}`,
      E,
    );
  }
  const unexpected = [...weights.keys()].filter((n) => !want.has(n));
  if (unexpected.length > 0) {
    throw new DimooError(
      `${where}: unexpected tensor(s) not implied by config.json: ${listSome(unexpected)} ` +
        `(check n_layers, weight_tying, include_bias, include_qkv_bias)`,
      E,
    );
  }
  for (const e of expected) {
    const t = weights.get(e.name)!;
    if (t.shape.length !== e.shape.length || t.shape.some((d, i) => d !== e.shape[i])) {
      throw new DimooError(
        `${t.file}: tensor "${e.name}" has shape ${fmt(t.shape)}, expected ${fmt(e.shape)} from config.json (${e.origin})`,
        E,
      );
    }
    if (!WEIGHT_DTYPES.includes(t.dtype)) {
      throw new DimooError(
        `${t.file}: tensor "${e.name}" has dtype ${t.dtype}; weights must be ${WEIGHT_DTYPES.join(', ')}`,
        E,
      );
    }
  }
}

export function openCheckpoint(dir: string): Checkpoint {
  const root = path.resolve(dir);
  let st: fs.Stats;
  try {
    st = fs.statSync(root);
  } catch {
    throw new DimooError(`${root}: checkpoint folder does not exist`, E);
  }
  if (!st.isDirectory()) throw new DimooError(`${root}: checkpoint path is not a folder`, E);
  // A folder written by `dimoo quantize` (MatMulNBits blocks + manifest, see quantized.ts).
  if (isQuantizedCheckpoint(root)) return openQuantizedCheckpoint(root);
  const configPath = path.join(root, 'config.json');
  if (!exists(configPath))
    throw new DimooError(`${configPath}: missing (every checkpoint needs config.json)`, E);
  const config = loadLladaConfig(configPath);

  const { weights, files: weightFiles, indexPath } = loadWeightTable(root);
  validateWeights(config, weights, indexPath ?? weightFiles[0]!);

  const side = findSideFiles(root);
  const files = [
    configPath,
    ...(indexPath ? [indexPath] : []),
    ...weightFiles,
    ...sideFileList(side),
  ];
  return { dir: root, config, weights, ...side, files, weightFiles };
}
