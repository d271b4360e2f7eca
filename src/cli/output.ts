/**
 * Output helpers: JSON on stdout, image files by extension, small text tables.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Writable } from 'node:stream';
import { DimooError } from '../errors.js';
import type { RgbImage } from '../pipelines/types.js';

/** One JSON document per line: easy for `jq` and for line-based readers. */
export function writeJson(stream: Writable, value: unknown): void {
  stream.write(JSON.stringify(value) + '\n');
}

const IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg', '.webp'];

/** The folder an output file goes to must exist: said before any compute, naming the folder. */
export function checkOutFolder(flag: string, file: string): void {
  const dir = path.dirname(path.resolve(file));
  let isDir = false;
  try {
    isDir = fs.statSync(dir).isDirectory();
  } catch {
    /* missing: said below */
  }
  if (!isDir)
    throw new DimooError(`${flag} ${file}: folder ${path.dirname(file)} does not exist (create it first)`, 'E_PARAM');
}

/** Checked while parsing (format and folder), so a typo in --out fails before minutes of sampling. */
export function checkImageOutPath(flag: string, file: string): void {
  const ext = path.extname(file).toLowerCase();
  if (!IMAGE_EXTENSIONS.includes(ext)) {
    throw new DimooError(
      `${flag} ${file}: unknown image format "${ext}" (use ${IMAGE_EXTENSIONS.join(', ')})`,
      'E_PARAM',
    );
  }
  checkOutFolder(flag, file);
}

/**
 * Writes an RGB image atomically; sharp is loaded only when an image is
 * written. `parameters` (how the image was made) goes into a PNG text chunk.
 */
export async function writeRgbImage(file: string, img: RgbImage, parameters?: string): Promise<void> {
  const { writeImage } = await import('../image/io.js');
  await writeImage(
    file,
    { data: img.data, width: img.width, height: img.height, channels: 3 },
    parameters !== undefined ? { text: { parameters } } : {},
  );
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[u]}`;
}

/** 8_030_261_248 -> "8.03 B"; parameter counts read better in SI units. */
export function formatCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} K`;
  return String(n);
}

export function formatMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`;
}

/** Two-column key/value table with aligned keys. */
export function formatKeyValues(rows: [string, string][], indent = '  '): string {
  const w = Math.max(0, ...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => `${indent}${k.padEnd(w)}  ${v}`).join('\n');
}

/** A table with a header row; numeric-looking cells are right-aligned. */
export function formatTable(header: string[], rows: string[][], indent = '  '): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const numeric = /^[\d.,\s]+[A-Za-z]*$/;
  const line = (cells: string[]) =>
    indent +
    cells
      .map((c, i) => (i > 0 && numeric.test(c) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}
