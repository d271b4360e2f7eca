/**
 * PNG text chunks (tEXt / iTXt), written and read. sharp (libvips) cannot set
 * arbitrary PNG text keys, so the chunks are spliced in after encoding: a
 * chunk is length + type + data + CRC-32, inserted right after IHDR.
 *
 * As PIL's PngInfo does: Latin-1 text goes in tEXt, anything else in an
 * uncompressed iTXt (UTF-8), so every reader that shows `parameters` (image
 * tools, exiftool, `identify -verbose`) sees the whole prompt.
 */
import { crc32 } from 'node:zlib';
import { DimooError } from '../errors.js';

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const E = 'E_IMAGE';

function chunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])) >>> 0, 0);
  return Buffer.concat([head, data, crc]);
}

function isLatin1(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0xff) return false;
  return true;
}

function checkKey(key: string): void {
  // PNG keywords: 1-79 Latin-1 printable characters, no leading/trailing/double spaces.
  if (
    !/^[\x21-\x7e\xa1-\xff]([\x20-\x7e\xa1-\xff]{0,77}[\x21-\x7e\xa1-\xff])?$/.test(key) ||
    key.includes('  ')
  )
    throw new DimooError(
      `PNG text key ${JSON.stringify(key)} is not a valid PNG keyword`,
      'E_PARAM',
    );
}

function textChunk(key: string, value: string): Buffer {
  checkKey(key);
  if (isLatin1(value))
    return chunk(
      'tEXt',
      Buffer.concat([Buffer.from(key, 'latin1'), Buffer.from([0]), Buffer.from(value, 'latin1')]),
    );
  // iTXt: key \0 compression-flag(0) compression-method(0) language-tag \0 translated-key \0 text
  return chunk(
    'iTXt',
    Buffer.concat([
      Buffer.from(key, 'latin1'),
      Buffer.from([0, 0, 0, 0, 0]),
      Buffer.from(value, 'utf8'),
    ]),
  );
}

interface RawChunk {
  type: string;
  start: number;
  data: Buffer;
}

function* chunks(png: Uint8Array, what: string): Generator<RawChunk> {
  const buf = Buffer.from(png.buffer, png.byteOffset, png.byteLength);
  if (buf.length < 8 || !buf.subarray(0, 8).equals(SIGNATURE))
    throw new DimooError(`${what}: not a PNG file`, E);
  let off = 8;
  while (off + 12 <= buf.length) {
    const len = buf.readUInt32BE(off);
    const type = buf.toString('latin1', off + 4, off + 8);
    if (off + 12 + len > buf.length)
      throw new DimooError(`${what}: PNG chunk ${type} runs past the end of the file`, E);
    yield { type, start: off, data: buf.subarray(off + 8, off + 8 + len) };
    off += 12 + len;
    if (type === 'IEND') return;
  }
  throw new DimooError(`${what}: PNG file ends without an IEND chunk`, E);
}

/** The PNG with one text chunk per entry inserted after its IHDR chunk. */
export function addPngText(png: Uint8Array, entries: Readonly<Record<string, string>>): Buffer {
  const first = chunks(png, 'PNG to annotate').next();
  if (first.done || first.value.type !== 'IHDR')
    throw new DimooError('PNG to annotate: first chunk is not IHDR', E);
  const at = first.value.start + 12 + first.value.data.length;
  const buf = Buffer.from(png.buffer, png.byteOffset, png.byteLength);
  const added = Object.entries(entries).map(([k, v]) => textChunk(k, v));
  return Buffer.concat([buf.subarray(0, at), ...added, buf.subarray(at)]);
}

/** Every tEXt and uncompressed iTXt entry of a PNG (later duplicates win). */
export function readPngText(png: Uint8Array, what = 'PNG'): Record<string, string> {
  const out: Record<string, string> = {};
  for (const c of chunks(png, what)) {
    if (c.type === 'tEXt') {
      const z = c.data.indexOf(0);
      if (z > 0) out[c.data.toString('latin1', 0, z)] = c.data.toString('latin1', z + 1);
    } else if (c.type === 'iTXt') {
      const z = c.data.indexOf(0);
      if (z <= 0 || c.data[z + 1] !== 0) continue; // compressed iTXt: not written by us
      const lang = c.data.indexOf(0, z + 3);
      const tkey = lang < 0 ? -1 : c.data.indexOf(0, lang + 1);
      if (tkey < 0) continue;
      out[c.data.toString('latin1', 0, z)] = c.data.toString('utf8', tkey + 1);
    }
  }
  return out;
}
