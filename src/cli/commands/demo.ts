/**
 * `dimoo demo`: the whole text-to-image pipeline without downloading 16 GB.
 * With a default model (the shipped shapes model, or $DIMOO_MODEL) it draws
 * a fixed prompt of the shapes world, says which, and reads the picture back
 * with the world's checker. Without one (or with --dir) it runs a tiny
 * random-weight checkpoint the project writes itself (cached): the output is
 * noise, and we say so.
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
import { imageParameters } from '../../pipelines/parameters.js';
import { runTask } from '../common.js';
import { initRandom } from './init-random.js';
import { DimooError } from '../../errors.js';
import { findDefaultModel } from '../../checkpoint/default-model.js';
import { detectScene } from '../../shapes/checker.js';
import { describeScene, fullRequest } from '../../shapes/language.js';
import { scoreT2i } from '../../shapes/score.js';
import type { SceneFacts } from '../../shapes/world.js';

/** The trained demo's picture: one large red circle in the centre on white. */
const DEMO_SCENE: SceneFacts = {
  background: 'white',
  objects: [{ shape: 'circle', color: 'red', size: 'large', cell: 4 }],
};

interface DemoFlags {
  dir?: string;
  model?: string;
  size?: number;
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
      `image width and height, a multiple of ${VQ_SCALE} (default: the model's own; random weights: ${DEMO.size})`,
      intOpt('--size', { min: VQ_SCALE, max: 1024, multipleOf: VQ_SCALE }),
    )
    .option(
      '--model <dir>',
      'a trained shapes-world checkpoint (default: the default model, see `dimoo generate --help`)',
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
      const trained = f.dir === undefined ? (f.model ?? findDefaultModel(ctx.env)?.dir) : undefined;
      if (trained !== undefined) {
        await trainedDemo(ctx, f, trained);
        return;
      }
      const size = f.size ?? DEMO.size;
      const dir = path.resolve(f.dir ?? demoCacheDir(ctx));
      const created = await ensureDemoCheckpoint(ctx, dir, f.progress);
      await withModel(
        ctx,
        { model: dir, ...(f.threads !== undefined && { threads: f.threads }) },
        async (api) => {
          const params = {
            prompt: DEMO.prompt,
            height: size,
            width: size,
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
          await writeRgbImage(
            f.out,
            result.image,
            imageParameters('generate', params, result, api),
          );
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

/** The demo on a trained shapes model: a fixed prompt of the world, checked by the world's checker. */
async function trainedDemo(ctx: CliContext, f: DemoFlags, model: string): Promise<void> {
  const prompt = describeScene(DEMO_SCENE);
  await withModel(
    ctx,
    { model, ...(f.threads !== undefined && { threads: f.threads }) },
    async (api) => {
      const params = {
        prompt,
        ...(f.size !== undefined && { width: f.size, height: f.size }),
        timesteps: DEMO.timesteps,
        cfgScale: T2I.cfgScale,
        temperature: T2I.temperature,
        seed: DEMO.seed,
      };
      const { result, totalMs } = await runTask(ctx, f.progress, (o) => api.generate(params, o));
      if (!result.image)
        throw new DimooError(
          `${model} has no VQ-VAE (vqvae/): the demo needs one to draw`,
          'E_PARAM',
        );
      await writeRgbImage(f.out, result.image);
      const det = detectScene(result.image);
      const score = scoreT2i(fullRequest(DEMO_SCENE), det);
      const seen = det.objects.length
        ? describeScene(det)
        : `no object on a ${det.background} background`;
      if (f.json) {
        writeJson(ctx.stdout, {
          out: f.out,
          checkpoint: api.info().dir,
          width: result.width,
          height: result.height,
          prompt,
          timesteps: DEMO.timesteps,
          stepMs: result.stepMs,
          totalMs,
          randomWeights: false,
          checker: { read: seen, matches: score.pass, attributes: score.attributes },
        });
        return;
      }
      ctx.stdout.write(
        `wrote ${f.out} (${result.width}x${result.height}, ${result.stepMs.length} steps in ${formatMs(totalMs)}) ` +
          `with ${api.info().name}\nprompt:  "${prompt}"\nchecker: "${seen}": ${score.pass ? 'matches the prompt' : 'does NOT match the prompt'}\n`,
      );
    },
  );
}
