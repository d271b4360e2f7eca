/**
 * `dimoo encode`: images -> VQ token grids, as the original's pre-tokenizer
 * does for training data. One image gives a grid file; a folder or a JSONL
 * list gives one JSONL record per image, skipping (and reporting) files that
 * cannot be read.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { DimooError, isDimooError } from '../../errors.js';
import type { DimooApi, EncodeOptions, TokenGrid } from '../../pipelines/types.js';
import { tempPathFor } from '../../util/atomic-write.js';
import { addModelOptions, type ModelCommandFlags } from '../common.js';
import type { CliContext } from '../context.js';
import { CancelledError } from '../errors.js';
import { requireVq, withModel } from '../model.js';
import { formatMs, writeJson } from '../output.js';
import { createProgressBar } from '../progress.js';
import { tokenGridJson, writeTokenGridFile } from '../token-grid.js';
import { encodeItems } from './encode-items.js';

type Crop = NonNullable<EncodeOptions['crop']>;

interface EncodeFlags extends ModelCommandFlags {
  image?: string;
  list?: string;
  items?: string;
  tokensDir?: string;
  crop?: Crop;
  tokensOut: string;
}

export function parseCrop(raw: string): Crop {
  if (raw === 'none') return 'none';
  if (raw === '256' || raw === '512' || raw === '1024') return Number(raw) as 256 | 512 | 1024;
  throw new DimooError(`--crop must be one of 256, 512, 1024, none; got "${raw}"`, 'E_PARAM');
}

/** Extensions picked up when --image is a folder (what sharp reads). */
const IMAGE_EXT = new Set(['.png', '.jpg', '.jpeg', '.webp', '.gif', '.tif', '.tiff', '.avif']);

/** Every image below `dir`, sorted, so runs are reproducible. */
export function listImageFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string): void => {
    const entries = fs
      .readdirSync(d, { withFileTypes: true })
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (IMAGE_EXT.has(path.extname(e.name).toLowerCase())) out.push(p);
    }
  };
  walk(dir);
  return out;
}

/** One work item: the record to extend (list lines keep their other fields) and the file. */
export interface EncodeItem {
  record: Record<string, unknown>;
  file: string;
}

export interface Skipped {
  image: string;
  error: string;
}

/**
 * Parses a JSONL list of `{"image": path, ...}`; relative paths are taken from
 * the list file's folder, so a dataset folder can be moved as a whole.
 */
export function readImageList(listFile: string): { items: EncodeItem[]; bad: Skipped[] } {
  let text: string;
  try {
    text = fs.readFileSync(listFile, 'utf8');
  } catch (e) {
    throw new DimooError(`--list ${listFile}: cannot read (${(e as Error).message})`, 'E_PARAM');
  }
  const base = path.dirname(listFile);
  const items: EncodeItem[] = [];
  const bad: Skipped[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === '') return;
    const where = `${listFile}:${i + 1}`;
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch {
      bad.push({ image: where, error: 'not valid JSON' });
      return;
    }
    const image = (rec as { image?: unknown } | null)?.image;
    if (
      typeof rec !== 'object' ||
      Array.isArray(rec) ||
      typeof image !== 'string' ||
      image === ''
    ) {
      bad.push({ image: where, error: 'expected an object with an "image" path' });
      return;
    }
    items.push({ record: rec as Record<string, unknown>, file: path.resolve(base, image) });
  });
  return { items, bad };
}

async function encodeBatch(
  ctx: CliContext,
  api: DimooApi,
  items: EncodeItem[],
  early: Skipped[],
  f: EncodeFlags,
): Promise<{ encoded: number; skipped: Skipped[] }> {
  const skipped = [...early];
  const tmp = tempPathFor(f.tokensOut);
  const fd = fs.openSync(tmp, 'w');
  const bar = createProgressBar(ctx.stderr, f.progress);
  let encoded = 0;
  let ok = false;
  try {
    bar.start(items.length, 'encode', '');
    for (let i = 0; i < items.length; i++) {
      if (ctx.signal.aborted) throw new CancelledError();
      const it = items[i]!;
      let grid: TokenGrid;
      try {
        grid = await api.encodeImage(
          { path: it.file },
          f.crop !== undefined ? { crop: f.crop } : {},
        );
      } catch (e) {
        // Only the library's verdicts on a file are skippable; anything else is a real failure.
        if (!isDimooError(e) || ctx.signal.aborted) throw e;
        skipped.push({ image: it.file, error: e.message });
        bar.update(i + 1, `${skipped.length} skipped`);
        continue;
      }
      const line = JSON.stringify({
        ...it.record,
        height: grid.height,
        width: grid.width,
        codes: grid.codes,
      });
      fs.writeSync(fd, line + '\n');
      encoded++;
      bar.update(i + 1, skipped.length ? `${skipped.length} skipped` : '');
    }
    ok = true;
  } finally {
    bar.stop();
    fs.closeSync(fd);
    // The JSONL appears under its name only when complete.
    if (ok) fs.renameSync(tmp, f.tokensOut);
    else fs.rmSync(tmp, { force: true });
  }
  return { encoded, skipped };
}

export function registerEncode(program: Command, ctx: CliContext): void {
  const cmd = program
    .command('encode')
    .description('images to VQ token grids (one file, a folder, or a JSONL list)')
    .option('--image <file|folder>', 'an image, or a folder of images (searched recursively)')
    .option('--list <file.jsonl>', 'one {"image": path} per line (relative to the list file)')
    .option(
      '--items <data.jsonl>',
      'training records: encode their user_image/answer_image files into --tokens-dir, write the records to --tokens-out',
    )
    .option('--tokens-dir <dir>', 'with --items: folder of the token-grid files')
    .option(
      '--crop <size>',
      "aspect-ratio crop budget: 256, 512, 1024 or none (default: the library's)",
      parseCrop,
    )
    .requiredOption(
      '--tokens-out <file>',
      'grid JSON for one image, JSONL (one record per image) otherwise',
    );
  addModelOptions(cmd);
  cmd.action(async (f: EncodeFlags) => {
    if ([f.image, f.list, f.items].filter((v) => v !== undefined).length !== 1) {
      throw new DimooError(
        'give exactly one of --image (a file or folder), --list FILE.jsonl and --items DATA.jsonl',
        'E_PARAM',
      );
    }
    if ((f.items === undefined) !== (f.tokensDir === undefined)) {
      throw new DimooError('--items and --tokens-dir go together', 'E_PARAM');
    }
    if (f.items !== undefined) {
      await withModel(ctx, f, async (api) => {
        requireVq(api, 'to encode images');
        const r = await encodeItems(ctx, api, {
          items: f.items!,
          tokensDir: f.tokensDir!,
          tokensOut: f.tokensOut,
          crop: f.crop,
          progress: f.progress,
        });
        for (const s of r.skipped) ctx.stderr.write(`skipped ${s.where}: ${s.error}\n`);
        if (f.json) writeJson(ctx.stdout, { tokensOut: f.tokensOut, ...r });
        else
          ctx.stdout.write(
            `wrote ${f.tokensOut}: ${r.records} record(s), ${r.encoded} image(s) encoded` +
              (r.skipped.length
                ? `, ${r.skipped.length} line(s) left out (listed on stderr)`
                : '') +
              '\n',
          );
      });
      return;
    }
    let items: EncodeItem[] | undefined;
    let early: Skipped[] = [];
    if (f.list !== undefined) {
      ({ items, bad: early } = readImageList(f.list));
      if (items.length === 0 && early.length === 0)
        throw new DimooError(`--list ${f.list}: lists no image`, 'E_PARAM');
    } else if (fs.existsSync(f.image!) && fs.statSync(f.image!).isDirectory()) {
      items = listImageFiles(f.image!).map((file) => ({ record: { image: file }, file }));
      // An empty output file and exit 0 would look like success.
      if (items.length === 0) {
        throw new DimooError(
          `--image ${f.image}: the folder holds no images (looked for ${[...IMAGE_EXT].join(' ')})`,
          'E_PARAM',
        );
      }
    } else if (!fs.existsSync(f.image!)) {
      throw new DimooError(`--image ${f.image}: no such file or folder`, 'E_PARAM');
    }
    await withModel(ctx, f, async (api) => {
      requireVq(api, 'to encode images');
      const t0 = performance.now();
      if (items === undefined) {
        const grid = await api.encodeImage(
          { path: f.image! },
          f.crop !== undefined ? { crop: f.crop } : {},
        );
        writeTokenGridFile(f.tokensOut, grid);
        if (f.json)
          writeJson(ctx.stdout, {
            image: f.image,
            tokensOut: f.tokensOut,
            ...JSON.parse(tokenGridJson(grid)),
          });
        else
          ctx.stdout.write(
            `wrote ${f.tokensOut} (${grid.width}x${grid.height}, ${grid.codes.length} tokens)\n`,
          );
        return;
      }
      const { encoded, skipped } = await encodeBatch(ctx, api, items, early, f);
      const ms = performance.now() - t0;
      for (const s of skipped) ctx.stderr.write(`skipped ${s.image}: ${s.error}\n`);
      if (f.json) writeJson(ctx.stdout, { tokensOut: f.tokensOut, encoded, skipped, totalMs: ms });
      else {
        ctx.stdout.write(
          `wrote ${f.tokensOut}: ${encoded} image(s) in ${formatMs(ms)}` +
            (skipped.length ? `, ${skipped.length} skipped (listed on stderr)` : '') +
            '\n',
        );
      }
      if (encoded === 0 && (items.length > 0 || skipped.length > 0)) {
        throw new DimooError(`no image could be encoded (${skipped.length} skipped)`, 'E_IMAGE');
      }
    });
  });
}
