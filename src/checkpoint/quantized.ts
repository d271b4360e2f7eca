/**
 * Reads folders written by `dimoo quantize` (tools/quantize.ts, the writer):
 * the manifest `dimoo-quant.json` and the weights file it names, every tensor
 * checked against config.json. Linears come back as MatMulNBits blocks
 * (quant-blocks.ts) located in the file, so `Transformer.load` maps them as
 * external data; other tensors as stored.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DimooError } from '../errors.js';
import { loadLladaConfig } from './config.js';
import { expectedTensors, findSideFiles, sideFileList, type Checkpoint } from './layout.js';
import { blobBytes, type QuantBits, type QuantSpec } from './quant-blocks.js';
import { SafetensorsFile, type TensorInfo } from './safetensors.js';

const E = 'E_CHECKPOINT';

export const QUANT_MANIFEST = 'dimoo-quant.json';
export const QUANT_FORMAT = 'dimoo-quantized';
/**
 * 2: per-entry `bits` (the 8-bit embedding); 3: the `qgemm` format (`layout:
 * "channel"` entries). Versions 1 and 2 are still read.
 */
export const QUANT_VERSION = 3;

/**
 * How linears are stored and run: `nbits` = MatMulNBits blocks (8 or 4 bits);
 * `qgemm` = int8 [K, N] with a scale per output channel, run on the integer
 * GEMM (DynamicQuantizeMatMul / MatMulIntegerToFloat).
 */
export type QuantFormat = 'nbits' | 'qgemm';
export const QUANT_FORMATS: readonly QuantFormat[] = ['nbits', 'qgemm'];

export interface QuantManifestLinear {
  /** Tensor names in the weights file. */
  data: string;
  scales: string;
  N: number;
  K: number;
  block_size: number;
  /** Bits of this entry when they differ from the manifest's (the 8-bit embedding). */
  bits?: QuantBits;
  /** `channel`: data I8 [K, N], scales F32 [N] (block_size = K); absent: MatMulNBits blocks. */
  layout?: 'channel';
}

export interface QuantManifest {
  format: typeof QUANT_FORMAT;
  version: number;
  bits: QuantBits;
  /** How the linears are stored (absent: nbits). The embedding is 8-bit blocks in both. */
  quant_format?: QuantFormat;
  /** Requested block size (a tensor whose K it does not divide uses the largest power of two that does). */
  block_size: number;
  weights_file: string;
  /** Quantized linears by their checkpoint weight name. */
  linears: Record<string, QuantManifestLinear>;
  /** Tensors kept as stored, by checkpoint name -> tensor name in the weights file. */
  plain: Record<string, string>;
  source: { dir: string; parameters: number; bytes: number };
}

export function isQuantizedCheckpoint(dir: string): boolean {
  return fs.existsSync(path.join(dir, QUANT_MANIFEST));
}

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** Parses and checks the manifest's own structure (not yet against the weights). */
export function readQuantManifest(dir: string): QuantManifest {
  const file = path.join(dir, QUANT_MANIFEST);
  let j: unknown;
  try {
    j = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new DimooError(
      `${file}: cannot read the quantization manifest (${(e as Error).message})`,
      E,
    );
  }
  const bad = (what: string): never => {
    throw new DimooError(`${file}: ${what}`, E);
  };
  if (!isObject(j)) bad('must be a JSON object');
  const m = j as Record<string, unknown>;
  if (m.format !== QUANT_FORMAT)
    bad(`"format" must be "${QUANT_FORMAT}", got ${JSON.stringify(m.format)}`);
  if (m.version !== 1 && m.version !== 2 && m.version !== QUANT_VERSION)
    bad(
      `unsupported version ${JSON.stringify(m.version)} (this dimoo reads versions 1 to ${QUANT_VERSION})`,
    );
  if (m.bits !== 8 && m.bits !== 4) bad(`"bits" must be 8 or 4, got ${JSON.stringify(m.bits)}`);
  if (m.quant_format !== undefined && !QUANT_FORMATS.includes(m.quant_format as QuantFormat))
    bad(
      `"quant_format" must be ${QUANT_FORMATS.join(' or ')}, got ${JSON.stringify(m.quant_format)}`,
    );
  if (typeof m.weights_file !== 'string' || m.weights_file === '' || /[\\/]/.test(m.weights_file))
    bad('"weights_file" must be a plain file name in the folder');
  if (!isObject(m.linears)) bad('"linears" must be an object');
  if (!isObject(m.plain)) bad('"plain" must be an object');
  for (const [name, l] of Object.entries(m.linears as Record<string, unknown>)) {
    if (!isObject(l)) bad(`linears["${name}"] must be an object`);
    const e = l as Record<string, unknown>;
    for (const k of ['N', 'K', 'block_size'] as const) {
      if (typeof e[k] !== 'number' || !Number.isSafeInteger(e[k]) || (e[k] as number) <= 0)
        bad(`linears["${name}"].${k} must be a positive integer`);
    }
    if (e.layout !== undefined && e.layout !== 'channel')
      bad(`linears["${name}"].layout must be "channel" or absent, got ${JSON.stringify(e.layout)}`);
    const bs = e.block_size as number;
    if (e.layout === 'channel') {
      if (bs !== e.K)
        bad(`linears["${name}"]: a channel entry has block_size = K (${String(e.K)}), got ${bs}`);
      if ((e.bits ?? m.bits) !== 8) bad(`linears["${name}"]: channel entries are 8-bit`);
    } else if (bs < 16 || bs > 256 || (bs & (bs - 1)) !== 0 || (e.K as number) % bs !== 0)
      bad(
        `linears["${name}"]: block_size ${bs} must be a power of two in [16, 256] dividing K = ${e.K}`,
      );
    if (typeof e.data !== 'string' || typeof e.scales !== 'string')
      bad(`linears["${name}"] must name its "data" and "scales" tensors`);
    if (e.bits !== undefined && e.bits !== 8 && e.bits !== 4)
      bad(`linears["${name}"].bits must be 8 or 4, got ${JSON.stringify(e.bits)}`);
  }
  for (const [name, t] of Object.entries(m.plain as Record<string, unknown>)) {
    if (typeof t !== 'string') bad(`plain["${name}"] must be a tensor name`);
  }
  return j as unknown as QuantManifest;
}

/** A run of bytes in a file (absolute path). */
export interface FileBytes {
  file: string;
  byteOffset: number;
  byteLength: number;
}

/** A linear weight [N, K] in MatMulNBits blocks, or int8 [K, N] per output channel (layout 'channel'; see quant-blocks.ts). */
export interface QuantizedLinear {
  bits: QuantBits;
  blockSize: number;
  N: number;
  K: number;
  layout?: 'channel';
  data: FileBytes;
  scales: FileBytes;
}

export interface QuantizedCheckpoint extends Checkpoint {
  quantized: Map<string, QuantizedLinear>;
  manifest: QuantManifest;
}

/**
 * Opens a folder written by quantizeCheckpoint: config, tokenizer and VQ as
 * any checkpoint, weights from the manifest, every tensor checked against the
 * config (shapes, dtypes, block layout).
 */
export function openQuantizedCheckpoint(dir: string): QuantizedCheckpoint {
  const root = path.resolve(dir);
  const manifestPath = path.join(root, QUANT_MANIFEST);
  const m = readQuantManifest(root);
  const configPath = path.join(root, 'config.json');
  if (!fs.existsSync(configPath))
    throw new DimooError(`${configPath}: missing (every checkpoint needs config.json)`, E);
  const config = loadLladaConfig(configPath);
  const wfile = path.join(root, m.weights_file);
  if (!fs.existsSync(wfile))
    throw new DimooError(
      `${manifestPath}: weights file "${m.weights_file}" is missing from ${root}`,
      E,
    );
  const st = SafetensorsFile.open(wfile);
  const tensor = (name: string, owner: string): TensorInfo => {
    const t = st.tensors.get(name);
    if (!t)
      throw new DimooError(
        `${manifestPath}: ${owner} names tensor "${name}", which ${wfile} does not have`,
        E,
      );
    return t;
  };
  const weights = new Map<string, TensorInfo>();
  const quantized = new Map<string, QuantizedLinear>();
  for (const e of expectedTensors(config)) {
    const lin = m.linears[e.name];
    const plainName = m.plain[e.name];
    if (!lin && plainName === undefined) {
      throw new DimooError(
        `${manifestPath}: tensor "${e.name}" that config.json requires is neither in "linears" nor in "plain"`,
        E,
      );
    }
    if (plainName !== undefined) {
      const t = tensor(plainName, `plain["${e.name}"]`);
      if (t.shape.length !== e.shape.length || t.shape.some((d, i) => d !== e.shape[i])) {
        throw new DimooError(
          `${wfile}: tensor "${plainName}" has shape [${t.shape.join(', ')}], config.json implies [${e.shape.join(', ')}] (${e.origin})`,
          E,
        );
      }
      if (t.dtype !== 'BF16' && t.dtype !== 'F16' && t.dtype !== 'F32') {
        throw new DimooError(
          `${wfile}: tensor "${plainName}" has dtype ${t.dtype}; plain weights must be BF16, F16 or F32`,
          E,
        );
      }
      weights.set(e.name, { ...t, name: e.name });
    }
    if (lin) {
      const [N, K] = e.shape as [number, number];
      if (e.shape.length !== 2 || lin.N !== N || lin.K !== K) {
        throw new DimooError(
          `${manifestPath}: linears["${e.name}"] is [${lin.N}, ${lin.K}], config.json implies [${e.shape.join(', ')}] (${e.origin})`,
          E,
        );
      }
      if (lin.layout === 'channel') {
        const d = tensor(lin.data, `linears["${e.name}"].data`);
        const s = tensor(lin.scales, `linears["${e.name}"].scales`);
        if (d.dtype !== 'I8' || d.shape.length !== 2 || d.shape[0] !== K || d.shape[1] !== N) {
          throw new DimooError(
            `${wfile}: tensor "${lin.data}" is ${d.dtype} [${d.shape.join(', ')}], expected I8 [${K}, ${N}] (int8 per output channel, transposed)`,
            E,
          );
        }
        if (s.dtype !== 'F32' || s.shape.length !== 1 || s.shape[0] !== N) {
          throw new DimooError(
            `${wfile}: tensor "${lin.scales}" is ${s.dtype} [${s.shape.join(', ')}], expected F32 [${N}]`,
            E,
          );
        }
        quantized.set(e.name, {
          bits: 8,
          blockSize: K,
          N,
          K,
          layout: 'channel',
          data: { file: d.file, byteOffset: d.byteOffset, byteLength: d.byteLength },
          scales: { file: s.file, byteOffset: s.byteOffset, byteLength: s.byteLength },
        });
        continue;
      }
      const spec: QuantSpec = { bits: lin.bits ?? m.bits, blockSize: lin.block_size };
      const blocks = K / spec.blockSize;
      const d = tensor(lin.data, `linears["${e.name}"].data`);
      const s = tensor(lin.scales, `linears["${e.name}"].scales`);
      const want = [N, blocks, blobBytes(spec)];
      if (d.dtype !== 'U8' || d.shape.length !== 3 || d.shape.some((x, i) => x !== want[i])) {
        throw new DimooError(
          `${wfile}: tensor "${lin.data}" is ${d.dtype} [${d.shape.join(', ')}], expected U8 [${want.join(', ')}] for ${spec.bits}-bit blocks of ${spec.blockSize}`,
          E,
        );
      }
      if (s.dtype !== 'F32' || s.shape.length !== 1 || s.shape[0] !== N * blocks) {
        throw new DimooError(
          `${wfile}: tensor "${lin.scales}" is ${s.dtype} [${s.shape.join(', ')}], expected F32 [${N * blocks}]`,
          E,
        );
      }
      quantized.set(e.name, {
        bits: spec.bits,
        blockSize: spec.blockSize,
        N,
        K,
        data: { file: d.file, byteOffset: d.byteOffset, byteLength: d.byteLength },
        scales: { file: s.file, byteOffset: s.byteOffset, byteLength: s.byteLength },
      });
    }
  }
  const unknown = [...Object.keys(m.linears), ...Object.keys(m.plain)].filter(
    (n) => !expectedTensors(config).some((e) => e.name === n),
  );
  if (unknown.length > 0) {
    throw new DimooError(
      `${manifestPath}: names tensors config.json does not have: ${unknown.slice(0, 5).join(', ')} (manifest and config.json do not match)`,
      E,
    );
  }
  const side = findSideFiles(root);
  return {
    dir: root,
    config,
    weights,
    quantized,
    manifest: m,
    ...side,
    files: [configPath, manifestPath, wfile, ...sideFileList(side)],
    weightFiles: [wfile],
  };
}
