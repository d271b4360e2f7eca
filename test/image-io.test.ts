import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import sharp from 'sharp';
import {
  formatForPath,
  probeImage,
  readImage,
  readImageRgba,
  writeImage,
} from '../src/image/io.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-io-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

// ---- hand-made PNGs: a header can claim any size without the pixels existing

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(b: Buffer): number {
  let c = 0xffffffff;
  for (const x of b) c = CRC_TABLE[(c ^ x) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function chunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}
function pngWithHeader(width: number, height: number, idat: Buffer): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  return Buffer.concat([
    Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]),
    chunk('IHDR', ihdr),
    chunk('IDAT', idat),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

function write(name: string, data: Buffer): string {
  const f = path.join(tmp, name);
  fs.writeFileSync(f, data);
  return f;
}

async function rejectsDimoo(p: Promise<unknown>, re: RegExp): Promise<void> {
  await assert.rejects(p, (e: Error) => {
    assert.equal(e.name, 'DimooError');
    assert.match(e.message, re);
    return true;
  });
}

test('a 20000x20000 PNG is refused from its header, before any pixel is decoded', async () => {
  // The file is a few dozen bytes: decoding was never possible, so refusal must come from the header.
  const f = write('huge.png', pngWithHeader(20000, 20000, zlib.deflateSync(Buffer.alloc(16))));
  assert.ok(fs.statSync(f).size < 100);
  const t0 = performance.now();
  await rejectsDimoo(
    readImage(f),
    /huge\.png: image is 20000x20000, larger than allowed \(at most 8192 px a side and 40\.0 megapixels\)/,
  );
  assert.ok(performance.now() - t0 < 1000);
  // Pixel-count limit alone (8000 x 6000 = 48 MP, sides under 8192).
  await rejectsDimoo(
    readImage(write('wide.png', pngWithHeader(8000, 6000, zlib.deflateSync(Buffer.alloc(16))))),
    /8000x6000, larger than allowed/,
  );
});

test('limits are configurable', async () => {
  const f = path.join(tmp, 'small.png');
  await sharp(Buffer.alloc(100 * 60 * 3, 90), { raw: { width: 100, height: 60, channels: 3 } })
    .png()
    .toFile(f);
  assert.equal((await readImage(f)).width, 100);
  await rejectsDimoo(
    readImage(f, { limits: { maxSide: 64 } }),
    /100x60, larger than allowed \(at most 64 px a side/,
  );
  await rejectsDimoo(readImage(f, { limits: { maxPixels: 5000 } }), /larger than allowed/);
});

test('corrupt, truncated, empty and zero-sized files give clear errors', async () => {
  const good = await sharp(Buffer.alloc(8 * 8 * 3, 200), {
    raw: { width: 8, height: 8, channels: 3 },
  })
    .png()
    .toBuffer();
  await rejectsDimoo(
    readImage(write('truncated.png', good.subarray(0, good.length - 30))),
    /truncated\.png: cannot decode image/,
  );
  const flipped = Buffer.from(good);
  flipped[flipped.length - 20] ^= 0xff; // inside the IDAT data / CRC
  await rejectsDimoo(readImage(write('flipped.png', flipped)), /flipped\.png: cannot decode image/);
  await rejectsDimoo(
    readImage(write('garbage.png', Buffer.from('definitely not an image'))),
    /garbage\.png: cannot decode image/,
  );
  await rejectsDimoo(
    readImage(write('empty.png', Buffer.alloc(0))),
    /empty\.png: cannot decode image/,
  );
  await rejectsDimoo(
    readImage(write('zero.png', pngWithHeader(0, 0, zlib.deflateSync(Buffer.alloc(0))))),
    /zero\.png: (cannot decode image|image has no pixels)/,
  );
  await rejectsDimoo(readImage(path.join(tmp, 'nope.png')), /nope\.png: file not found/);
  const svg = write(
    'x.svg',
    Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>'),
  );
  await rejectsDimoo(readImage(svg), /unsupported image format "svg"/);
});

test('transparency is composited on white; grey and 16-bit inputs become 8-bit RGB', async () => {
  // One red pixel at alpha 0, 128 and 255.
  const rgba = Buffer.from([255, 0, 0, 0, 255, 0, 0, 128, 255, 0, 0, 255]);
  const f = path.join(tmp, 'alpha.png');
  await sharp(rgba, { raw: { width: 3, height: 1, channels: 4 } })
    .png()
    .toFile(f);
  const rgb = await readImage(f);
  assert.equal(rgb.channels, 3);
  assert.deepEqual(Array.from(rgb.data.subarray(0, 3)), [255, 255, 255]);
  assert.deepEqual(Array.from(rgb.data.subarray(6, 9)), [255, 0, 0]);
  const mid = Array.from(rgb.data.subarray(3, 6));
  assert.equal(mid[0], 255);
  assert.ok(
    Math.abs(mid[1]! - 127) <= 1 && mid[1] === mid[2],
    `half-transparent red on white: ${mid}`,
  );
  assert.deepEqual(Array.from((await readImageRgba(f)).data.subarray(0, 4)), [255, 0, 0, 0]);

  const g = path.join(tmp, 'grey.png');
  await sharp(Buffer.from([0, 100, 200, 255]), { raw: { width: 2, height: 2, channels: 1 } })
    .png()
    .toFile(g);
  assert.deepEqual(
    Array.from((await readImage(g)).data),
    [0, 0, 0, 100, 100, 100, 200, 200, 200, 255, 255, 255],
  );

  const deep = path.join(tmp, 'deep.png');
  await sharp(Buffer.alloc(4 * 4 * 3, 77), { raw: { width: 4, height: 4, channels: 3 } })
    .png()
    .toColourspace('rgb16')
    .toFile(deep);
  const d = await readImage(deep);
  assert.equal(d.data.length, 48);
  assert.ok(d.data.every((v) => v === 77));
});

test('EXIF orientation is applied', async () => {
  // Left half red, right half blue; orientation 6 means "rotate 90 degrees clockwise to display".
  const W = 32;
  const H = 16;
  const px = Buffer.alloc(W * H * 3);
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++) px.set(x < 16 ? [250, 0, 0] : [0, 0, 250], (y * W + x) * 3);
  const f = path.join(tmp, 'rotated.jpg');
  await sharp(px, { raw: { width: W, height: H, channels: 3 } })
    .jpeg({ quality: 100 })
    .withMetadata({ orientation: 6 })
    .toFile(f);
  const info = await probeImage(f);
  assert.deepEqual([info.width, info.height, info.orientation], [16, 32, 6]);
  const img = await readImage(f);
  assert.deepEqual([img.width, img.height], [16, 32]);
  const at = (x: number, y: number): number[] =>
    Array.from(img.data.subarray((y * 16 + x) * 3, (y * 16 + x) * 3 + 3));
  assert.ok(at(8, 4)[0]! > 200 && at(8, 4)[2]! < 50, `top should be red: ${at(8, 4)}`);
  assert.ok(at(8, 28)[2]! > 200 && at(8, 28)[0]! < 50, `bottom should be blue: ${at(8, 28)}`);
});

test('writing by extension, atomically; PNG and lossless WebP round-trip exactly', async () => {
  const img = {
    data: new Uint8Array(17 * 9 * 3).map((_, i) => (i * 53) % 256),
    width: 17,
    height: 9,
    channels: 3,
  };
  const png = path.join(tmp, 'out.png');
  await writeImage(png, img);
  assert.deepEqual((await readImage(png)).data, img.data);
  const webp = path.join(tmp, 'out.webp');
  await writeImage(webp, img, { lossless: true });
  assert.deepEqual((await readImage(webp)).data, img.data);
  const jpg = path.join(tmp, 'out.JPEG');
  await writeImage(jpg, { ...img, data: new Uint8Array(img.data.length).fill(128) });
  assert.ok((await readImage(jpg)).data.every((v) => Math.abs(v - 128) <= 1));
  // Overwrite in place; no temp files left behind.
  await writeImage(png, { ...img, data: new Uint8Array(img.data.length) });
  assert.ok((await readImage(png)).data.every((v) => v === 0));
  assert.deepEqual(
    fs.readdirSync(tmp).filter((f) => f.includes('.tmp')),
    [],
  );

  assert.throws(
    () => formatForPath('x.bmp'),
    /x\.bmp: cannot tell the output format from extension "\.bmp"/,
  );
  await rejectsDimoo(writeImage(path.join(tmp, 'x.gif'), img), /extension "\.gif"/);
  // A missing folder is named as such (not the temporary file the write goes through first).
  await rejectsDimoo(
    writeImage(path.join(tmp, 'no-such-dir', 'x.png'), img),
    /no-such-dir: no such folder \(cannot write x\.png there\)/,
  );
  await assert.rejects(writeImage(path.join(tmp, 'y.png'), { ...img, width: 18 }), /do not match/);
});
