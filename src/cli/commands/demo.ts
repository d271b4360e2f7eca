/**
 * `dimoo demo`: the whole text-to-image pipeline on a tiny random-weight
 * checkpoint the project writes itself (cached), so a fresh clone can run the
 * main job without downloading 16 GB. The output is noise, and we say so.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import { DEMO, T2I, VQ_SCALE } from '../defaults.js';
import { withModel } from '../model.js';
import { checkImageOutPath, formatMs, writeJson, writeRgbImage } from '../output.js';
import { intOpt } from '../options.js';
import type { ProgressMode } from '../progress.js';
import { imageParameters, runTask } from '../common.js';
import { initRandom } from './init-random.js';

interface DemoFlags {
  dir?: string;
  size: number;
  out: string;
  threads?: number;
  json?: boolean;
  progress?: ProgressMode;
}

/** Written last: a folder without it (an interrupted first run) is rebuilt. */
const MARKER = '.dimoo-demo.json';
const RECIPE = { preset: 'tiny', vq: 'tiny', seed: DEMO.seed, version: 1 } as const;

export function demoCacheDir(ctx: CliContext): string {
  const base = ctx.env.XDG_CACHE_HOME || path.join(ctx.home, '.cache');
  return path.join(base, 'dimoo', 'demo-tiny');
}

function isReady(dir: string): boolean {
  try {
    return (
      JSON.stringify(JSON.parse(fs.readFileSync(path.join(dir, MARKER), 'utf8'))) ===
      JSON.stringify(RECIPE)
    );
  } catch {
    return false;
  }
}

export async function ensureDemoCheckpoint(
  ctx: CliContext,
  dir: string,
  progress: ProgressMode,
): Promise<boolean> {
  if (isReady(dir)) return false;
  ctx.stderr.write(`creating a tiny random-weight checkpoint in ${dir} (once)\n`);
  await initRandom(ctx, dir, { preset: RECIPE.preset, vq: RECIPE.vq, seed: RECIPE.seed, progress });
  fs.writeFileSync(path.join(dir, MARKER), JSON.stringify(RECIPE) + '\n');
  return true;
}

export function registerDemo(program: Command, ctx: CliContext): void {
  program
    .command('demo')
    .description(
      'run text-to-image end to end on a tiny random-weight checkpoint (output is noise)',
    )
    .option('--dir <dir>', 'where to keep the demo checkpoint (default ~/.cache/dimoo/demo-tiny)')
    .option(
      '--size <px>',
      `image width and height, a multiple of ${VQ_SCALE}`,
      intOpt('--size', { min: VQ_SCALE, max: 1024, multipleOf: VQ_SCALE }),
      DEMO.size,
    )
    .option('--out <file>', 'output image', DEMO.out)
    .option(
      '--threads <n>',
      'CPU threads for ONNX Runtime',
      intOpt('--threads', { min: 1, max: 1024 }),
    )
    .option('--json', 'print a machine-readable summary on stdout')
    .option('--progress', 'show a progress bar on stderr even when it is not a terminal')
    .option('--no-progress', 'never show a progress bar')
    .action(async (f: DemoFlags) => {
      checkImageOutPath('--out', f.out);
      const dir = path.resolve(f.dir ?? demoCacheDir(ctx));
      const created = await ensureDemoCheckpoint(ctx, dir, f.progress);
      await withModel(
        ctx,
        { model: dir, ...(f.threads !== undefined && { threads: f.threads }) },
        async (api) => {
          const params = {
            prompt: DEMO.prompt,
            height: f.size,
            width: f.size,
            timesteps: DEMO.timesteps,
            cfgScale: T2I.cfgScale,
            temperature: T2I.temperature,
            seed: DEMO.seed,
          };
          const { result, totalMs } = await runTask(ctx, f.progress, (o) =>
            api.generate(params, o),
          );
          if (!result.image)
            throw new Error('the demo checkpoint has no VQ-VAE; delete ' + dir + ' and rerun');
          await writeRgbImage(f.out, result.image, imageParameters('generate', params, result, api));
          const note =
            'The weights are random, so this image is noise: the demo only shows that the whole ' +
            'pipeline runs (tokenizer, transformer, MaskGIT sampling, VQ-VAE decoding). ' +
            'For real images, download Alpha-VLLM/Lumina-DiMOO and run `dimoo generate --model DIR`.';
          if (f.json) {
            writeJson(ctx.stdout, {
              out: f.out,
              checkpoint: dir,
              createdCheckpoint: created,
              width: result.width,
              height: result.height,
              prompt: DEMO.prompt,
              seed: DEMO.seed,
              timesteps: DEMO.timesteps,
              stepMs: result.stepMs,
              totalMs,
              randomWeights: true,
              note,
            });
          } else {
            ctx.stdout.write(
              `wrote ${f.out} (${result.width}x${result.height}, ${result.stepMs.length} steps in ${formatMs(totalMs)}; ` +
                `prompt "${DEMO.prompt}")\n${note}\n`,
            );
          }
        },
      );
    });
}
