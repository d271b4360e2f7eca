/**
 * Safetensors reader and writer.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON header
 * (`{name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?: {...}}`,
 * offsets relative to the data section), then the data section.
 *
 * The reader parses only the header and reads tensor bytes on demand with
 * positioned reads, so multi-GB shards never have to fit in memory.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DimooError } from '../errors.js';
import {
  type Dtype,
  DTYPES,
  bf16ToF32,
  dtypeSize,
  f16ToF32,
  isDtype,
  isIntDtype,
} from './dtypes.js';
import { atomicWriteWithFd, writeAllSync } from '../util/atomic-write.js';

export interface TensorInfo {
  name: string;
  dtype: Dtype;
  shape: number[];
  /** Path of the file holding the tensor. */
  file: string;
  /** Absolute byte offset of the tensor's first byte in `file`. */
  byteOffset: number;
  byteLength: number;
}

/** The reference implementation refuses headers above 100 MB; so do we. */
export const MAX_HEADER_BYTES = 100_000_000;

const E = 'E_SAFETENSORS';

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

function isNonNegInt(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

export type AnyTypedArray =
  | Uint8Array
  | Int8Array
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | Float32Array
  | Float64Array
  | BigInt64Array
  | BigUint64Array;

/** Typed view over an (aligned) ArrayBuffer for a dtype; 16-bit floats stay raw bits. */
export function typedView(
  dtype: Dtype,
  buf: ArrayBuffer,
  byteOffset: number,
  length: number,
): AnyTypedArray {
  switch (dtype) {
    case 'BOOL':
    case 'U8':
      return new Uint8Array(buf, byteOffset, length);
    case 'I8':
      return new Int8Array(buf, byteOffset, length);
    case 'I16':
      return new Int16Array(buf, byteOffset, length);
    case 'U16':
    case 'F16':
    case 'BF16':
      return new Uint16Array(buf, byteOffset, length);
    case 'I32':
      return new Int32Array(buf, byteOffset, length);
    case 'U32':
      return new Uint32Array(buf, byteOffset, length);
    case 'F32':
      return new Float32Array(buf, byteOffset, length);
    case 'F64':
      return new Float64Array(buf, byteOffset, length);
    case 'I64':
      return new BigInt64Array(buf, byteOffset, length);
    case 'U64':
      return new BigUint64Array(buf, byteOffset, length);
  }
}

function readFullySync(fd: number, dst: Uint8Array, position: number, file: string): void {
  let off = 0;
  while (off < dst.byteLength) {
    const n = fs.readSync(fd, dst, off, dst.byteLength - off, position + off);
    if (n === 0) {
      throw new DimooError(
        `${file}: unexpected end of file at byte ${position + off} (wanted ${dst.byteLength} bytes from ${position})`,
        E,
      );
    }
    off += n;
  }
}

export class SafetensorsFile {
  private constructor(
    readonly path: string,
    readonly metadata: Record<string, string>,
    /** Absolute byte offset of the data section (8 + header length). */
    readonly dataStart: number,
    readonly fileSize: number,
    readonly tensors: Map<string, TensorInfo>,
  ) {}

  /** Parses and validates the header only; tensor data is read lazily. */
  static open(file: string): SafetensorsFile {
    const p = path.resolve(file);
    let fd: number;
    try {
      fd = fs.openSync(p, 'r');
    } catch (e) {
      throw new DimooError(`${p}: cannot open safetensors file (${(e as Error).message})`, E);
    }
    try {
      const st = fs.fstatSync(fd);
      // Opening a folder succeeds on Linux; reading it would fail with a bare EISDIR.
      if (!st.isFile()) {
        throw new DimooError(
          `${p}: not a safetensors file (${st.isDirectory() ? 'it is a folder' : 'not a regular file'})`,
          E,
        );
      }
      const size = st.size;
      if (size < 8) {
        throw new DimooError(
          `${p}: file is ${size} bytes, too short for a safetensors header (needs at least 8)`,
          E,
        );
      }
      const lenBuf = Buffer.alloc(8);
      readFullySync(fd, lenBuf, 0, p);
      const n64 = lenBuf.readBigUInt64LE(0);
      if (n64 > BigInt(MAX_HEADER_BYTES)) {
        throw new DimooError(
          `${p}: header length ${n64} is absurd (limit ${MAX_HEADER_BYTES} bytes); not a safetensors file?`,
          E,
        );
      }
      const n = Number(n64);
      if (8 + n > size) {
        throw new DimooError(
          `${p}: header length ${n} goes beyond the end of the file (${size} bytes); file truncated?`,
          E,
        );
      }
      const hbuf = Buffer.alloc(n);
      readFullySync(fd, hbuf, 8, p);
      let header: unknown;
      try {
        header = JSON.parse(hbuf.toString('utf8'));
      } catch (e) {
        throw new DimooError(`${p}: header is not valid JSON (${(e as Error).message})`, E);
      }
      return SafetensorsFile.fromHeader(p, header, 8 + n, size);
    } finally {
      fs.closeSync(fd);
    }
  }

  private static fromHeader(
    p: string,
    header: unknown,
    dataStart: number,
    size: number,
  ): SafetensorsFile {
    if (typeof header !== 'object' || header === null || Array.isArray(header)) {
      throw new DimooError(`${p}: header must be a JSON object`, E);
    }
    const dataSize = size - dataStart;
    const metadata: Record<string, string> = {};
    const tensors = new Map<string, TensorInfo>();
    const spans: { name: string; begin: number; end: number }[] = [];
    for (const [name, v] of Object.entries(header as Record<string, unknown>)) {
      if (name === '__metadata__') {
        if (v === null) continue;
        if (typeof v !== 'object' || Array.isArray(v)) {
          throw new DimooError(`${p}: __metadata__ must be an object of string -> string`, E);
        }
        for (const [k, s] of Object.entries(v as Record<string, unknown>)) {
          if (typeof s !== 'string') {
            throw new DimooError(
              `${p}: __metadata__ entry "${k}" must be a string, got ${JSON.stringify(s)}`,
              E,
            );
          }
          metadata[k] = s;
        }
        continue;
      }
      const where = `${p}: tensor "${name}"`;
      if (typeof v !== 'object' || v === null || Array.isArray(v)) {
        throw new DimooError(`${where}: header entry must be an object`, E);
      }
      const ent = v as Record<string, unknown>;
      if (!isDtype(ent.dtype)) {
        throw new DimooError(
          `${where}: unknown dtype ${JSON.stringify(ent.dtype)} (known: ${DTYPES.join(', ')})`,
          E,
        );
      }
      const dtype = ent.dtype;
      const shape = ent.shape;
      if (!Array.isArray(shape) || !shape.every(isNonNegInt)) {
        throw new DimooError(
          `${where}: shape must be a list of non-negative integers, got ${JSON.stringify(shape)}`,
          E,
        );
      }
      const offs = ent.data_offsets;
      if (
        !Array.isArray(offs) ||
        offs.length !== 2 ||
        !offs.every(isNonNegInt) ||
        offs[0] > offs[1]
      ) {
        throw new DimooError(
          `${where}: data_offsets must be [begin, end] integers with begin <= end, got ${JSON.stringify(offs)}`,
          E,
        );
      }
      const [begin, end] = offs as [number, number];
      const expected = numel(shape as number[]) * dtypeSize(dtype);
      if (end - begin !== expected) {
        throw new DimooError(
          `${where}: byte size ${end - begin} does not match shape ${fmtShape(shape as number[])} x ${dtype} (${expected} bytes)`,
          E,
        );
      }
      if (end > dataSize) {
        throw new DimooError(
          `${where}: data_offsets [${begin}, ${end}] go beyond the data section (${dataSize} bytes); file truncated?`,
          E,
        );
      }
      spans.push({ name, begin, end });
      tensors.set(name, {
        name,
        dtype,
        shape: (shape as number[]).slice(),
        file: p,
        byteOffset: dataStart + begin,
        byteLength: end - begin,
      });
    }
    // Empty tensors occupy no bytes, so they cannot overlap anything.
    const filled = spans.filter((s) => s.end > s.begin).sort((a, b) => a.begin - b.begin);
    for (let i = 1; i < filled.length; i++) {
      const a = filled[i - 1]!;
      const b = filled[i]!;
      if (b.begin < a.end) {
        throw new DimooError(
          `${p}: tensors "${a.name}" [${a.begin}, ${a.end}] and "${b.name}" [${b.begin}, ${b.end}] overlap`,
          E,
        );
      }
    }
    // The format packs tensors back to back from offset 0 to the end of the file.
    // A header length that is off (every tensor read a few bytes askew), trailing
    // bytes or holes all break that, so they are refused instead of read as weights.
    let expectedBegin = 0;
    for (const s of filled) {
      if (s.begin !== expectedBegin) {
        throw new DimooError(
          expectedBegin === 0
            ? `${p}: tensor "${s.name}" starts at byte ${s.begin} of the data section; the first tensor must start at 0 (header length wrong, or a gap)`
            : `${p}: ${s.begin - expectedBegin} unused bytes before tensor "${s.name}" (data_offsets [${s.begin}, ${s.end}]); tensors must be contiguous`,
          E,
        );
      }
      expectedBegin = s.end;
    }
    if (expectedBegin !== dataSize) {
      throw new DimooError(
        `${p}: the tensors end at byte ${expectedBegin} of the data section but it has ${dataSize} bytes (${dataSize - expectedBegin} trailing bytes: header length wrong, or extra data)`,
        E,
      );
    }
    return new SafetensorsFile(p, metadata, dataStart, size, tensors);
  }

  get names(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new DimooError(`${this.path}: no tensor named "${name}"`, E);
    return t;
  }

  /** Raw tensor bytes in a fresh, 8-byte-aligned buffer. */
  readBytes(name: string): Buffer {
    const t = this.info(name);
    return readTensorBytes(t, 0, t.byteLength);
  }

  /** Typed array matching the dtype (BF16/F16 as raw Uint16 bits). */
  readTyped(name: string): AnyTypedArray {
    const t = this.info(name);
    const b = readTensorBytes(t, 0, t.byteLength);
    return typedView(t.dtype, b.buffer as ArrayBuffer, b.byteOffset, numel(t.shape));
  }

  readFloat32(name: string): Float32Array {
    return readTensorFloat32(this.info(name));
  }

  /** Elements [start, start+count) in row-major order as float32: for chunked work on big tensors. */
  readFloat32Range(name: string, start: number, count: number): Float32Array {
    return readTensorFloat32(this.info(name), start, count);
  }

  readInt64(name: string): BigInt64Array {
    const t = this.info(name);
    if (t.dtype !== 'I64') {
      throw new DimooError(`${this.path}: tensor "${name}" is ${t.dtype}, expected I64`, E);
    }
    return this.readTyped(name) as BigInt64Array;
  }

  /** Any integer or BOOL tensor as plain numbers (token ids, indices); errors beyond 2^53. */
  readIntegers(name: string): number[] {
    const t = this.info(name);
    if (!isIntDtype(t.dtype) && t.dtype !== 'BOOL') {
      throw new DimooError(
        `${this.path}: tensor "${name}" is ${t.dtype}, expected an integer dtype`,
        E,
      );
    }
    const a = this.readTyped(name);
    const out: number[] = new Array(a.length);
    for (let i = 0; i < a.length; i++) {
      const v = a[i]!;
      if (typeof v === 'bigint') {
        if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
          throw new DimooError(
            `${this.path}: tensor "${name}" element ${i} = ${v} exceeds 2^53`,
            E,
          );
        }
        out[i] = Number(v);
      } else {
        out[i] = v;
      }
    }
    return out;
  }
}

/** Positioned read of part of a tensor; the result owns its own ArrayBuffer (aligned at 0). */
export function readTensorBytes(
  t: TensorInfo,
  byteStart = 0,
  byteLength = t.byteLength - byteStart,
): Buffer {
  if (byteStart < 0 || byteLength < 0 || byteStart + byteLength > t.byteLength) {
    throw new DimooError(
      `${t.file}: tensor "${t.name}": byte range [${byteStart}, ${byteStart + byteLength}) outside its ${t.byteLength} bytes`,
      E,
    );
  }
  const out = Buffer.from(new ArrayBuffer(byteLength));
  if (byteLength === 0) return out;
  let fd: number;
  try {
    fd = fs.openSync(t.file, 'r');
  } catch (e) {
    throw new DimooError(
      `${t.file}: cannot open to read tensor "${t.name}" (${(e as Error).message})`,
      E,
    );
  }
  try {
    readFullySync(fd, out, t.byteOffset + byteStart, t.file);
  } finally {
    fs.closeSync(fd);
  }
  return out;
}

/** Float tensor (BF16/F16/F32/F64) -> Float32Array, optionally a range of elements. */
export function readTensorFloat32(t: TensorInfo, start = 0, count?: number): Float32Array {
  const total = numel(t.shape);
  const n = count ?? total - start;
  if (start < 0 || n < 0 || start + n > total) {
    throw new DimooError(
      `${t.file}: tensor "${t.name}": element range [${start}, ${start + n}) outside its ${total} elements`,
      E,
    );
  }
  const size = dtypeSize(t.dtype);
  const read = (): ArrayBuffer => readTensorBytes(t, start * size, n * size).buffer as ArrayBuffer;
  switch (t.dtype) {
    case 'F32':
      return new Float32Array(read(), 0, n);
    case 'BF16':
      return bf16ToF32(new Uint16Array(read(), 0, n));
    case 'F16':
      return f16ToF32(new Uint16Array(read(), 0, n));
    case 'F64':
      return Float32Array.from(new Float64Array(read(), 0, n));
    default:
      throw new DimooError(
        `${t.file}: tensor "${t.name}" is ${t.dtype}, not a float dtype (BF16, F16, F32, F64)`,
        E,
      );
  }
}

// ---------------------------------------------------------------- writer

/** Streams a tensor's bytes; `write` consumes the chunk before returning, so it may be reused. */
export type TensorProducer = (write: (chunk: Uint8Array) => void) => void;

export interface WriteEntry {
  name: string;
  dtype: Dtype;
  shape: number[];
  data: Uint8Array | ArrayBufferView | TensorProducer;
}

function bytesOf(v: ArrayBufferView): Uint8Array {
  return v instanceof Uint8Array ? v : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

/** Header JSON padded with spaces so the data section starts 8-byte aligned. */
export function buildHeader(
  entries: readonly { name: string; dtype: Dtype; shape: readonly number[] }[],
  metadata?: Record<string, string>,
): { header: Buffer; offsets: [number, number][] } {
  const obj: Record<string, unknown> = {};
  const offsets: [number, number][] = [];
  let pos = 0;
  for (const e of entries) {
    if (e.name === '__metadata__' || e.name.length === 0) {
      throw new DimooError(`safetensors writer: invalid tensor name ${JSON.stringify(e.name)}`, E);
    }
    if (Object.prototype.hasOwnProperty.call(obj, e.name)) {
      throw new DimooError(`safetensors writer: duplicate tensor name "${e.name}"`, E);
    }
    if (!isDtype(e.dtype)) {
      throw new DimooError(
        `safetensors writer: tensor "${e.name}" has unknown dtype ${JSON.stringify(e.dtype)}`,
        E,
      );
    }
    if (!e.shape.every(isNonNegInt)) {
      throw new DimooError(
        `safetensors writer: tensor "${e.name}" has invalid shape ${JSON.stringify(e.shape)}`,
        E,
      );
    }
    const len = numel(e.shape) * dtypeSize(e.dtype);
    offsets.push([pos, pos + len]);
    obj[e.name] = { dtype: e.dtype, shape: [...e.shape], data_offsets: [pos, pos + len] };
    pos += len;
  }
  if (metadata && Object.keys(metadata).length > 0) obj.__metadata__ = metadata;
  const json = Buffer.from(JSON.stringify(obj), 'utf8');
  const padded = Math.ceil(json.length / 8) * 8;
  const header = Buffer.alloc(8 + padded, 0x20);
  header.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(header, 8);
  return { header, offsets };
}

const STAGE_BYTES = 4 << 20;

/**
 * Writes a safetensors file atomically. Tensor data may be given as bytes or
 * as a producer callback, so huge checkpoints stream through a small buffer.
 * Returns the total file size.
 */
export function writeSafetensors(
  file: string,
  entries: readonly WriteEntry[],
  metadata?: Record<string, string>,
): number {
  const { header, offsets } = buildHeader(entries, metadata);
  let total = header.length;
  atomicWriteWithFd(file, (fd) => {
    writeAllSync(fd, header);
    // Small chunks are coalesced so a chatty producer does not mean many syscalls.
    const stage = Buffer.allocUnsafe(STAGE_BYTES);
    let staged = 0;
    const flush = (): void => {
      if (staged > 0) writeAllSync(fd, stage.subarray(0, staged));
      staged = 0;
    };
    entries.forEach((e, i) => {
      const [b, end] = offsets[i]!;
      const want = end - b;
      let got = 0;
      const write = (chunk: Uint8Array): void => {
        got += chunk.byteLength;
        if (got > want) {
          throw new DimooError(
            `${file}: tensor "${e.name}": producer wrote more than its ${want} bytes`,
            E,
          );
        }
        if (chunk.byteLength >= STAGE_BYTES / 4) {
          flush();
          writeAllSync(fd, chunk);
        } else {
          if (staged + chunk.byteLength > STAGE_BYTES) flush();
          stage.set(chunk, staged);
          staged += chunk.byteLength;
        }
      };
      if (typeof e.data === 'function') e.data(write);
      else write(bytesOf(e.data));
      if (got !== want) {
        throw new DimooError(
          `${file}: tensor "${e.name}": got ${got} bytes of data, shape ${fmtShape(e.shape)} x ${e.dtype} needs ${want}`,
          E,
        );
      }
      total += want;
    });
    flush();
  });
  return total;
}
