/**
 * `dimoo generate --prompts FILE --out-dir DIR`: one image per prompt of a
 * file (the original's inference_t2i_ddp.py, on one process), one progress
 * bar over all of them, resumable: an image whose file exists is skipped, so
 * a run stopped half-way is finished by running the same command again.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DimooError } from '../../errors.js';
import type { GenerateParams } from '../../pipelines/types.js';
import { drawSeed } from '../../pipelines/validate.js';
import { makeDirs } from '../../util/fs-errors.js';
import { imageParameters } from '../../pipelines/parameters.js';
import { samplingParams, type ModelCommandFlags, type SamplingFlags } from '../common.js';
import type { CliContext } from '../context.js';
import { throwIfCancelled } from '../errors.js';
import { modelTaskDefaults, requireVq, withModel } from '../model.js';
import { formatMs, writeJson, writeRgbImage } from '../output.js';
import { createProgressBar, describeEvent } from '../progress.js';
import { batchFileName, readPromptFile, type PromptItem } from '../prompt-file.js';

export interface BatchFlags extends ModelCommandFlags, SamplingFlags {
  prompts: string;
  outDir?: string;
  prompt?: string;
  out?: string;
  tokensOut?: string;
  /** Absent: the checkpoint's own size (generation_config.json), else the original's. */
  height?: number;
  width?: number;
}

/** Flag combinations that make no sense with --prompts, refused before anything is read. */
export function checkBatchFlags(f: BatchFlags): asserts f is BatchFlags & { outDir: string } {
  const no = (msg: string): never => {
    throw new DimooError(msg, 'E_PARAM');
  };
  if (f.prompt !== undefined) no('give --prompt TEXT or --prompts FILE, not both');
  if (f.out !== undefined) no('--out names one image; with --prompts give --out-dir DIR');
  if (f.tokensOut !== undefined)
    no('--tokens-out is for one image; it cannot be used with --prompts');
  if (f.outDir === undefined) no('--prompts needs --out-dir DIR (where the images go)');
}

interface Planned {
  item: PromptItem;
  out: string;
  seed: number;
  exists: boolean;
}

export async function runGenerateBatch(ctx: CliContext, f: BatchFlags): Promise<void> {
  checkBatchFlags(f);
  const items = readPromptFile(f.prompts);
  const base = samplingParams(f);
  // The size is part of each file name, so the model's default is read before it loads.
  const own = modelTaskDefaults(ctx, f.model).t2i;
  const height = f.height ?? own.height;
  const width = f.width ?? own.width;
  // The seed rule (pipelines/validate.ts): given or drawn, and said. Prompt i
  // gets base + i unless its line names a seed, so a resumed run gives each
  // remaining prompt the seed a full run would have (when --seed is given).
  const baseSeed = base.seed ?? drawSeed();
  ctx.stderr.write(
    `seed ${baseSeed} (prompt i gets ${baseSeed} + i unless its line sets "seed")\n`,
  );
  makeDirs(f.outDir);
  const plan: Planned[] = items.map((item) => {
    const out = path.join(
      f.outDir,
      batchFileName(item, { height, width, timesteps: f.timesteps, cfgScale: f.cfgScale }),
    );
    return { item, out, seed: item.seed ?? baseSeed + item.index, exists: fs.existsSync(out) };
  });
  const todo = plan.filter((p) => !p.exists);
  const report = (p: Planned, skipped: boolean): void => {
    if (f.json) {
      writeJson(ctx.stdout, {
        task: 'generate',
        index: p.item.index,
        from: `${f.prompts}: ${p.item.where}`,
        prompt: p.item.prompt,
        seed: skipped ? null : p.seed,
        out: p.out,
        skipped,
      });
    } else if (skipped) ctx.stderr.write(`skipped ${p.out} (exists)\n`);
    else ctx.stdout.write(`wrote ${p.out} (seed ${p.seed})\n`);
  };
  for (const p of plan) if (p.exists) report(p, true);
  if (todo.length === 0) {
    ctx.stderr.write(
      `all ${plan.length} images of ${f.prompts} exist in ${f.outDir}; nothing to do\n`,
    );
    return;
  }
  const t0 = performance.now();
  await withModel(ctx, f, async (api) => {
    requireVq(api, 'to write the images of --prompts');
    const steps = base.timesteps!;
    const bar = createProgressBar(ctx.stderr, f.progress);
    bar.start(todo.length * steps, 'generate', `image 1/${todo.length}`);
    try {
      for (const [k, p] of todo.entries()) {
        throwIfCancelled(ctx.signal);
        const params: GenerateParams = {
          ...base,
          prompt: p.item.prompt,
          height,
          width,
          seed: p.seed,
        };
        const r = await api.generate(params, {
          signal: ctx.signal,
          onProgress: (e) =>
            bar.update(k * steps + e.step, `image ${k + 1}/${todo.length}, ${describeEvent(e)}`),
        });
        if (!r.image)
          throw new DimooError(`generate returned no decoded image for ${p.out}`, 'E_STATE');
        await writeRgbImage(p.out, r.image, imageParameters('generate', params, r, api));
        report(p, false);
      }
    } finally {
      bar.stop();
    }
  });
  const skipped = plan.length - todo.length;
  ctx.stderr.write(
    `wrote ${todo.length} image(s) to ${f.outDir} in ${formatMs(performance.now() - t0)}` +
      (skipped > 0 ? `, skipped ${skipped} that existed\n` : '\n'),
  );
}
