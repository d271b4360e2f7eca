/**
 * `dimoo train`: fine-tuning with the original's SFT recipe (full or LoRA).
 * The whole data set is read and checked first; then one line of JSON per
 * optimiser step (--json), a progress bar with loss and tokens/s, a save every
 * --save-every steps and at the end (`OUT/checkpoint-<step>/`, each complete
 * and resumable, with its loss curve), and on Ctrl-C: the current step
 * finishes and a resumable checkpoint is written.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { DimooError } from '../../errors.js';
import type { DimooApi } from '../../pipelines/types.js';
import type { PixelGrid } from '../../training/data.js';
import type { StepReport, TrainerConfig } from '../../training/loop.js';
import {
  LORA_MODULES,
  TRAINER_STATE_FILE,
  LOSS_CURVE_FILE,
  type SaveDtype,
} from '../../training/save.js';
import type { Trainer, TrainOptions } from '../../training/trainer.js';
import { ANSWER_BLOCK, I2I_DROPS, type I2iDrop } from '../../training/recipe.js';
import type { CliContext } from '../context.js';
import { CancelledError } from '../errors.js';
import { checkModelDir } from '../model.js';
import { choiceOpt, intOpt, numOpt } from '../options.js';
import { writeJson } from '../output.js';
import { createProgressBar, type ProgressMode } from '../progress.js';

interface TrainFlags {
  model: string;
  data: string[];
  out: string;
  steps?: number;
  epochs?: number;
  batchSize?: number;
  gradAccum?: number;
  lr?: number;
  lrSchedule?: 'cosine' | 'constant';
  minLr?: number;
  warmupSteps?: number;
  weightDecay?: number;
  clipGrad?: number | 'none';
  seed?: number;
  shuffle?: boolean;
  saveEvery?: number;
  resume?: string;
  saveDtype: SaveDtype;
  threads?: number;
  device?: 'cpu' | 'webgpu';
  groupByLength?: boolean;
  maskPadding?: boolean;
  i2iDrop?: I2iDrop;
  imageFullMask?: number;
  answerBlock?: number;
  vocabRows?: string;
  lora?: number;
  loraAlpha?: number;
  loraTargets?: string[];
  maxLen?: number;
  skipBad?: boolean;
  json?: boolean;
  progress?: ProgressMode;
}

const IMAGE_GRID_EXT = '.json';

function parseTargets(raw: string): string[] {
  const list = raw
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  const known = Object.keys(LORA_MODULES);
  for (const t of list) {
    if (!known.includes(t)) {
      throw new DimooError(
        `--lora-targets: unknown linear "${t}" (known: ${known.join(', ')})`,
        'E_PARAM',
      );
    }
  }
  if (list.length === 0)
    throw new DimooError('--lora-targets needs at least one linear', 'E_PARAM');
  return [...new Set(list)];
}

function parseClip(raw: string): number | 'none' {
  if (raw === 'none') return 'none';
  return numOpt('--clip-grad', { min: 0 })(raw);
}

/** `--resume` accepts a saved checkpoint folder or a run folder (its latest checkpoint). */
export function resolveResumeDir(dir: string): string {
  if (fs.existsSync(path.join(dir, TRAINER_STATE_FILE))) return dir;
  let entries: string[];
  try {
    entries = fs.readdirSync(dir);
  } catch {
    throw new DimooError(`--resume ${dir}: no such folder`, 'E_PARAM');
  }
  const steps = entries
    .map((e) => /^checkpoint-(\d+)$/.exec(e))
    .filter(
      (m): m is RegExpExecArray =>
        m !== null && fs.existsSync(path.join(dir, m[0], TRAINER_STATE_FILE)),
    )
    .map((m) => Number(m[1]))
    .sort((a, b) => b - a);
  if (steps.length === 0) {
    throw new DimooError(
      `--resume ${dir}: neither a saved checkpoint (${TRAINER_STATE_FILE}) nor a run folder with checkpoint-N/ inside`,
      'E_PARAM',
    );
  }
  return path.join(dir, `checkpoint-${steps[0]}`);
}

function fmtLoss(x: number): string {
  return Number.isFinite(x) ? x.toFixed(4) : String(x);
}

export function registerTrain(program: Command, ctx: CliContext): void {
  const cmd = program
    .command('train')
    .description("fine-tune a checkpoint with the original's SFT recipe (full or LoRA)")
    .requiredOption(
      '--model <dir>',
      'base checkpoint folder (a `dimoo quantize` folder needs --lora: QLoRA)',
    )
    .requiredOption(
      '--data <file.jsonl>',
      'training records, one JSON per line (repeat for several files)',
      (v: string, prev: string[] | undefined) => [...(prev ?? []), v],
    )
    .requiredOption(
      '--out <dir>',
      'run folder: checkpoint-<step>/ folders, loss-curve.svg, log.jsonl',
    )
    .option(
      '--steps <n>',
      'optimiser steps (default: --epochs over the data)',
      intOpt('--steps', { min: 1 }),
    )
    .option('--epochs <n>', 'passes over the data (default 1)', numOpt('--epochs', { min: 0 }))
    .option(
      '--batch-size <n>',
      'records per micro-batch (default 1)',
      intOpt('--batch-size', { min: 1 }),
    )
    .option(
      '--grad-accum <n>',
      'micro-batches per optimiser step (default 1)',
      intOpt('--grad-accum', { min: 1 }),
    )
    .option('--lr <x>', 'peak learning rate (default 2e-5)', numOpt('--lr', { min: 0 }))
    .option(
      '--lr-schedule <s>',
      'cosine (default) or constant, after the warm-up',
      choiceOpt('--lr-schedule', ['cosine', 'constant'] as const),
    )
    .option(
      '--min-lr <x>',
      'learning rate at the end of the cosine (default 0)',
      numOpt('--min-lr', { min: 0 }),
    )
    .option(
      '--warmup-steps <n>',
      'linear warm-up steps from lr 0 (default 0)',
      intOpt('--warmup-steps', { min: 0 }),
    )
    .option(
      '--weight-decay <x>',
      'AdamW decoupled weight decay (default 0)',
      numOpt('--weight-decay', { min: 0 }),
    )
    .option('--clip-grad <x|none>', 'max total gradient norm (default 4.0)', parseClip)
    .option(
      '--seed <n>',
      'seed of shuffling, masks and LoRA init (default 0)',
      intOpt('--seed', { min: 0 }),
    )
    .option('--no-shuffle', 'visit the records in file order (batches = consecutive records)')
    .option(
      '--group-by-length',
      'batches of records of similar length (less padding, faster steps); the batches still come in random order',
    )
    .option(
      '--save-every <n>',
      'also save every n optimiser steps',
      intOpt('--save-every', { min: 1 }),
    )
    .option(
      '--resume <dir>',
      'continue a saved run (a checkpoint-N folder, or the run folder: its latest)',
    )
    .option(
      '--save-dtype <d>',
      'weights of saved checkpoints: bf16 (official) or float32',
      choiceOpt('--save-dtype', ['bf16', 'float32'] as const),
      'bf16',
    )
    .option(
      '--threads <n>',
      'CPU threads for ONNX Runtime',
      intOpt('--threads', { min: 1, max: 1024 }),
    )
    .option(
      '--device <cpu|webgpu>',
      'execution device',
      choiceOpt('--device', ['cpu', 'webgpu'] as const),
    )
    .option('--mask-padding', 'do not attend to batch padding (the original does)')
    .option(
      '--i2i-drop <original|guidance>',
      "what the 10% condition drop of an image-to-image record removes: original (train.py): text and picture together; guidance: one of the three contexts the image-to-image sampler's guidance uses (both, the text only, the picture only)",
      choiceOpt('--i2i-drop', I2I_DROPS),
    )
    .option(
      '--image-full-mask <p>',
      'share of answer pictures masked whole instead of by the cosine ratio (default 0, the original); more contexts where only the prompt tells the picture',
      numOpt('--image-full-mask', { min: 0, max: 1 }),
    )
    .option(
      '--answer-block <n>',
      `understanding answer + masked padding length in tokens (default ${ANSWER_BLOCK}, the original's); ` +
        'a shorter block is written into the saved generation_config.json as the answer length to generate',
      intOpt('--answer-block', { min: 1 }),
    )
    .option(
      '--vocab-rows <all|auto|ranges>',
      'embedding/head rows that train: all (default); auto, the rows whose embedding is not zero; ' +
        'or start:end,... ranges. The left-out rows must be zero in the embedding and equal in the head: ' +
        'the result is the same as training all rows, at the cost of the rows kept',
    )
    .option(
      '--lora <r>',
      'train LoRA adapters of rank r instead of every weight',
      intOpt('--lora', { min: 1 }),
    )
    .option(
      '--lora-alpha <a>',
      'LoRA alpha (scale alpha/r; default r)',
      numOpt('--lora-alpha', { min: 0 }),
    )
    .option(
      '--lora-targets <list>',
      `linears to adapt (default all: ${Object.keys(LORA_MODULES).join(',')})`,
      parseTargets,
    )
    .option(
      '--max-len <n>',
      'longest accepted sequence (default 4096)',
      intOpt('--max-len', { min: 1 }),
    )
    .option('--skip-bad', 'skip (and count) bad data lines instead of stopping')
    .option('--json', 'one JSON object per optimiser step on stdout')
    .option('--progress', 'show a progress bar on stderr even when it is not a terminal')
    .option('--no-progress', 'never show a progress bar');
  cmd.action(async (f: TrainFlags, c: Command) => {
    // Only flags given on the command line override a resumed run's settings.
    const given = (name: string): boolean => c.getOptionValueSource(name) === 'cli';
    checkModelDir(f.model);
    if ((f.loraAlpha !== undefined || f.loraTargets !== undefined) && f.lora === undefined) {
      throw new DimooError('--lora-alpha and --lora-targets need --lora R', 'E_PARAM');
    }
    for (const d of f.data) {
      if (!fs.existsSync(d)) throw new DimooError(`--data ${d}: no such file`, 'E_PARAM');
    }
    const resume = f.resume !== undefined ? resolveResumeDir(f.resume) : undefined;
    const cfg: Partial<TrainerConfig> = {};
    const set = <K extends keyof TrainerConfig>(
      k: K,
      flag: string,
      v: TrainerConfig[K] | undefined,
    ) => {
      if (v !== undefined && given(flag)) cfg[k] = v;
    };
    set('steps', 'steps', f.steps);
    set('epochs', 'epochs', f.epochs);
    set('batchSize', 'batchSize', f.batchSize);
    set('gradAccum', 'gradAccum', f.gradAccum);
    set('lr', 'lr', f.lr);
    set('lrSchedule', 'lrSchedule', f.lrSchedule);
    set('minLr', 'minLr', f.minLr);
    set('warmupSteps', 'warmupSteps', f.warmupSteps);
    set('weightDecay', 'weightDecay', f.weightDecay);
    if (f.clipGrad !== undefined) cfg.clipGrad = f.clipGrad === 'none' ? null : f.clipGrad;
    set('seed', 'seed', f.seed);
    if (given('shuffle')) cfg.shuffle = f.shuffle !== false;
    if (f.groupByLength) cfg.groupByLength = true;
    if (f.maskPadding) cfg.maskPadding = true;
    set('answerBlock', 'answerBlock', f.answerBlock);
    set('i2iDrop', 'i2iDrop', f.i2iDrop);
    set('imageFullMask', 'imageFullMask', f.imageFullMask);
    set('vocabRows', 'vocabRows', f.vocabRows);

    // Image files in the data are encoded with the checkpoint's VQ-VAE, loaded on first need.
    let api: DimooApi | undefined;
    const { defaultResolveImage, Trainer: TrainerClass } =
      await import('../../training/trainer.js');
    const resolveImage = async (
      value: unknown,
      where: string,
      baseDir: string,
    ): Promise<PixelGrid> => {
      if (ctx.signal.aborted) throw new CancelledError();
      if (typeof value !== 'string' || path.extname(value).toLowerCase() === IMAGE_GRID_EXT) {
        return defaultResolveImage(value, where, baseDir);
      }
      const file = path.resolve(baseDir, value);
      if (!fs.existsSync(file)) throw new DimooError(`${where}: ${file}: no such file`, 'E_IMAGE');
      if (!api) {
        api = await ctx.loadModel(f.model, { ...(f.threads ? { threads: f.threads } : {}) });
        if (!api.info().hasVq) {
          throw new DimooError(
            `${where}: ${file} is an image, and ${f.model} has no VQ-VAE (vqvae/) to encode it`,
            'E_PARAM',
          );
        }
      }
      return api.encodeImage({ path: file });
    };
    const bar = createProgressBar(ctx.stderr, f.progress);
    const opts: TrainOptions = {
      model: f.model,
      data: f.data,
      ...cfg,
      ...(f.device ? { device: f.device } : {}),
      ...(f.threads ? { threads: f.threads } : {}),
      ...(f.lora !== undefined
        ? {
            lora: {
              r: f.lora,
              alpha: f.loraAlpha ?? f.lora,
              targets: f.loraTargets ?? Object.keys(LORA_MODULES),
            },
          }
        : {}),
      ...(f.maxLen !== undefined ? { maxLen: f.maxLen } : {}),
      skipBad: f.skipBad === true,
      ...(resume ? { resume } : {}),
      saveDtype: f.saveDtype,
      resolveImage,
      onDataLine: (done, total) => {
        if (done === 1) bar.start(total, 'data', '');
        bar.update(done);
      },
    };
    let trainer: Trainer;
    try {
      trainer = await TrainerClass.create(opts);
    } catch (e) {
      throw ctx.signal.aborted ? new CancelledError() : e;
    } finally {
      bar.stop();
      if (api) await api.dispose();
    }
    try {
      await trainLoop(ctx, f, trainer, bar);
    } finally {
      await trainer.dispose();
    }
  });
}

async function trainLoop(
  ctx: CliContext,
  f: TrainFlags,
  trainer: Trainer,
  bar: ReturnType<typeof createProgressBar>,
): Promise<void> {
  for (const s of trainer.skipped) ctx.stderr.write(`skipped ${s.where}: ${s.error}\n`);
  const params = trainer.trainedCount;
  ctx.stderr.write(
    `training ${trainer.records.length} records` +
      (trainer.skipped.length ? ` (${trainer.skipped.length} bad lines skipped)` : '') +
      `, ${params.toLocaleString('en-US')} trainable parameters` +
      (trainer.lora ? ` (LoRA r=${trainer.lora.r})` : '') +
      (trainer.config.vocabRows !== 'all'
        ? ` (vocabulary rows: ${trainer.config.vocabRows})`
        : '') +
      `, steps ${trainer.step + 1}..${trainer.totalSteps}\n`,
  );
  fs.mkdirSync(f.out, { recursive: true });
  const log = path.join(f.out, 'log.jsonl');
  // A fresh run starts its own log; a resumed one continues it.
  if (f.resume === undefined) fs.writeFileSync(log, '');
  let lastSaved = trainer.step;
  const save = async (why: string): Promise<string> => {
    const dir = path.join(f.out, `checkpoint-${trainer.step}`);
    await trainer.save(dir);
    fs.copyFileSync(path.join(dir, LOSS_CURVE_FILE), path.join(f.out, LOSS_CURVE_FILE));
    lastSaved = trainer.step;
    if (f.json)
      writeJson(ctx.stdout, { event: 'saved', step: trainer.step, checkpoint: dir, reason: why });
    return dir;
  };
  bar.start(trainer.totalSteps, 'train', '');
  bar.update(trainer.step);
  const onStep = async (r: StepReport): Promise<void> => {
    const rec = {
      event: 'step',
      step: r.step,
      totalSteps: r.totalSteps,
      epoch: r.epoch,
      loss: r.loss,
      gradNorm: r.gradNorm,
      lr: r.lr,
      tokens: r.tokens,
      seconds: r.seconds,
      tokensPerS: r.tokensPerS,
    };
    fs.appendFileSync(log, JSON.stringify(rec) + '\n');
    if (f.json) writeJson(ctx.stdout, rec);
    bar.update(r.step, `loss ${fmtLoss(r.loss)}, ${r.tokensPerS.toFixed(0)} tok/s`);
    if (f.saveEvery !== undefined && r.step % f.saveEvery === 0 && r.step < r.totalSteps) {
      await save('save-every');
    }
  };
  let aborted: boolean;
  try {
    ({ aborted } = await trainer.run({ signal: ctx.signal, onStep }));
  } finally {
    bar.stop();
  }
  if (aborted) {
    if (trainer.step > lastSaved) {
      const dir = await save('interrupted');
      ctx.stderr.write(
        `interrupted after step ${trainer.step}: saved ${dir} (continue with --resume ${dir})\n`,
      );
    }
    throw new CancelledError();
  }
  const dir =
    trainer.step > lastSaved || !fs.existsSync(path.join(f.out, `checkpoint-${trainer.step}`))
      ? await save('done')
      : path.join(f.out, `checkpoint-${trainer.step}`);
  const last = trainer.losses.at(-1);
  if (!f.json) {
    ctx.stdout.write(
      `trained ${trainer.step} steps` +
        (last ? `, last loss ${fmtLoss(last.loss)}` : '') +
        `: ${dir}\n`,
    );
  }
}
