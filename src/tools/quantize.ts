/**
 * 8-bit / 4-bit weights: `quantizeCheckpoint` repacks a checkpoint's linear
 * weights into ONNX Runtime's MatMulNBits blocks (quant-blocks.ts); the
 * reader of such folders is checkpoint/quantized.ts (every tensor stays
 * external data in the .safetensors file, memory-mapped).
 *
 * Folder layout (everything but the weights is copied from the source):
 *
 *   config.json  generation_config.json  tokenizer files  vqvae/
 *   model-q8.safetensors      (or -q4) quantized linears + plain tensors
 *   dimoo-quant.json          the manifest, written last
 *
 * Every linear [N, K] (q/k/v/attn_out, ff_proj/up_proj/ff_out, the output
 * head) becomes, in the `nbits` format (the default for 4 bits),
 * `NAME.q{bits}` U8 [N, K/bs, bs*bits/8] + `NAME.scales` F32 [N*K/bs]
 * (MatMulNBits blocks); in the `qgemm` format (8 bits only, and their
 * default), `NAME.i8` I8 [K, N] + `NAME.scales` F32 [N] (one scale per output
 * channel, for ONNX Runtime's integer GEMM: 1.7x the kernel speed of
 * MatMulNBits int8 at the same golden accuracy, see docs/performance.md). The input embedding becomes 8-bit blocks in the same layout
 * whatever `bits` is (gathered by GatherBlockQuantized: half the bytes of
 * bf16, and embedding error matters more than a linear's); `embedding:
 * 'plain'` keeps it as stored. Norms and biases stay as stored. With weight
 * tying the embedding is kept plain and a quantized copy serves as the head.
 *
 * Streaming: tensors are converted in row chunks through reused buffers, so
 * the real 8B shape (16 GB of bf16) quantizes in well under 1 GB of memory.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DimooError } from '../errors.js';
import { openCheckpoint } from '../checkpoint/folder.js';
import { expectedTensors } from '../checkpoint/layout.js';
import type { LladaConfig } from '../checkpoint/config.js';
import { bf16ToF32, dtypeSize, f16ToF32 } from '../checkpoint/dtypes.js';
import { blobBytes, quantizeChannelRows, quantizeRows, type QuantBits, type QuantizedRows, type QuantSpec } from '../checkpoint/quant-blocks.js';
import {
  isQuantizedCheckpoint,
  QUANT_FORMAT,
  QUANT_FORMATS,
  QUANT_MANIFEST,
  QUANT_VERSION,
  type QuantFormat,
  type QuantManifest,
  type QuantManifestLinear,
} from '../checkpoint/quantized.js';
import { numel, writeSafetensors, type TensorInfo, type WriteEntry } from '../checkpoint/safetensors.js';
import { atomicWriteFileSync } from '../util/atomic-write.js';
import { makeDirs } from '../util/fs-errors.js';

/**
 * The linear layout when none is asked for: 8 bits go to the integer GEMM
 * (`qgemm`, faster on CPU at the same golden accuracy, measured in
 * docs/performance.md); `nbits` stays available for what qgemm cannot do
 * (QLoRA bases, a WebGPU session's GPU kernels, 4 bits).
 */
export function defaultQuantFormat(bits: QuantBits): QuantFormat {
  return bits === 8 ? 'qgemm' : 'nbits';
}

/** Default block sizes: int8 loses little with long blocks (and runs fastest); int4 needs short ones. */
export const DEFAULT_BLOCK_SIZE: Record<QuantBits, number> = { 8: 128, 4: 32 };

const E = 'E_CHECKPOINT';

export interface QuantizeOptions {
  bits: QuantBits;
  /** Linear layout (default: defaultQuantFormat(bits)); qgemm needs bits 8 and ignores blockSize for the linears. */
  format?: QuantFormat;
  /** Block size along K (default DEFAULT_BLOCK_SIZE[bits]). */
  blockSize?: number;
  /** The input embedding: 8-bit blocks (default) or as stored. */
  embedding?: 'int8' | 'plain';
  /** Called with bytes of source weights processed so far and the total. */
  onProgress?: (done: number, total: number) => void;
}

export interface QuantizeResult {
  dir: string;
  manifest: QuantManifest;
  weightsFile: string;
  /** Size of the weights file in bytes. */
  bytes: number;
  seconds: number;
}

/** Which checkpoint weights are linears (matrices multiplied by activations). */
export function isLinearWeight(name: string, c: LladaConfig): boolean {
  if (name === 'model.transformer.ff_out.weight') return true;
  if (name === 'model.transformer.wte.weight') return c.weightTying;
  return /\.blocks\.\d+\.(q_proj|k_proj|v_proj|attn_out|ff_proj|up_proj|ff_out)\.weight$/.test(name);
}

/** The block size used for a K: the requested one, or the largest power of two <= it dividing K. */
export function blockSizeFor(K: number, requested: number): number {
  let bs = requested;
  while (bs > 16 && K % bs !== 0) bs /= 2;
  if (K % bs !== 0) throw new DimooError(`cannot quantize: K = ${K} is not a multiple of 16`, 'E_PARAM');
  return bs;
}

const SIDE_FILES = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'];

function copyTree(src: string, dst: string): void {
  makeDirs(dst);
  for (const ent of fs.readdirSync(src, { withFileTypes: true })) {
    const s = path.join(src, ent.name);
    const d = path.join(dst, ent.name);
    if (ent.isDirectory()) copyTree(s, d);
    else if (ent.isFile()) {
      fs.rmSync(d, { force: true });
      try {
        fs.linkSync(s, d); // same file system: no copy
      } catch {
        fs.copyFileSync(s, d);
      }
    }
  }
}

/** Reads row chunks of a float tensor as float32 through reused buffers. */
class RowReader {
  private fd: number;
  private raw: Buffer;
  private f32: Float32Array;

  constructor(
    private readonly t: TensorInfo,
    private readonly rowElems: number,
    readonly chunkRows: number,
  ) {
    this.fd = fs.openSync(t.file, 'r');
    const elems = rowElems * chunkRows;
    this.raw = Buffer.allocUnsafe(elems * dtypeSize(t.dtype));
    this.f32 = t.dtype === 'F32' ? new Float32Array(this.raw.buffer, this.raw.byteOffset, elems) : new Float32Array(elems);
  }

  /** Rows [start, start + n) as float32 (valid until the next call). */
  read(start: number, n: number): Float32Array {
    const size = dtypeSize(this.t.dtype);
    const bytes = n * this.rowElems * size;
    let got = 0;
    while (got < bytes) {
      const r = fs.readSync(this.fd, this.raw, got, bytes - got, this.t.byteOffset + start * this.rowElems * size + got);
      if (r <= 0) throw new DimooError(`${this.t.file}: tensor "${this.t.name}" ends early (file truncated?)`, E);
      got += r;
    }
    const elems = n * this.rowElems;
    if (this.t.dtype === 'F32') return this.f32.subarray(0, elems);
    const src = new Uint16Array(this.raw.buffer, this.raw.byteOffset, elems);
    const dst = this.f32.subarray(0, elems);
    if (this.t.dtype === 'BF16') bf16ToF32(src, dst);
    else if (this.t.dtype === 'F16') f16ToF32(src, dst);
    else throw new DimooError(`${this.t.file}: tensor "${this.t.name}" is ${this.t.dtype}, not a float tensor`, E);
    return dst;
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}

/** Copies a tensor's bytes in chunks. */
function copyProducer(t: TensorInfo, onBytes: (n: number) => void) {
  return (write: (chunk: Uint8Array) => void): void => {
    const fd = fs.openSync(t.file, 'r');
    try {
      const buf = Buffer.allocUnsafe(Math.min(t.byteLength, 16 << 20));
      for (let done = 0; done < t.byteLength; ) {
        const n = fs.readSync(fd, buf, 0, Math.min(buf.length, t.byteLength - done), t.byteOffset + done);
        if (n <= 0) throw new DimooError(`${t.file}: tensor "${t.name}" ends early (file truncated?)`, E);
        write(buf.subarray(0, n));
        done += n;
        onBytes(n);
      }
    } finally {
      fs.closeSync(fd);
    }
  };
}

/**
 * Writes a quantized copy of the checkpoint in `srcDir` into `outDir`
 * (created; an earlier quantized checkpoint there is replaced, anything else
 * is refused). Returns the manifest.
 */
export async function quantizeCheckpoint(srcDir: string, outDir: string, opts: QuantizeOptions): Promise<QuantizeResult> {
  const t0 = performance.now();
  const bits = opts.bits;
  if (bits !== 8 && bits !== 4) throw new DimooError(`--bits must be 8 or 4, got ${String(bits)}`, 'E_PARAM');
  const format = opts.format ?? defaultQuantFormat(bits);
  if (!QUANT_FORMATS.includes(format)) throw new DimooError(`--format must be ${QUANT_FORMATS.join(' or ')}, got ${String(format)}`, 'E_PARAM');
  if (format === 'qgemm' && bits !== 8) throw new DimooError(`--format qgemm stores 8-bit weights; got --bits ${bits}`, 'E_PARAM');
  const requested = opts.blockSize ?? DEFAULT_BLOCK_SIZE[bits];
  if (!(Number.isInteger(requested) && requested >= 16 && requested <= 256 && (requested & (requested - 1)) === 0)) {
    throw new DimooError(`block size must be a power of two from 16 to 256, got ${requested}`, 'E_PARAM');
  }
  const src = path.resolve(srcDir);
  const out = path.resolve(outDir);
  if (isQuantizedCheckpoint(src)) throw new DimooError(`${src} is already a quantized checkpoint (${QUANT_MANIFEST}); quantize the original`, 'E_PARAM');
  const ckpt = openCheckpoint(src);
  if (out === src) throw new DimooError('the output folder must differ from the checkpoint folder', 'E_PARAM');
  if (fs.existsSync(out)) {
    if (!fs.statSync(out).isDirectory()) throw new DimooError(`${out} exists and is not a folder`, 'E_PARAM');
    const entries = fs.readdirSync(out);
    if (entries.length > 0 && !entries.includes(QUANT_MANIFEST)) {
      throw new DimooError(`${out} is not empty and holds no quantized checkpoint; choose a new or empty folder`, 'E_PARAM');
    }
    fs.rmSync(path.join(out, QUANT_MANIFEST), { force: true });
  }
  makeDirs(out);

  const c = ckpt.config;
  const weightsFile = `model-q${bits}.safetensors`;
  const linears: Record<string, QuantManifestLinear> = {};
  const plain: Record<string, string> = {};
  const entries: WriteEntry[] = [];
  let total = 0;
  for (const e of expectedTensors(c)) total += ckpt.weights.get(e.name)!.byteLength;
  if (c.weightTying) total += ckpt.weights.get('model.transformer.wte.weight')!.byteLength;
  let done = 0;
  const progress = (n: number): void => {
    done += n;
    opts.onProgress?.(done, total);
  };

  const embeddingName = 'model.transformer.wte.weight';
  const embedding8 = !c.weightTying && (opts.embedding ?? 'int8') === 'int8';
  /** Writes `name` [N, K] as blocks: data U8 [N, K/bs, blob] and scales F32 [N*K/bs]. */
  const pushBlocks = (name: string, t: TensorInfo, wantBits: QuantBits, wantBlock: number): void => {
    const [N, K] = t.shape as [number, number];
    const spec: QuantSpec = { bits: wantBits, blockSize: blockSizeFor(K, wantBlock) };
    const blocks = K / spec.blockSize;
    const dataName = `${name}.q${wantBits}`;
    const scalesName = `${name}.scales`;
    linears[name] = { data: dataName, scales: scalesName, N, K, block_size: spec.blockSize };
    if (wantBits !== bits) linears[name]!.bits = wantBits;
    // The data producer fills the scales; the scales entry (next) writes them.
    const scales = new Float32Array(N * blocks);
    entries.push({
      name: dataName,
      dtype: 'U8',
      shape: [N, blocks, blobBytes(spec)],
      data: (write) => {
        const chunkRows = Math.max(1, Math.min(N, Math.floor((8 << 20) / K)));
        const reader = new RowReader(t, K, chunkRows);
        const buf: QuantizedRows = { data: new Uint8Array(chunkRows * blocks * blobBytes(spec)), scales: new Float32Array(chunkRows * blocks) };
        try {
          for (let r = 0; r < N; r += chunkRows) {
            const n = Math.min(chunkRows, N - r);
            const q = quantizeRows(reader.read(r, n), n, K, spec, buf);
            scales.set(q.scales.subarray(0, n * blocks), r * blocks);
            write(q.data.subarray(0, n * blocks * blobBytes(spec)));
            progress(n * K * dtypeSize(t.dtype));
          }
        } finally {
          reader.close();
        }
      },
    });
    entries.push({ name: scalesName, dtype: 'F32', shape: [N * blocks], data: (write) => write(new Uint8Array(scales.buffer)) });
  };
  /**
   * Writes `name` [N, K] as int8 [K, N] with a scale per output channel. The
   * transposed codes of one matrix are held in memory (N*K bytes: 0.55 GB for the
   * 8B output head) while its rows stream through.
   */
  const pushChannel = (name: string, t: TensorInfo): void => {
    const [N, K] = t.shape as [number, number];
    const dataName = `${name}.i8`;
    const scalesName = `${name}.scales`;
    linears[name] = { data: dataName, scales: scalesName, N, K, block_size: K, layout: 'channel' };
    const scales = new Float32Array(N);
    entries.push({
      name: dataName,
      dtype: 'I8',
      shape: [K, N],
      data: (write) => {
        const codes = new Int8Array(K * N);
        const chunkRows = Math.max(1, Math.min(N, Math.floor((8 << 20) / K)));
        const reader = new RowReader(t, K, chunkRows);
        try {
          for (let r = 0; r < N; r += chunkRows) {
            const n = Math.min(chunkRows, N - r);
            quantizeChannelRows(reader.read(r, n), n, K, r, N, { data: codes, scales });
            progress(n * K * dtypeSize(t.dtype));
          }
        } finally {
          reader.close();
        }
        for (let o = 0; o < codes.length; o += 64 << 20) write(new Uint8Array(codes.buffer, o, Math.min(64 << 20, codes.length - o)));
      },
    });
    entries.push({ name: scalesName, dtype: 'F32', shape: [N], data: (write) => write(new Uint8Array(scales.buffer)) });
  };

  for (const e of expectedTensors(c)) {
    const t = ckpt.weights.get(e.name)!;
    if (e.name === embeddingName && embedding8) {
      pushBlocks(e.name, t, 8, DEFAULT_BLOCK_SIZE[8]);
      continue;
    }
    if (!isLinearWeight(e.name, c) || (c.weightTying && e.name === embeddingName)) {
      plain[e.name] = e.name;
      entries.push({ name: e.name, dtype: t.dtype, shape: t.shape, data: copyProducer(t, progress) });
    }
    if (isLinearWeight(e.name, c)) {
      if (format === 'qgemm') pushChannel(e.name, t);
      else pushBlocks(e.name, t, bits, requested);
    }
  }

  const bytes = writeSafetensors(path.join(out, weightsFile), entries, { format: 'pt', dimoo_quantized: String(bits) });
  for (const f of SIDE_FILES) {
    const s = path.join(src, f);
    if (fs.existsSync(s)) fs.copyFileSync(s, path.join(out, f));
  }
  if (ckpt.vqvaeDir) copyTree(ckpt.vqvaeDir, path.join(out, 'vqvae'));
  let bf16Bytes = 0;
  for (const t of ckpt.weights.values()) bf16Bytes += t.byteLength;
  const manifest: QuantManifest = {
    format: QUANT_FORMAT,
    version: QUANT_VERSION,
    bits,
    ...(format === 'qgemm' && { quant_format: format }),
    block_size: requested,
    weights_file: weightsFile,
    linears,
    plain,
    source: { dir: src, parameters: [...ckpt.weights.values()].reduce((s, t) => s + numel(t.shape), 0), bytes: bf16Bytes },
  };
  atomicWriteFileSync(path.join(out, QUANT_MANIFEST), JSON.stringify(manifest, null, 1) + '\n');
  return { dir: out, manifest, weightsFile, bytes, seconds: (performance.now() - t0) / 1000 };
}

