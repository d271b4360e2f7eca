import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DimooError } from '../src/errors.js';
import {
  SafetensorsFile,
  writeSafetensors,
  type WriteEntry,
} from '../src/checkpoint/safetensors.js';
import {
  DTYPES,
  DTYPE_SIZES,
  bf16ToF32,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  f32ToBf16Scalar,
  f32ToF16Scalar,
} from '../src/checkpoint/dtypes.js';
import { goldenCheckpointDir } from './helpers/golden.js';

let tmp: string;
before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-st-'));
});
after(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** Raw safetensors bytes from a header (object or literal text) and a data section. */
function rawFile(name: string, header: unknown, data: Uint8Array = new Uint8Array(0)): string {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const p = path.join(tmp, name);
  fs.writeFileSync(p, Buffer.concat([len, json, data]));
  return p;
}

function expectError(fn: () => unknown, ...parts: (string | RegExp)[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof DimooError, `expected DimooError, got ${String(e)}`);
    for (const p of parts) {
      if (typeof p === 'string')
        assert.ok(e.message.includes(p), `message "${e.message}" lacks "${p}"`);
      else assert.match(e.message, p);
    }
    return true;
  });
}

function f32(x: number): number {
  return Math.fround(x);
}

describe('golden checkpoint shards', () => {
  const shard1 = () => path.join(goldenCheckpointDir(), 'model-00001-of-00002.safetensors');
  const shard2 = () => path.join(goldenCheckpointDir(), 'model-00002-of-00002.safetensors');

  test('header: names, shapes, dtypes, metadata, data start', () => {
    const f = SafetensorsFile.open(shard1());
    assert.deepEqual(f.metadata, { format: 'pt' });
    assert.equal(f.dataStart, 8 + 1064);
    assert.equal(f.tensors.size, 10);
    const wte = f.info('model.transformer.wte.weight');
    assert.equal(wte.dtype, 'BF16');
    assert.deepEqual(wte.shape, [134548, 32]);
    assert.equal(wte.byteLength, 134548 * 32 * 2);
    assert.deepEqual(f.info('model.transformer.blocks.0.ff_proj.weight').shape, [64, 32]);
    assert.deepEqual(f.info('model.transformer.blocks.0.ff_out.weight').shape, [32, 64]);
    for (const t of f.tensors.values()) {
      assert.equal(t.dtype, 'BF16');
      assert.ok(t.byteOffset >= f.dataStart);
      assert.ok(t.byteOffset + t.byteLength <= f.fileSize);
    }
    const g = SafetensorsFile.open(shard2());
    assert.deepEqual(
      [...g.tensors.keys()].sort(),
      [
        ...[
          'attn_norm',
          'attn_out',
          'ff_norm',
          'ff_out',
          'ff_proj',
          'k_proj',
          'q_proj',
          'up_proj',
          'v_proj',
        ].map((n) => `model.transformer.blocks.1.${n}.weight`),
        'model.transformer.ff_out.weight',
        'model.transformer.ln_f.weight',
      ].sort(),
    );
  });

  test('bf16 values read as float32 match a manual decode of the raw bytes', () => {
    const file = shard1();
    const f = SafetensorsFile.open(file);
    const raw = fs.readFileSync(file);
    for (const name of [
      'model.transformer.blocks.0.attn_norm.weight',
      'model.transformer.blocks.0.q_proj.weight',
    ]) {
      const t = f.info(name);
      const vals = f.readFloat32(name);
      assert.equal(vals.length, t.byteLength / 2);
      const dv = new DataView(new ArrayBuffer(4));
      for (let i = 0; i < vals.length; i++) {
        dv.setUint32(0, raw.readUInt16LE(t.byteOffset + 2 * i) << 16);
        assert.equal(vals[i], dv.getFloat32(0), `${name}[${i}]`);
        assert.ok(Number.isFinite(vals[i]));
      }
    }
    const norm = f.readFloat32('model.transformer.blocks.0.attn_norm.weight');
    assert.ok(
      norm.some((v) => v !== 1),
      'golden norm weights are not all ones',
    );
    assert.ok(norm.every((v) => v > 0.5 && v < 1.5));
    // Range read of the big embedding equals the same slice of a full read.
    const rows = f.readFloat32Range('model.transformer.wte.weight', 32 * 1000, 64);
    const manual = bf16ToF32(
      new Uint16Array(f.readBytes('model.transformer.wte.weight').buffer, 32 * 1000 * 2, 64),
    );
    assert.deepEqual(rows, manual);
  });
});

describe('dtype conversions', () => {
  test('dtype table', () => {
    assert.equal(DTYPES.length, 13);
    assert.equal(DTYPE_SIZES.BF16, 2);
    assert.equal(DTYPE_SIZES.I64, 8);
    assert.equal(DTYPE_SIZES.BOOL, 1);
  });

  test('bf16 round trip is exact for every non-NaN bf16 value', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const back = f32ToBf16(bf16ToF32(all));
    for (let i = 0; i < 65536; i++) {
      const isNaN = (i & 0x7f80) === 0x7f80 && (i & 0x7f) !== 0;
      if (!isNaN) assert.equal(back[i], i, `bits 0x${i.toString(16)}`);
      else assert.equal(back[i]! & 0x7fff, 0x7fc0);
    }
  });

  test('f32 -> bf16 rounds to nearest even like torch', () => {
    // 1 + 2^-8 lies exactly between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
    assert.equal(f32ToBf16Scalar(1 + 2 ** -8), 0x3f80);
    // 1 + 3*2^-8 lies between 1 + 2^-7 (odd) and 1 + 2^-6 (even): rounds up.
    assert.equal(f32ToBf16Scalar(1 + 3 * 2 ** -8), 0x3f82);
    // Just above the tie rounds up.
    assert.equal(f32ToBf16Scalar(1 + 2 ** -8 + 2 ** -20), 0x3f81);
    assert.equal(f32ToBf16Scalar(-2.5), 0xc020);
    assert.equal(f32ToBf16Scalar(0), 0);
    assert.equal(f32ToBf16Scalar(-0), 0x8000);
    assert.equal(f32ToBf16Scalar(Infinity), 0x7f80);
    assert.equal(f32ToBf16Scalar(-Infinity), 0xff80);
    assert.equal(f32ToBf16Scalar(NaN) & 0x7fff, 0x7fc0);
    // The largest f32 rounds up to infinity in bf16.
    assert.equal(f32ToBf16Scalar(3.4028234663852886e38), 0x7f80);
    // Array and scalar versions agree.
    const xs = new Float32Array([0.1, -3.14159, 1e-40, 65504, 1 + 2 ** -8]);
    assert.deepEqual([...f32ToBf16(xs)], [...xs].map(f32ToBf16Scalar));
  });

  test('f16 conversions: every value round trips; rounding, overflow and subnormals', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const wide = f16ToF32(all);
    const back = f32ToF16(wide);
    for (let i = 0; i < 65536; i++) {
      const isNaN = (i & 0x7c00) === 0x7c00 && (i & 0x3ff) !== 0;
      if (!isNaN) assert.equal(back[i], i, `bits 0x${i.toString(16)}`);
      else assert.ok(Number.isNaN(wide[i]));
    }
    assert.equal(wide[0x3c00], 1);
    assert.equal(wide[0x7bff], 65504);
    assert.equal(wide[0x0001], 2 ** -24);
    assert.equal(f32ToF16Scalar(65504), 0x7bff);
    assert.equal(f32ToF16Scalar(65520), 0x7c00); // halfway to 2^16 rounds to even = inf
    assert.equal(f32ToF16Scalar(65519), 0x7bff);
    assert.equal(f32ToF16Scalar(1 + 2 ** -11), 0x3c00); // tie -> even
    assert.equal(f32ToF16Scalar(1 + 3 * 2 ** -11), 0x3c02);
    assert.equal(f32ToF16Scalar(2 ** -25), 0); // tie between 0 and the smallest subnormal
    assert.equal(f32ToF16Scalar(3 * 2 ** -25), 2);
    assert.equal(f32ToF16Scalar(2 ** -14 - 2 ** -25), 0x0400); // rounds up into the normals
    assert.equal(f32ToF16Scalar(-1e-10), 0x8000);
    assert.equal(f32ToF16Scalar(1e10), 0x7c00);
    assert.equal(f32ToF16Scalar(-Infinity), 0xfc00);
    assert.ok((f32ToF16Scalar(NaN) & 0x7c00) === 0x7c00 && (f32ToF16Scalar(NaN) & 0x3ff) !== 0);
  });
});

describe('writer', () => {
  test('round trip of every dtype, metadata, aligned header padded with spaces', () => {
    const entries: WriteEntry[] = [
      { name: 'b', dtype: 'BOOL', shape: [3], data: new Uint8Array([1, 0, 1]) },
      { name: 'u8', dtype: 'U8', shape: [2, 2], data: new Uint8Array([0, 1, 254, 255]) },
      { name: 'i8', dtype: 'I8', shape: [2], data: new Int8Array([-128, 127]) },
      { name: 'i16', dtype: 'I16', shape: [2], data: new Int16Array([-32768, 12345]) },
      { name: 'u16', dtype: 'U16', shape: [1], data: new Uint16Array([65535]) },
      { name: 'f16', dtype: 'F16', shape: [2], data: f32ToF16(new Float32Array([1.5, -2])) },
      {
        name: 'bf16',
        dtype: 'BF16',
        shape: [3],
        data: f32ToBf16(new Float32Array([0.25, -7, 1e20])),
      },
      { name: 'i32', dtype: 'I32', shape: [2], data: new Int32Array([-5, 2 ** 31 - 1]) },
      { name: 'u32', dtype: 'U32', shape: [1], data: new Uint32Array([2 ** 32 - 1]) },
      { name: 'f32', dtype: 'F32', shape: [1, 3], data: new Float32Array([0.1, -0, Infinity]) },
      { name: 'f64', dtype: 'F64', shape: [2], data: new Float64Array([Math.PI, -1e300]) },
      { name: 'i64', dtype: 'I64', shape: [2], data: new BigInt64Array([-(2n ** 63n), 134547n]) },
      { name: 'u64', dtype: 'U64', shape: [1], data: new BigUint64Array([2n ** 64n - 1n]) },
      { name: 'empty', dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
      { name: 'scalar', dtype: 'F32', shape: [], data: new Float32Array([42]) },
    ];
    const p = path.join(tmp, 'all.safetensors');
    const size = writeSafetensors(p, entries, { format: 'pt', note: 'hi' });
    assert.equal(fs.statSync(p).size, size);
    const f = SafetensorsFile.open(p);
    assert.equal(f.dataStart % 8, 0);
    const header = fs.readFileSync(p).subarray(8, f.dataStart).toString('utf8');
    assert.match(header, /^\{.*\} *$/);
    assert.deepEqual(f.metadata, { format: 'pt', note: 'hi' });
    assert.deepEqual(
      f.names,
      entries.map((e) => e.name),
    );
    for (const e of entries) {
      const t = f.info(e.name);
      assert.equal(t.dtype, e.dtype);
      assert.deepEqual(t.shape, e.shape);
      const d = e.data as ArrayBufferView;
      assert.deepEqual(
        new Uint8Array(f.readBytes(e.name)),
        new Uint8Array(d.buffer, d.byteOffset, d.byteLength),
        e.name,
      );
    }
    assert.deepEqual([...f.readFloat32('f16')], [1.5, -2]);
    const bf = f.readFloat32('bf16');
    assert.deepEqual([bf[0], bf[1]], [0.25, -7]);
    assert.ok(Math.abs(bf[2]! - 1e20) / 1e20 < 2 ** -8, 'bf16 keeps ~8 bits of mantissa');
    assert.deepEqual([...f.readFloat32('f64')], [f32(Math.PI), -Infinity]);
    assert.deepEqual([...f.readInt64('i64')], [-(2n ** 63n), 134547n]);
    assert.deepEqual(f.readIntegers('i32'), [-5, 2 ** 31 - 1]);
    assert.deepEqual(f.readIntegers('b'), [1, 0, 1]);
    assert.deepEqual([...(f.readTyped('scalar') as Float32Array)], [42]);
    assert.equal(f.readFloat32('empty').length, 0);
    expectError(() => f.readFloat32('i32'), p, '"i32"', 'not a float dtype');
    expectError(() => f.readInt64('f32'), p, '"f32"');
    expectError(() => f.readIntegers('i64'), p, '"i64"', 'exceeds 2^53');
    expectError(() => f.info('nope'), p, '"nope"');
    assert.deepEqual(
      fs.readdirSync(tmp).filter((n) => n.endsWith('.tmp')),
      [],
      'no temp files left',
    );
  });

  test('streams tensors from producers in chunks of any size', () => {
    const n = 3_000_001; // crosses the writer's staging size; odd on purpose
    const p = path.join(tmp, 'stream.safetensors');
    let calls = 0;
    writeSafetensors(p, [
      {
        name: 'big',
        dtype: 'U8',
        shape: [n],
        data: (write) => {
          const chunk = new Uint8Array(65537);
          for (let done = 0; done < n;) {
            const k = Math.min(chunk.length, n - done);
            for (let i = 0; i < k; i++) chunk[i] = (done + i) % 251;
            write(chunk.subarray(0, k)); // the chunk is reused: the writer must consume it now
            done += k;
            calls++;
          }
        },
      },
      { name: 'after', dtype: 'I32', shape: [2], data: new Int32Array([7, 8]) },
    ]);
    assert.ok(calls > 40);
    const f = SafetensorsFile.open(p);
    const b = f.readBytes('big');
    assert.equal(b.length, n);
    for (let i = 0; i < n; i += 9973) assert.equal(b[i], i % 251);
    assert.equal(b[n - 1], (n - 1) % 251);
    assert.deepEqual(f.readIntegers('after'), [7, 8]);
  });

  test('producer writing the wrong number of bytes fails and leaves nothing behind', () => {
    const p = path.join(tmp, 'short.safetensors');
    expectError(
      () =>
        writeSafetensors(p, [
          { name: 'x', dtype: 'F32', shape: [4], data: (w) => w(new Uint8Array(12)) },
        ]),
      p,
      '"x"',
      'needs 16',
    );
    expectError(
      () =>
        writeSafetensors(p, [
          { name: 'y', dtype: 'F32', shape: [1], data: (w) => w(new Uint8Array(8)) },
        ]),
      '"y"',
      'more than',
    );
    expectError(
      () =>
        writeSafetensors(p, [{ name: 'z', dtype: 'F32', shape: [2], data: new Float32Array(3) }]),
      '"z"',
    );
    assert.equal(fs.existsSync(p), false);
    assert.deepEqual(
      fs.readdirSync(tmp).filter((n) => n.endsWith('.tmp')),
      [],
    );
  });

  test('writer rejects duplicate names and bad dtypes', () => {
    const p = path.join(tmp, 'dup.safetensors');
    expectError(
      () =>
        writeSafetensors(p, [
          { name: 'a', dtype: 'U8', shape: [1], data: new Uint8Array(1) },
          { name: 'a', dtype: 'U8', shape: [1], data: new Uint8Array(1) },
        ]),
      'duplicate',
      '"a"',
    );
    expectError(
      () =>
        writeSafetensors(p, [
          { name: 'q', dtype: 'Q4' as 'U8', shape: [1], data: new Uint8Array(1) },
        ]),
      '"q"',
      'Q4',
    );
  });
});

describe('reader rejects broken files with the file and tensor named', () => {
  const ok = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };

  test('file shorter than 8 bytes', () => {
    const p = path.join(tmp, 'tiny.safetensors');
    fs.writeFileSync(p, Buffer.from([1, 2, 3]));
    expectError(() => SafetensorsFile.open(p), p, 'too short');
  });

  test('missing file', () => {
    const p = path.join(tmp, 'absent.safetensors');
    expectError(() => SafetensorsFile.open(p), p, 'cannot open');
  });

  test('header length beyond the file', () => {
    const p = path.join(tmp, 'beyond.safetensors');
    const b = Buffer.alloc(20);
    b.writeBigUInt64LE(1000n);
    fs.writeFileSync(p, b);
    expectError(() => SafetensorsFile.open(p), p, 'header length 1000', 'beyond');
  });

  test('absurd header length', () => {
    const p = path.join(tmp, 'absurd.safetensors');
    const b = Buffer.alloc(16);
    b.writeBigUInt64LE(2n ** 62n);
    fs.writeFileSync(p, b);
    expectError(() => SafetensorsFile.open(p), p, 'absurd');
  });

  test('truncated data section', () => {
    const good = path.join(tmp, 'good.safetensors');
    writeSafetensors(good, [{ name: 'w', dtype: 'F32', shape: [8], data: new Float32Array(8) }]);
    const bytes = fs.readFileSync(good);
    const p = path.join(tmp, 'trunc.safetensors');
    fs.writeFileSync(p, bytes.subarray(0, bytes.length - 5));
    expectError(() => SafetensorsFile.open(p), p, '"w"', 'beyond the data section');
  });

  test('corrupt JSON header', () => {
    const p = rawFile('badjson.safetensors', '{"w": {"dtype": "F32", ');
    expectError(() => SafetensorsFile.open(p), p, 'not valid JSON');
    const q = rawFile('array.safetensors', '[1,2]');
    expectError(() => SafetensorsFile.open(q), q, 'JSON object');
  });

  test('unknown dtype', () => {
    const p = rawFile('dtype.safetensors', { w: { ...ok, dtype: 'F8_E4M3X' } }, new Uint8Array(8));
    expectError(() => SafetensorsFile.open(p), p, '"w"', 'unknown dtype', 'F8_E4M3X');
  });

  test('bad shape', () => {
    for (const shape of [[-1], [1.5], 'x', [null]]) {
      const p = rawFile('shape.safetensors', { w: { ...ok, shape } }, new Uint8Array(8));
      expectError(() => SafetensorsFile.open(p), p, '"w"', 'shape');
    }
  });

  test('bad data_offsets', () => {
    for (const data_offsets of [[0], [8, 0], [0, '8'], null, [0, 8, 9]]) {
      const p = rawFile('offs.safetensors', { w: { ...ok, data_offsets } }, new Uint8Array(8));
      expectError(() => SafetensorsFile.open(p), p, '"w"', 'data_offsets');
    }
  });

  test('byte size does not match shape x dtype', () => {
    const p = rawFile(
      'size.safetensors',
      { w: { dtype: 'BF16', shape: [3, 2], data_offsets: [0, 8] } },
      new Uint8Array(8),
    );
    expectError(() => SafetensorsFile.open(p), p, '"w"', 'byte size 8', '12 bytes');
  });

  test('offsets outside the data section', () => {
    const p = rawFile(
      'outside.safetensors',
      { w: { ...ok, data_offsets: [8, 16] } },
      new Uint8Array(8),
    );
    expectError(() => SafetensorsFile.open(p), p, '"w"', 'beyond the data section');
  });

  test('overlapping tensors', () => {
    const p = rawFile(
      'overlap.safetensors',
      {
        a: { dtype: 'F32', shape: [2], data_offsets: [8, 16] },
        b: { dtype: 'F32', shape: [1], data_offsets: [0, 4] },
        c: { dtype: 'F32', shape: [2], data_offsets: [12, 20] },
      },
      new Uint8Array(20),
    );
    expectError(() => SafetensorsFile.open(p), p, '"a"', '"c"', 'overlap');
  });

  test('__metadata__ must map strings to strings', () => {
    const p = rawFile(
      'meta.safetensors',
      { __metadata__: { format: 1 }, w: ok },
      new Uint8Array(8),
    );
    expectError(() => SafetensorsFile.open(p), p, '__metadata__', 'format');
    const q = rawFile('meta2.safetensors', { __metadata__: ['pt'], w: ok }, new Uint8Array(8));
    expectError(() => SafetensorsFile.open(q), q, '__metadata__');
  });

  test('non-object tensor entry', () => {
    const p = rawFile('entry.safetensors', { w: 5 }, new Uint8Array(8));
    expectError(() => SafetensorsFile.open(p), p, '"w"');
  });
});
