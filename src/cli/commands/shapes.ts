/**
 * `dimoo shapes generate|check|init` (the synthetic shapes world: data set,
 * checker, starting checkpoint) and `dimoo eval` (the world's evaluation of
 * any checkpoint).
 */
import * as path from 'node:path';
import type { Command } from 'commander';
import { DimooError } from '../../errors.js';
import { readImage, writeImage } from '../../image/io.js';
import type { DimooApi } from '../../pipelines/types.js';
import { detectScene } from '../../shapes/checker.js';
import { generateDataset } from '../../shapes/dataset.js';
import {
  DEFAULT_EVAL_TASKS,
  EVAL_TASKS,
  runShapesEval,
  type EvalReport,
  type EvalTask,
  type Rate,
} from '../../shapes/eval.js';
import { describeScene } from '../../shapes/language.js';
import {
  SHAPES_VQ_AE_WARMUP,
  SHAPES_VQ_EMA,
  SHAPES_VQ_LR,
  SHAPES_VQ_SOFT_NORM,
  SHAPES_VQ_THUMBNAIL,
} from '../../shapes/model.js';
import { evalGridImage } from '../../shapes/report-grid.js';
import {
  BACKGROUNDS,
  COLORS,
  SHAPES,
  SIZES,
  type Background,
  type Color,
  type Shape,
  type Size,
} from '../../shapes/world.js';
import type { CliContext } from '../context.js';
import { registerShapesTrain } from './shapes-train.js';
import { addCacheScheduleOptions, addModelOptions, type ModelCommandFlags } from '../common.js';
import { throwIfCancelled } from '../errors.js';
import { checkModelDir, requireVq, withModel } from '../model.js';
import { choiceOpt, intOpt, numOpt } from '../options.js';
import { checkImageOutPath, formatMs, formatTable, writeJson } from '../output.js';
import { createProgressBar, type ProgressMode } from '../progress.js';

interface GenerateFlags {
  out: string;
  count: number;
  seed: number;
  holdout: number;
  questions: number;
  model?: string;
  threads?: number;
  device?: 'cpu' | 'webgpu';
  json?: boolean;
  progress?: ProgressMode;
}

async function generateCommand(ctx: CliContext, f: GenerateFlags): Promise<void> {
  const bar = createProgressBar(ctx.stderr, f.progress);
  const run = async (api?: DimooApi) => {
    bar.start(f.count, 'scenes', '');
    try {
      return await generateDataset({
        out: f.out,
        count: f.count,
        seed: f.seed,
        holdout: f.holdout,
        questions: f.questions,
        signal: ctx.signal,
        onProgress: (done) => bar.update(done),
        ...(api && {
          encode: (rgb) => api.encodeImage({ rgb }, { crop: 'none' }),
          encodedWith: path.resolve(f.model!),
        }),
      });
    } finally {
      bar.stop();
    }
  };
  const t0 = performance.now();
  const summary =
    f.model === undefined
      ? await run()
      : await withModel(
          ctx,
          { model: f.model, threads: f.threads, device: f.device },
          async (api) => {
            requireVq(api, 'to encode the images (--model)');
            return run(api);
          },
        );
  throwIfCancelled(ctx.signal);
  if (f.json) {
    writeJson(ctx.stdout, { ...summary, totalMs: performance.now() - t0 });
    return;
  }
  const r = summary.records;
  ctx.stdout.write(
    `wrote ${summary.out}: ${summary.scenes} scenes (${summary.heldOutScenes} held out), ` +
      `train ${r.train.t2i} text-to-image / ${r.train.edit} edits / ${r.train.mmu} questions, ` +
      `held out ${r.heldout.t2i} / ${r.heldout.edit} / ${r.heldout.mmu}, ` +
      `${summary.encoded ? 'token grids encoded' : 'PNG images (not encoded: give --model to write token grids)'} ` +
      `in ${formatMs(performance.now() - t0)}\n`,
  );
}

interface TrainVqFlags {
  out: string;
  state?: string;
  steps?: number;
  minutes?: number;
  batchSize: number;
  lr: number;
  seed: number;
  holdout: number;
  evalImages: number;
  evalEvery: number;
  threads?: number;
  resume?: boolean;
  init?: string;
  decoderOnly?: boolean;
  ema: number;
  aeWarmup: number;
  softNorm: number;
  thumbnails: number;
  learntEncoder?: boolean;
  json?: boolean;
}

async function trainVqCommand(ctx: CliContext, f: TrainVqFlags): Promise<void> {
  if (f.steps === undefined && f.minutes === undefined)
    throw new DimooError('train-vq needs --steps or --minutes (or both)', 'E_PARAM');
  if (!(f.holdout > 0))
    throw new DimooError(
      '--holdout must be > 0 (the PSNR is measured on held-out scenes)',
      'E_PARAM',
    );
  const { trainVq } = await import('../../training/vq-trainer.js');
  const { SHAPES_VQ_CONFIG } = await import('../../shapes/model.js');
  if (f.decoderOnly && f.init === undefined)
    throw new DimooError(
      '--decoder-only needs --init (the VQ whose encoder and codebook stay fixed)',
      'E_PARAM',
    );
  const { loadVqConfig } = await import('../../checkpoint/vq-config.js');
  const config =
    f.init !== undefined ? loadVqConfig(path.resolve(f.init)).raw : { ...SHAPES_VQ_CONFIG };
  const { vqEvalImages, vqTrainImage } = await import('../../shapes/vq-data.js');
  const out = path.resolve(f.out);
  let thumbnails:
    | { codebook: Float32Array; T: number; encoder?: Map<string, { data: Float32Array }> }
    | undefined;
  if (f.thumbnails > 0 && !f.decoderOnly) {
    const { thumbnailCodebook } = await import('../../shapes/vq-dictionary.js');
    const { parseVqConfig } = await import('../../checkpoint/vq-config.js');
    const { SHAPES_VQ_DICTIONARY_SCENES } = await import('../../shapes/model.js');
    const c = parseVqConfig(config, 'VQ config');
    if (c.vqEmbedDim !== c.inChannels * f.thumbnails ** 2)
      throw new DimooError(
        `--thumbnails ${f.thumbnails}: the codes would have ${c.inChannels * f.thumbnails ** 2} values, the config's vq_embed_dim is ${c.vqEmbedDim} (pass --thumbnails 0 for a learnt codebook)`,
        'E_PARAM',
      );
    const pictures = function* () {
      for (let i = 0; i < SHAPES_VQ_DICTIONARY_SCENES; i++)
        yield vqTrainImage(f.seed, f.holdout, i);
    };
    const tc = thumbnailCodebook(pictures(), {
      K: c.numVqEmbeddings,
      T: f.thumbnails,
      cell: c.scaleFactor,
    });
    if (!f.json)
      ctx.stdout.write(
        `codebook: ${tc.used} cell thumbnails of ${SHAPES_VQ_DICTIONARY_SCENES} training scenes (${tc.distinct} distinct)\n`,
      );
    thumbnails = { codebook: tc.codebook, T: f.thumbnails };
    if (f.learntEncoder !== true) {
      const { exactThumbnailEncoder } = await import('../../shapes/exact-encoder.js');
      thumbnails.encoder = exactThumbnailEncoder(c, f.thumbnails);
    }
  }
  await trainVq({
    ...(thumbnails && { thumbnails }),
    config,
    out,
    ...(f.init !== undefined && { init: path.resolve(f.init) }),
    decoderOnly: f.decoderOnly === true,
    codebookEma: f.ema,
    aeWarmupSteps: f.aeWarmup,
    softNorm: f.softNorm,
    state: path.resolve(f.state ?? `${out}.state`),
    ...(f.steps !== undefined && { steps: f.steps }),
    ...(f.minutes !== undefined && { minutes: f.minutes }),
    batchSize: f.batchSize,
    lr: f.lr,
    seed: f.seed,
    threads: f.threads,
    resume: f.resume === true,
    image: (i) => vqTrainImage(f.seed, f.holdout, i),
    evalImages: vqEvalImages(f.seed, f.holdout, f.evalImages),
    evalEveryMinutes: f.evalEvery,
    signal: ctx.signal,
    log: (e) => {
      if (f.json) {
        ctx.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), ...e })}\n`);
        return;
      }
      switch (e.event) {
        case 'start':
          ctx.stdout.write(
            `${e.resumed ? 'resuming' : 'starting'} at step ${e.step}: ${e.params} parameters, batch ${e.batchSize}, lr ${e.lr}\n`,
          );
          break;
        case 'step':
          ctx.stdout.write(
            `step ${e.step} (${e.minutes.toFixed(1)} min): loss ${e.loss.toFixed(5)} mse ${e.mse.toFixed(5)} (${e.trainPsnr.toFixed(2)} dB) ` +
              `codebook ${e.codebook.toFixed(4)} commit ${e.commit.toFixed(4)} codes ${e.usedCodes} lr ${e.lr.toExponential(2)} ${e.msPerStep.toFixed(0)} ms/step\n`,
          );
          break;
        case 'reseed':
          ctx.stdout.write(`step ${e.step}: re-seeded ${e.dead} unused codes\n`);
          break;
        case 'eval':
          ctx.stdout.write(
            `step ${e.step}: held-out PSNR ${e.psnr.toFixed(2)} dB (${e.images} pictures)\n`,
          );
          break;
        case 'save':
          break;
        case 'done':
          ctx.stdout.write(
            `wrote ${e.out}: ${e.step} steps, ${e.minutes.toFixed(1)} min, held-out PSNR ${e.psnr.toFixed(2)} dB (stopped by ${e.stopped})\n`,
          );
          break;
      }
    },
  });
  // Stopped by a signal: the state and the VQ folder are written, but the run did not finish its budget.
  throwIfCancelled(ctx.signal);
}

function pct(r: Rate | undefined): string {
  return r && r.n > 0 ? `${(100 * r.rate).toFixed(1)}%` : '-';
}

/** The human-readable report: one table row per measure. */
export function formatEvalReport(rep: EvalReport): string {
  const rows: string[][] = [];
  const add = (task: string, measure: string, r: Rate | undefined): void => {
    if (r) rows.push([task, measure, pct(r), `${r.pass}/${r.n}`]);
  };
  if (rep.t2i) {
    add('text-to-image', 'all requested attributes', rep.t2i.all);
    for (const [k, r] of Object.entries(rep.t2i.byObjects)) add('', `- ${k}`, r);
    for (const [k, r] of Object.entries(rep.t2i.byAttribute)) add('', `- ${k}`, r);
  }
  if (rep.edit) {
    add('edit', 'change made, rest unchanged', rep.edit.all);
    add('', '- change made', rep.edit.changed);
    add('', '- rest unchanged', rep.edit.rest);
    for (const [k, r] of Object.entries(rep.edit.byKind)) add('', `- ${k}`, r);
  }
  for (const t of ['inpaint', 'retouch'] as const) {
    const x = rep[t];
    if (!x) continue;
    add(
      t === 'inpaint' ? 'inpainting' : 'retouching',
      'region follows prompt, rest unchanged',
      x.all,
    );
    add('', '- region follows prompt', x.changed);
    add('', '- rest unchanged', x.rest);
  }
  if (rep.mmu) {
    add('understanding', 'exact answer', rep.mmu.all);
    for (const [k, r] of Object.entries(rep.mmu.byType)) add('', `- ${k}`, r);
  }
  if (rep.probe) {
    const p = rep.probe;
    add('probe', 'every cell right from the caption alone', p.all);
    add('', '- all masked: object cells', p.full.object);
    add('', '- all masked: background cells', p.full.background);
    add('', '- half masked: object cells', p.half.object);
    add('', '- half masked: background cells', p.half.background);
  }
  return `${formatTable(['task', 'measure', 'score', 'passed'], rows)}\n`;
}

interface EvalFlags extends ModelCommandFlags {
  limit: number;
  tasks: EvalTask[];
  seed: number;
  holdout: number;
  timesteps: number;
  temperature: number;
  cfgScale?: number;
  cfgImg?: number;
  useCache?: boolean;
  cacheRatio: number;
  warmupRatio: number;
  refreshInterval: number;
  mmuCache: 'none' | 'dual' | 'ml-cache';
  genLength?: number;
  grid?: string;
  showItems?: boolean;
}

function parseTasks(raw: string): EvalTask[] {
  const list = raw
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (list.length === 0) throw new DimooError('--tasks needs at least one task', 'E_PARAM');
  for (const t of list) {
    if (!(EVAL_TASKS as readonly string[]).includes(t)) {
      throw new DimooError(
        `--tasks: unknown task "${t}" (known: ${EVAL_TASKS.join(', ')})`,
        'E_PARAM',
      );
    }
  }
  return [...new Set(list)] as EvalTask[];
}

async function evalCommand(ctx: CliContext, f: EvalFlags): Promise<void> {
  if (f.grid !== undefined) checkImageOutPath('--grid', f.grid);
  if (f.genLength !== undefined && f.genLength % 16 !== 0)
    throw new DimooError(
      `--gen-length must be a multiple of 16 (the block length), got ${f.genLength}`,
      'E_PARAM',
    );
  await withModel(ctx, f, async (api) => {
    requireVq(api, 'to draw and read pictures');
    const bar = createProgressBar(ctx.stderr, f.progress);
    bar.start(f.limit * f.tasks.length, 'eval', '');
    let passed = 0;
    let report: EvalReport;
    try {
      report = await runShapesEval(api, {
        limit: f.limit,
        tasks: f.tasks,
        seed: f.seed,
        holdout: f.holdout,
        ...(f.cfgImg !== undefined && { cfgImg: f.cfgImg }),
        image: {
          timesteps: f.timesteps,
          temperature: f.temperature,
          ...(f.cfgScale !== undefined && { cfgScale: f.cfgScale }),
          useCache: f.useCache === true,
          cacheRatio: f.cacheRatio,
          warmupRatio: f.warmupRatio,
          refreshInterval: f.refreshInterval,
        },
        mmu: {
          // Not given: the checkpoint's own answer length (see runShapesEval).
          ...(f.genLength !== undefined && {
            genLength: f.genLength,
            blockLength: 16,
            steps: f.genLength,
          }),
          useCache: f.mmuCache === 'none' ? false : f.mmuCache,
        },
        signal: ctx.signal,
        onItem: (it, done) => {
          if (it.pass) passed++;
          bar.update(done, `${it.task} ${passed} passed`);
        },
      });
    } finally {
      bar.stop();
    }
    if (f.grid !== undefined) await writeImage(f.grid, evalGridImage(report.items));
    if (f.json) {
      // Pictures stay out of the JSON; the grid file has them.
      writeJson(ctx.stdout, {
        ...report,
        grid: f.grid ?? null,
        items: report.items.map(({ input: _i, output: _o, ...rest }) => rest),
      });
      return;
    }
    // The probe samples nothing (one greedy pass): the sampling settings mean nothing there.
    const sampling = f.tasks.some((t) => t !== 'probe')
      ? `${f.timesteps} steps, temperature ${f.temperature}${f.useCache ? ', ML-Cache' : ''}, `
      : 'greedy one pass, ';
    ctx.stdout.write(
      `shapes eval of ${report.model}: ${f.limit} item(s) per task, seed ${f.seed}, ` +
        `${sampling}${formatMs(report.totalMs)}\n`,
    );
    ctx.stdout.write(formatEvalReport(report));
    if (f.showItems) {
      for (const it of report.items) {
        ctx.stdout.write(
          `${it.pass ? 'PASS' : 'FAIL'} ${it.task} ${it.kind}: "${it.prompt}"\n  expected: ${it.expected}\n  got:      ${it.got}\n`,
        );
      }
    }
    if (f.grid !== undefined)
      ctx.stdout.write(`wrote ${f.grid} (green = passed, red = failed; gray = input)\n`);
  });
}

export function registerShapes(program: Command, ctx: CliContext): void {
  const shapes = program
    .command('shapes')
    .description('the synthetic shapes world: data set generator and checker');
  shapes
    .command('generate')
    .description(
      'write a shapes data set: PNG images, optional token grids, train/held-out JSONL in the original training format',
    )
    .requiredOption('--out <dir>', 'output folder (must not exist or be empty)')
    .option(
      '--count <n>',
      'number of scenes (each: 1 caption, 1 edit, --questions questions)',
      intOpt('--count', { min: 1, max: 10_000_000 }),
      1000,
    )
    .option('--seed <n>', 'world seed', intOpt('--seed', { min: 0 }), 0)
    .option(
      '--holdout <f>',
      'share of scenes held out for evaluation',
      numOpt('--holdout', { min: 0, max: 1 }),
      0.1,
    )
    .option('--questions <n>', 'questions per scene', intOpt('--questions', { min: 0, max: 10 }), 2)
    .option('--model <dir>', "encode every image into a token grid with this checkpoint's VQ-VAE")
    .option(
      '--threads <n>',
      'CPU threads for the encoder',
      intOpt('--threads', { min: 1, max: 1024 }),
    )
    .option(
      '--device <cpu|webgpu>',
      'encoder device',
      choiceOpt('--device', ['cpu', 'webgpu'] as const),
    )
    .option('--json', 'print a summary as JSON')
    .option('--progress', 'show a progress bar on stderr even when it is not a terminal')
    .option('--no-progress', 'never show a progress bar')
    .action((f: GenerateFlags) => generateCommand(ctx, f));
  shapes
    .command('check')
    .description('read a shapes picture with the rule-based checker (background, objects, cells)')
    .argument('<image>', 'picture (PNG, JPEG, WebP)')
    .option('--json', 'print the detection as JSON')
    .action(async (file: string, f: { json?: boolean }) => {
      const img = await readImage(file);
      const d = detectScene(img);
      if (f.json) {
        writeJson(ctx.stdout, {
          image: file,
          ...d,
          description: d.objects.length ? describeScene(d) : null,
        });
        return;
      }
      ctx.stdout.write(
        `${d.objects.length ? describeScene(d) : `no object on a ${d.background} background`}\n`,
      );
    });
  shapes
    .command('init')
    .description(
      'write a fresh random shapes checkpoint (official layout, world tokenizer): the starting point of training',
    )
    .argument('<dir>', 'output folder')
    .option('--seed <n>', 'weight seed', intOpt('--seed', { min: 0 }), 0)
    .option(
      '--vq <dir>',
      'copy this trained VQ-VAE (config.json + weights) into vqvae/ (default: a random one)',
    )
    .option(
      '--answer-block <n>',
      'understanding answer length the model will train with (written to generation_config.json)',
      intOpt('--answer-block', { min: 1, max: 8192 }),
    )
    .option(
      '--rope-theta <x>',
      "the transformer's RoPE base (default: the official config's 500000)",
      numOpt('--rope-theta', { min: 1 }),
    )
    .option(
      '--no-codebook-rows',
      "with --vq: keep the image codes' embedding and head rows random (default: start them from the VQ-VAE's thumbnails)",
    )
    .option('--json', 'print a summary as JSON')
    .action(
      async (
        dir: string,
        f: {
          seed: number;
          vq?: string;
          answerBlock?: number;
          ropeTheta?: number;
          codebookRows: boolean;
          json?: boolean;
        },
      ) => {
        const { writeShapesCheckpoint } = await import('../../shapes/model.js');
        const r = await writeShapesCheckpoint(dir, {
          seed: f.seed,
          ...(f.vq !== undefined && { vqDir: f.vq }),
          ...(f.answerBlock !== undefined && { answerBlock: f.answerBlock }),
          ...(f.ropeTheta !== undefined && { overrides: { ropeTheta: f.ropeTheta } }),
          codebookRows: f.vq !== undefined && f.codebookRows,
        });
        const c = r.config;
        const summary = {
          dir: r.dir,
          parameters: r.parameters,
          dModel: c.dModel,
          nLayers: c.nLayers,
          nHeads: c.nHeads,
          vocabSize: c.embeddingSize,
        };
        if (f.json) writeJson(ctx.stdout, summary);
        else
          ctx.stdout.write(
            `wrote ${r.dir}: shapes model, d_model ${c.dModel}, ${c.nLayers} layers, ${r.parameters} parameters\n`,
          );
      },
    );

  shapes
    .command('binding')
    .description(
      "how far the caption's place moves the model's picture: P(not background) per cell for one object at each of the nine places, every cell masked (docs/shapes.md)",
    )
    .requiredOption('--model <dir>', 'checkpoint folder')
    .option('--shape <s>', 'object shape', choiceOpt('--shape', SHAPES), 'square')
    .option('--color <c>', 'object colour', choiceOpt('--color', COLORS), 'red')
    .option(
      '--size <s>',
      'object size (both: one report each)',
      choiceOpt('--size', [...SIZES, 'both'] as const),
      'both',
    )
    .option('--background <b>', 'background', choiceOpt('--background', BACKGROUNDS), 'white')
    .option('--threads <n>', 'CPU threads', intOpt('--threads', { min: 1, max: 1024 }))
    .option('--maps', "also print each place's map")
    .option('--json', 'print the reports as JSON')
    .action(
      async (f: {
        model: string;
        shape: Shape;
        color: Color;
        size: Size | 'both';
        background: Background;
        threads?: number;
        maps?: boolean;
        json?: boolean;
      }) => {
        checkModelDir(f.model);
        const [{ Dimoo }, { placeBinding }] = await Promise.all([
          import('../../pipelines/dimoo.js'),
          import('../../shapes/binding.js'),
        ]);
        const d = await Dimoo.load(f.model, f.threads !== undefined ? { threads: f.threads } : {});
        try {
          requireVq(d, 'to find the background code');
          const sizes: Size[] = f.size === 'both' ? [...SIZES] : [f.size];
          const reports = [];
          for (const size of sizes) {
            throwIfCancelled(ctx.signal);
            reports.push(
              await placeBinding(d, {
                shape: f.shape,
                color: f.color,
                size,
                background: f.background,
              }),
            );
          }
          if (f.json) {
            writeJson(
              ctx.stdout,
              reports.map((r) => (f.maps ? r : { ...r, places: undefined })),
            );
            return;
          }
          for (const r of reports) {
            ctx.stdout.write(
              `${r.size} ${r.color} ${r.shape} on ${r.background}: binding ${r.binding.toFixed(3)} (inside - outside ${r.insideMinusOutside.toFixed(3)})\n`,
            );
            if (!f.maps) continue;
            for (const p of r.places) {
              const w = Math.round(Math.sqrt(p.map.length));
              ctx.stdout.write(`  ${p.place}: "${p.caption}"\n`);
              for (let row = 0; row < p.map.length / w; row++)
                ctx.stdout.write(
                  `    ${p.map
                    .slice(row * w, (row + 1) * w)
                    .map((x) => x.toFixed(2))
                    .join(' ')}\n`,
                );
            }
          }
        } finally {
          await d.dispose();
        }
      },
    );

  registerShapesTrain(shapes, ctx);

  shapes
    .command('train-vq')
    .description(
      "train the shapes VQ-VAE on pictures drawn on the fly (resumable); writes a diffusers VQ folder (what a checkpoint's vqvae/ holds)",
    )
    .requiredOption(
      '--out <dir>',
      'final VQ folder: config.json + diffusion_pytorch_model.safetensors',
    )
    .option('--state <dir>', 'training state folder (saved every few minutes; default <out>.state)')
    .option(
      '--steps <n>',
      'stop after this many optimiser steps in all',
      intOpt('--steps', { min: 1, max: 100_000_000 }),
    )
    .option(
      '--minutes <m>',
      'stop after this many minutes of training in all',
      numOpt('--minutes', { min: 0 }),
    )
    .option(
      '--batch-size <n>',
      'pictures per step',
      intOpt('--batch-size', { min: 1, max: 1024 }),
      4,
    )
    .option(
      '--lr <x>',
      'peak learning rate (AdamW, warm-up then cosine to 10%)',
      numOpt('--lr', { min: 0 }),
      SHAPES_VQ_LR,
    )
    .option(
      '--seed <n>',
      'seed of the initial weights and of the pictures',
      intOpt('--seed', { min: 0 }),
      0,
    )
    .option(
      '--holdout <f>',
      'held-out share of scenes (skipped in training, measured for the PSNR)',
      numOpt('--holdout', { min: 0, max: 1 }),
      0.1,
    )
    .option(
      '--eval-images <n>',
      'held-out pictures in the PSNR',
      intOpt('--eval-images', { min: 1, max: 100_000 }),
      64,
    )
    .option(
      '--eval-every <m>',
      'minutes between held-out PSNR measurements',
      numOpt('--eval-every', { min: 0 }),
      5,
    )
    .option('--threads <n>', 'CPU threads', intOpt('--threads', { min: 1, max: 1024 }))
    .option('--resume', 'continue from the state folder when it holds a state')
    .option(
      '--init <vqdir>',
      'start from the weights (and config) of this VQ folder instead of random ones',
    )
    .option(
      '--decoder-only',
      'train only post_quant_conv and the decoder: token grids made by the --init VQ stay valid',
    )
    .option(
      '--ema <decay>',
      'codebook by exponential moving averages of its assigned encoder outputs (0: by its gradient)',
      numOpt('--ema', { min: 0, max: 0.9999 }),
      SHAPES_VQ_EMA,
    )
    .option(
      '--ae-warmup <steps>',
      'first steps as a plain autoencoder (no quantisation) while the codes follow the encoder',
      intOpt('--ae-warmup', { min: 0 }),
      SHAPES_VQ_AE_WARMUP,
    )
    .option(
      '--soft-norm <scale>',
      'train the weights that feed GroupNorms at this scale, so the norms start as fixed gains (0: off)',
      numOpt('--soft-norm', { min: 0, max: 1 }),
      SHAPES_VQ_SOFT_NORM,
    )
    .option(
      '--thumbnails <T>',
      "fixed codebook of the world's TxT cell thumbnails (0: a learnt codebook)",
      intOpt('--thumbnails', { min: 0, max: 64 }),
      SHAPES_VQ_THUMBNAIL,
    )
    .option(
      '--learnt-encoder',
      'with --thumbnails: train the encoder to regress the thumbnails (default: set it to compute them exactly, frozen)',
    )
    .option('--json', 'one JSON object per line for every log event (the last one: "done")')
    .action(async (f: TrainVqFlags) => trainVqCommand(ctx, f));

  const ev = program
    .command('eval')
    .description(
      'evaluate a checkpoint on held-out shapes prompts and pictures (rule-based checker)',
    )
    .option('--limit <n>', 'items per task', intOpt('--limit', { min: 1, max: 100_000 }), 20)
    .option(
      '--tasks <list>',
      `comma-separated: ${EVAL_TASKS.join(',')} (probe: greedy one-pass cell accuracy from the caption alone and with half the picture given; not run by default)`,
      parseTasks,
      [...DEFAULT_EVAL_TASKS],
    )
    .option('--seed <n>', 'seed of the items and of sampling', intOpt('--seed', { min: 0 }), 0)
    .option(
      '--holdout <f>',
      'held-out share the data set was generated with',
      numOpt('--holdout', { min: 0, max: 1 }),
      0.1,
    )
    .option(
      '--timesteps <n>',
      'MaskGIT steps for image tasks',
      intOpt('--timesteps', { min: 1, max: 1000 }),
      16,
    )
    .option(
      '--temperature <t>',
      'image sampling temperature',
      numOpt('--temperature', { min: 0 }),
      1,
    )
    .option(
      '--cfg-scale <s>',
      "text guidance scale (default: each task's own)",
      numOpt('--cfg-scale', { min: 0 }),
    )
    .option(
      '--cfg-img <s>',
      "image guidance scale of the edits (default: the library's, 4)",
      numOpt('--cfg-img', { min: 0 }),
    )
    .option('--use-cache', 'ML-Cache for image tasks')
    .option(
      '--mmu-cache <mode>',
      'understanding cache: none, dual or ml-cache',
      choiceOpt('--mmu-cache', ['none', 'dual', 'ml-cache'] as const),
      'none',
    )
    .option(
      '--gen-length <n>',
      "understanding answer length in tokens (multiple of 16, blocks of 16; default: the checkpoint's generation_config.json, else 48)",
      intOpt('--gen-length', { min: 16, max: 1024 }),
    )
    .option('--grid <file.png>', 'write an image grid of the samples with pass/fail frames')
    .option('--show-items', 'list every item with what was expected and what was read');
  addModelOptions(ev);
  addCacheScheduleOptions(ev);
  ev.action((f: EvalFlags) => evalCommand(ctx, f));
}
