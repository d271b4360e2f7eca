/**
 * `dimoo encode --items DATA.jsonl --tokens-dir DIR --tokens-out NEW.jsonl`:
 * pre-tokenizes a training set (as the original's pre_tokenizer does). Every
 * image file named by a record's `user_image` / `answer_image` is encoded once
 * into a token-grid file under DIR, and NEW.jsonl is the same records with
 * those fields pointing at the grid files (paths relative to NEW.jsonl), so
 * `dimoo train --data NEW.jsonl` needs no VQ-VAE work. Lines that cannot be
 * used are left out and listed; NEW.jsonl appears only when complete.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DimooError, isDimooError } from '../../errors.js';
import type { DimooApi, EncodeOptions } from '../../pipelines/types.js';
import { tempPathFor } from '../../util/atomic-write.js';
import type { CliContext } from '../context.js';
import { CancelledError } from '../errors.js';
import { createProgressBar, type ProgressMode } from '../progress.js';
import { writeTokenGridFile } from '../token-grid.js';

const IMAGE_FIELDS = ['user_image', 'answer_image'] as const;

export interface ItemsResult {
  records: number;
  encoded: number;
  skipped: Array<{ where: string; error: string }>;
}

function gridName(file: string): string {
  const h = createHash('sha256').update(file).digest('hex').slice(0, 10);
  return `${path.basename(file, path.extname(file))}-${h}.json`;
}

export async function encodeItems(
  ctx: CliContext,
  api: DimooApi,
  f: {
    items: string;
    tokensDir: string;
    tokensOut: string;
    crop?: EncodeOptions['crop'];
    progress?: ProgressMode;
  },
): Promise<ItemsResult> {
  let text: string;
  try {
    text = fs.readFileSync(f.items, 'utf8');
  } catch (e) {
    throw new DimooError(`--items ${f.items}: cannot read (${(e as Error).message})`, 'E_PARAM');
  }
  const base = path.dirname(path.resolve(f.items));
  const outDir = path.dirname(path.resolve(f.tokensOut));
  fs.mkdirSync(f.tokensDir, { recursive: true });
  const lines = text.split(/\r?\n/);
  // First pass: which image files need encoding (each once).
  const parsed: Array<{ where: string; rec?: Record<string, unknown>; error?: string }> = [];
  const toEncode = new Set<string>();
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    const where = `${f.items}:${i + 1}`;
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch {
      parsed.push({ where, error: 'not valid JSON' });
      return;
    }
    if (typeof rec !== 'object' || rec === null || Array.isArray(rec)) {
      parsed.push({ where, error: 'expected a JSON object' });
      return;
    }
    const r = rec as Record<string, unknown>;
    for (const k of IMAGE_FIELDS) {
      const v = r[k];
      if (typeof v === 'string' && v !== '' && path.extname(v).toLowerCase() !== '.json')
        toEncode.add(path.resolve(base, v));
    }
    parsed.push({ where, rec: r });
  });
  const grids = new Map<string, string | Error>();
  const bar = createProgressBar(ctx.stderr, f.progress);
  bar.start(toEncode.size, 'encode', '');
  let done = 0;
  try {
    for (const file of toEncode) {
      if (ctx.signal.aborted) throw new CancelledError();
      try {
        const grid = await api.encodeImage(
          { path: file },
          f.crop !== undefined ? { crop: f.crop } : {},
        );
        const out = path.resolve(f.tokensDir, gridName(file));
        writeTokenGridFile(out, grid);
        grids.set(file, out);
      } catch (e) {
        if (!isDimooError(e) || ctx.signal.aborted) throw e;
        grids.set(file, e);
      }
      bar.update(++done);
    }
  } finally {
    bar.stop();
  }
  // Second pass: rewrite the records; relative paths are made relative to the new file.
  const skipped: ItemsResult['skipped'] = [];
  const out: string[] = [];
  for (const p of parsed) {
    if (!p.rec) {
      skipped.push({ where: p.where, error: p.error! });
      continue;
    }
    const rec = { ...p.rec };
    let bad: string | undefined;
    for (const k of IMAGE_FIELDS) {
      const v = rec[k];
      if (typeof v !== 'string' || v === '') continue;
      const abs = path.resolve(base, v);
      const g = grids.get(abs);
      if (g instanceof Error) {
        bad = `"${k}": ${g.message}`;
        break;
      }
      rec[k] = path
        .relative(outDir, g ?? abs)
        .split(path.sep)
        .join('/');
    }
    if (bad) skipped.push({ where: p.where, error: bad });
    else out.push(JSON.stringify(rec));
  }
  const tmp = tempPathFor(f.tokensOut);
  fs.writeFileSync(tmp, out.length ? out.join('\n') + '\n' : '');
  fs.renameSync(tmp, f.tokensOut);
  return {
    records: out.length,
    encoded: [...grids.values()].filter((g) => typeof g === 'string').length,
    skipped,
  };
}
