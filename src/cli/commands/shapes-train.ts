/**
 * `dimoo shapes train` (`npm run train:shapes`): the shapes model from
 * nothing, in one resumable command. Each stage is a dimoo command run as a
 * child process, skipped when its result is already complete in the work
 * folder, so rerunning the command continues where it stopped:
 *
 *   1. VQ-VAE      `dimoo shapes train-vq`   -> VQDIR (default WORK/vq)
 *   2. start       `dimoo shapes init --vq`  -> WORK/init (random transformer, trained VQ)
 *   3. data        `dimoo shapes generate`   -> WORK/data (train + held-out, token grids)
 *   4. transformer `dimoo train`             -> WORK/run/checkpoint-N (resumed from the latest)
 *   5. result      the last checkpoint without optimizer state -> WORK/final
 *                  (and, with --ship, the package's models/shapes/)
 *
 * The plan (steps, batch, learning rate, ...) is fixed on the first run and
 * kept in WORK/plan.json; a rerun follows it. The transformer stage stops
 * itself (Ctrl-C semantics: the step finishes, a resumable checkpoint is
 * saved) when its --minutes run out, so a run can be fitted to a deadline.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import type { Command } from 'commander';
import { DimooError } from '../../errors.js';
import {
  isCompleteCheckpoint,
  packageRoot,
  shippedModelDir,
} from '../../checkpoint/default-model.js';
import { SHAPES_ANSWER_BLOCK } from '../../shapes/model.js';
import type { CliContext } from '../context.js';
import { CancelledError } from '../errors.js';
import { choiceOpt, intOpt, numOpt } from '../options.js';
import { I2I_DROPS, type I2iDrop } from '../../training/recipe.js';
import {
  FINAL_MIX_WEIGHTS,
  SINGLE_OBJECT_WEIGHTS,
  checkWeights,
  writePhaseData,
  type PhaseWeights,
} from '../../shapes/curriculum.js';

const TRAINER_STATE = 'trainer_state.json';
/** Left out of the final model: they only serve resuming. */
const RESUME_ONLY = new Set([TRAINER_STATE, 'optimizer.safetensors']);

/** What the first run decided; reruns follow it. */
export interface ShapesPlan {
  seed: number;
  scenes: number;
  holdout: number;
  questions: number;
  steps: number;
  batchSize: number;
  lr: number;
  minLr: number;
  warmupSteps: number;
  answerBlock: number;
  saveEvery: number;
  /**
   * Train with a key mask over the batch padding (dimoo train --mask-padding).
   * Absent in plans written before it existed: those keep training without.
   */
  maskPadding?: boolean;
  /** Batches of similar-length records (dimoo train --group-by-length); absent in older plans: off. */
  groupByLength?: boolean;
  /** The transformer's RoPE base (shapes init --rope-theta); absent in older plans: the official 500 000. */
  ropeTheta?: number;
  /** dimoo train --i2i-drop; absent in older plans: the original's. */
  i2iDrop?: I2iDrop;
  /** dimoo train --image-full-mask; absent in older plans: 0 (the original's cosine ratio only). */
  imageFullMask?: number;
  /**
   * The curriculum after the first (mixed) run: each phase a `dimoo train` from
   * the previous phase's last checkpoint on train.jsonl's records weighted by
   * kind (shapes/curriculum.ts). Absent in older plans: none.
   */
  phases?: ShapesPhase[];
}

export interface ShapesPhase {
  /** Its run folder is WORK/run-<name>. */
  name: string;
  weights: PhaseWeights;
  steps: number;
  lr: number;
  minLr: number;
  schedule: 'constant' | 'cosine';
  warmupSteps: number;
  seed: number;
}

/** A phase as the pipeline runs it (the first one is WORK/run on train.jsonl). */
interface PhaseRun extends Omit<ShapesPhase, 'weights'> {
  runDir: string;
  /** The checkpoint it starts from. */
  model: string;
  data: string;
  weights?: PhaseWeights;
}

/**
 * The curriculum after the mixed run (docs/shapes.md, the seventh and eighth runs):
 * optionally single-object text-to-image records alone at a constant rate, which
 * teaches where a caption puts an object; then every record with single-object
 * text-to-image weighted up (by default enough that binding and the objects' codes
 * rise together), the rate decaying to --min-lr.
 */
function curriculumPhases(f: Flags): ShapesPhase[] {
  const out: ShapesPhase[] = [];
  if (f.singleSteps > 0)
    out.push({
      name: 'single',
      weights: { ...SINGLE_OBJECT_WEIGHTS },
      steps: f.singleSteps,
      lr: PHASE_LR,
      minLr: PHASE_LR,
      schedule: 'constant',
      warmupSteps: Math.min(PHASE_WARMUP, f.singleSteps - 1),
      seed: f.seed + 1,
    });
  if (f.finalSteps > 0)
    out.push({
      name: 'final',
      weights: { ...f.finalWeights },
      steps: f.finalSteps,
      lr: PHASE_LR,
      minLr: f.minLr,
      schedule: 'cosine',
      warmupSteps: Math.min(PHASE_WARMUP, f.finalSteps - 1),
      seed: f.seed + 2,
    });
  return out;
}

/** `--final-weights a,b,c,d`: four integers, in PhaseWeights order. */
function parsePhaseWeights(raw: string): PhaseWeights {
  const v = raw.split(',').map((x) => Number(x.trim()));
  if (v.length !== 4 || v.some((x) => !Number.isInteger(x)))
    throw new DimooError(
      `--final-weights must be four integers a,b,c,d (single-object text-to-image, other text-to-image, edits, questions), got "${raw}"`,
      'E_PARAM',
    );
  const w: PhaseWeights = { t2iSingle: v[0]!, t2iMulti: v[1]!, edit: v[2]!, mmu: v[3]! };
  checkWeights(w, '--final-weights');
  return w;
}

/** Peak learning rate of the curriculum's phases (measured: binding appeared at 1e-3 within 300-600 steps). */
const PHASE_LR = 1e-3;
/** Each phase starts a fresh optimiser: a short warm-up keeps the first steps of new Adam moments small. */
const PHASE_WARMUP = 20;

/** The run folder of the last phase that has saved a checkpoint. */
function lastStarted(phases: readonly PhaseRun[]): string {
  for (let i = phases.length - 1; i > 0; i--)
    if (latestCheckpoint(phases[i]!.runDir)) return phases[i]!.runDir;
  return phases[0]!.runDir;
}

/**
 * One phase's `dimoo train`, resumed from its own latest checkpoint when it has
 * one; skipped when complete. Returns whether the time budget stopped it.
 */
async function trainPhase(
  ctx: CliContext,
  plan: ShapesPlan,
  ph: PhaseRun,
  threads: string,
  stopAt: number,
): Promise<boolean> {
  const before = latestCheckpoint(ph.runDir);
  if (before && before.step >= ph.steps) {
    log(
      ctx,
      `transformer, phase ${ph.name}: ${before.dir} is at step ${before.step} of ${ph.steps}, skipped`,
    );
    return false;
  }
  if (Date.now() >= stopAt) return true;
  const args = [
    'train',
    '--model',
    ph.model,
    '--data',
    ph.data,
    '--out',
    ph.runDir,
    '--steps',
    String(ph.steps),
    '--batch-size',
    String(plan.batchSize),
    '--lr',
    String(ph.lr),
    '--min-lr',
    String(ph.minLr),
    '--warmup-steps',
    String(ph.warmupSteps),
    '--lr-schedule',
    ph.schedule,
    '--answer-block',
    String(plan.answerBlock),
    // Only the rows the world uses (its words, the specials, the image codes) train:
    // the same training as all 134 548 rows (training/vocab-rows.ts), ~4x faster.
    '--vocab-rows',
    'auto',
    // The original attends to its right-padding; sampling never sees padding, so a
    // model trained with it meets a context it never trained on (short text-to-image
    // records carry the most padding). Masking it removes that mismatch.
    ...(plan.maskPadding ? ['--mask-padding'] : []),
    ...(plan.groupByLength ? ['--group-by-length'] : []),
    // The edits' guidance asks about a picture with <uncondition> text and the text
    // without its picture; the original's drop trains neither (docs/shapes.md).
    ...(plan.i2iDrop ? ['--i2i-drop', plan.i2iDrop] : []),
    // Pictures masked whole: contexts where only the caption tells the picture
    // (docs/shapes.md, the eighth run).
    ...(plan.imageFullMask ? ['--image-full-mask', String(plan.imageFullMask)] : []),
    '--seed',
    String(ph.seed),
    '--save-every',
    String(plan.saveEvery),
    '--threads',
    threads,
    '--json',
    '--no-progress',
    ...(before ? ['--resume', ph.runDir] : []),
  ];
  let losses: number[] = [];
  const r = await runDimoo(ctx, args, {
    stopAt,
    onLine: (line) => {
      let e: Record<string, unknown>;
      try {
        e = JSON.parse(line) as Record<string, unknown>;
      } catch {
        ctx.stdout.write(line + '\n');
        return;
      }
      if (e.event === 'step') {
        losses.push(e.loss as number);
        const s = e.step as number;
        if (s % 10 === 0 || s === e.totalSteps) {
          const mean = losses.reduce((a, b) => a + b, 0) / losses.length;
          log(
            ctx,
            `${ph.name} step ${s}/${e.totalSteps}: loss ${mean.toFixed(4)} (mean of ${losses.length}), lr ${(e.lr as number).toExponential(2)}, ${(e.tokensPerS as number).toFixed(0)} tok/s, ${(e.seconds as number).toFixed(2)} s/step`,
          );
          losses = [];
        }
      } else if (e.event === 'saved') {
        log(ctx, `saved ${String(e.checkpoint)} (${String(e.reason)})`);
        prune(ph.runDir, 2);
      }
    },
  });
  // A stop by the time budget exits like Ctrl-C (130) after saving.
  if (!(r.code === 0 || (r.stopped && r.code === 130)))
    must(r, `transformer training (phase ${ph.name})`);
  return r.stopped;
}

interface Flags {
  work: string;
  vq?: string;
  seed: number;
  threads: number;
  vqMinutes: number;
  scenes: number;
  holdout: number;
  questions: number;
  minutes: number;
  steps?: number;
  secPerStep: number;
  batchSize: number;
  lr: number;
  minLr: number;
  warmupSteps: number;
  answerBlock: number;
  maskPadding: boolean;
  groupByLength: boolean;
  ropeTheta?: number;
  i2iDrop: I2iDrop;
  imageFullMask: number;
  curriculum: boolean;
  singleSteps: number;
  finalSteps: number;
  finalWeights: PhaseWeights;
  saveMinutes: number;
  deadline?: string;
  ship?: boolean;
}

function log(ctx: CliContext, msg: string): void {
  ctx.stdout.write(`[${new Date().toISOString().slice(0, 19)}Z] ${msg}\n`);
}

/** Runs `dimoo <args>` as a child; lines of its stdout go to `onLine`, stderr passes through. */
async function runDimoo(
  ctx: CliContext,
  args: string[],
  opts: { onLine?: (line: string, child: ReturnType<typeof spawn>) => void; stopAt?: number } = {},
): Promise<{ code: number; stopped: boolean }> {
  const bin = path.join(packageRoot(), 'bin', 'dimoo.js');
  log(ctx, `$ dimoo ${args.join(' ')}`);
  // Its own process group: a terminal's Ctrl-C reaches only us, and we pass on
  // exactly one SIGINT (a second one would make the child quit without saving).
  const child = spawn(process.execPath, [bin, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let stopped = false;
  let signalled = false;
  const stop = (): void => {
    if (child.exitCode === null && !signalled) {
      signalled = true;
      child.kill('SIGINT');
    }
  };
  const onAbort = (): void => stop();
  ctx.signal.addEventListener('abort', onAbort);
  const timer =
    opts.stopAt !== undefined
      ? setTimeout(
          () => {
            stopped = true;
            log(ctx, 'time budget spent: stopping (the current step finishes and is saved)');
            stop();
          },
          Math.max(0, opts.stopAt - Date.now()),
        )
      : undefined;
  readline.createInterface({ input: child.stdout! }).on('line', (l) => {
    if (opts.onLine) opts.onLine(l, child);
    else ctx.stdout.write(l + '\n');
  });
  child.stderr!.on('data', (d: Buffer) => ctx.stderr.write(d));
  const code = await new Promise<number>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (c, sig) => resolve(c ?? (sig ? 128 : 1)));
  });
  if (timer) clearTimeout(timer);
  ctx.signal.removeEventListener('abort', onAbort);
  if (ctx.signal.aborted) throw new CancelledError();
  return { code, stopped };
}

function must(r: { code: number }, what: string): void {
  if (r.code !== 0)
    throw new DimooError(
      `${what} failed (exit status ${r.code}); fix the cause and rerun: completed stages are kept`,
      'E_TRAIN',
    );
}

/** The latest checkpoint-N of a run folder with a saved trainer state, or undefined. */
export function latestCheckpoint(runDir: string): { dir: string; step: number } | undefined {
  if (!fs.existsSync(runDir)) return undefined;
  const steps = fs
    .readdirSync(runDir)
    .map((e) => /^checkpoint-(\d+)$/.exec(e))
    .filter(
      (m): m is RegExpExecArray =>
        m !== null && fs.existsSync(path.join(runDir, m[0], TRAINER_STATE)),
    )
    .map((m) => Number(m[1]))
    .sort((a, b) => b - a);
  return steps.length
    ? { dir: path.join(runDir, `checkpoint-${steps[0]}`), step: steps[0]! }
    : undefined;
}

/** Keeps the newest `keep` checkpoints (each holds ~1 GB of optimizer state). */
function prune(runDir: string, keep: number): void {
  const all = fs
    .readdirSync(runDir)
    .map((e) => /^checkpoint-(\d+)$/.exec(e))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => b - a);
  for (const s of all.slice(keep))
    fs.rmSync(path.join(runDir, `checkpoint-${s}`), { recursive: true, force: true });
}

/** Copies a checkpoint without its resume-only files into `dst`, atomically (replacing `dst`). */
export function exportModel(src: string, dst: string, extra: Record<string, unknown>): void {
  const tmp = `${dst}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.cpSync(src, tmp, { recursive: true, filter: (f) => !RESUME_ONLY.has(path.basename(f)) });
  fs.writeFileSync(path.join(tmp, 'training.json'), JSON.stringify(extra, null, 2) + '\n');
  const old = `${dst}.old-${process.pid}`;
  if (fs.existsSync(dst)) fs.renameSync(dst, old);
  fs.renameSync(tmp, dst);
  fs.rmSync(old, { recursive: true, force: true });
}

function readPlan(file: string): ShapesPlan | undefined {
  if (!fs.existsSync(file)) return undefined;
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as ShapesPlan;
  } catch (e) {
    throw new DimooError(
      `${file}: not a readable plan (${(e as Error).message}); delete it to plan the run again`,
      'E_PARAM',
    );
  }
}

async function trainShapes(
  ctx: CliContext,
  f: Flags,
  given: (k: string) => boolean,
): Promise<void> {
  const work = path.resolve(f.work);
  fs.mkdirSync(work, { recursive: true });
  const vqDir = path.resolve(f.vq ?? path.join(work, 'vq'));
  const initDir = path.join(work, 'init');
  const dataDir = path.join(work, 'data');
  const runDir = path.join(work, 'run');
  const finalDir = path.join(work, 'final');
  const planFile = path.join(work, 'plan.json');

  let plan = readPlan(planFile);
  if (!plan) {
    const phases = f.curriculum ? curriculumPhases(f) : [];
    const later = phases.reduce((n, p) => n + p.steps, 0);
    const budget = Math.floor((f.minutes * 60) / f.secPerStep) - later;
    if (f.steps === undefined && budget < 1)
      throw new DimooError(
        `--minutes ${f.minutes} at --sec-per-step ${f.secPerStep} leaves no step for the first phase after the curriculum's ${later}: give --steps or more --minutes`,
        'E_PARAM',
      );
    const steps = f.steps ?? budget;
    plan = {
      seed: f.seed,
      scenes: f.scenes,
      holdout: f.holdout,
      questions: f.questions,
      steps,
      batchSize: f.batchSize,
      lr: f.lr,
      minLr: f.minLr,
      warmupSteps: Math.min(f.warmupSteps, Math.max(0, steps - 1)),
      answerBlock: f.answerBlock,
      maskPadding: f.maskPadding,
      groupByLength: f.groupByLength,
      ...(f.ropeTheta !== undefined && { ropeTheta: f.ropeTheta }),
      i2iDrop: f.i2iDrop,
      imageFullMask: f.imageFullMask,
      ...(phases.length > 0 && { phases }),
      saveEvery: Math.max(1, Math.round((f.saveMinutes * 60) / f.secPerStep)),
    };
    fs.writeFileSync(planFile, JSON.stringify(plan, null, 2) + '\n');
    log(ctx, `plan written to ${planFile}: ${JSON.stringify(plan)}`);
  } else {
    if (f.steps !== undefined && given('steps') && f.steps !== plan.steps) {
      plan.steps = f.steps;
      fs.writeFileSync(planFile, JSON.stringify(plan, null, 2) + '\n');
    }
    log(ctx, `following ${planFile}: ${JSON.stringify(plan)}`);
  }
  const threads = String(f.threads);

  // 1. VQ-VAE
  if (
    fs.existsSync(path.join(vqDir, 'diffusion_pytorch_model.safetensors')) &&
    fs.existsSync(path.join(vqDir, 'config.json'))
  ) {
    log(ctx, `VQ-VAE: ${vqDir} is complete, skipped`);
  } else {
    const state = path.join(work, 'vq-state');
    const resume = fs.existsSync(state) && fs.readdirSync(state).length > 0;
    must(
      await runDimoo(ctx, [
        'shapes',
        'train-vq',
        '--out',
        vqDir,
        '--state',
        state,
        '--minutes',
        String(f.vqMinutes),
        '--threads',
        threads,
        '--seed',
        String(plan.seed),
        '--json',
        ...(resume ? ['--resume'] : []),
      ]),
      'VQ-VAE training',
    );
  }

  // 2. the starting checkpoint (random transformer + the trained VQ-VAE)
  if (isCompleteCheckpoint(initDir) && fs.existsSync(path.join(initDir, '.init-done'))) {
    log(ctx, `start checkpoint: ${initDir} is complete, skipped`);
  } else {
    fs.rmSync(initDir, { recursive: true, force: true });
    must(
      await runDimoo(ctx, [
        'shapes',
        'init',
        initDir,
        '--vq',
        vqDir,
        '--seed',
        String(plan.seed),
        '--answer-block',
        String(plan.answerBlock),
        ...(plan.ropeTheta !== undefined ? ['--rope-theta', String(plan.ropeTheta)] : []),
      ]),
      'shapes init',
    );
    fs.writeFileSync(path.join(initDir, '.init-done'), '');
  }

  // 3. the data set, encoded with the trained VQ-VAE
  if (
    fs.existsSync(path.join(dataDir, 'dataset.json')) &&
    fs.existsSync(path.join(dataDir, 'train.jsonl'))
  ) {
    log(ctx, `data: ${dataDir} is complete, skipped`);
  } else {
    const tmp = `${dataDir}.tmp`;
    fs.rmSync(tmp, { recursive: true, force: true });
    must(
      await runDimoo(ctx, [
        'shapes',
        'generate',
        '--out',
        tmp,
        '--count',
        String(plan.scenes),
        '--seed',
        String(plan.seed),
        '--holdout',
        String(plan.holdout),
        '--questions',
        String(plan.questions),
        '--model',
        initDir,
        '--threads',
        threads,
        '--json',
        '--no-progress',
      ]),
      'data set generation',
    );
    fs.renameSync(tmp, dataDir);
  }

  // 4. the transformer: text-to-image, edits and questions together, then the
  // curriculum's phases, each from the previous one's last checkpoint.
  let stopAt = Date.now() + f.minutes * 60_000;
  if (f.deadline !== undefined) {
    const d = Date.parse(f.deadline);
    if (!Number.isFinite(d))
      throw new DimooError(
        `--deadline ${f.deadline}: not a date/time (e.g. 2026-11-30T21:00:00Z)`,
        'E_PARAM',
      );
    stopAt = Math.min(stopAt, d);
  }
  const phases: Array<PhaseRun> = [
    {
      name: 'mix',
      runDir,
      model: initDir,
      data: path.join(dataDir, 'train.jsonl'),
      steps: plan.steps,
      lr: plan.lr,
      minLr: plan.minLr,
      schedule: 'cosine',
      warmupSteps: plan.warmupSteps,
      seed: plan.seed,
    },
  ];
  for (const ph of plan.phases ?? []) {
    const prev = phases[phases.length - 1]!;
    phases.push({
      name: ph.name,
      runDir: path.join(work, `run-${ph.name}`),
      model: path.join(prev.runDir, `checkpoint-${prev.steps}`),
      data: '', // written when the phase starts (its weights over train.jsonl)
      weights: ph.weights,
      steps: ph.steps,
      lr: ph.lr,
      minLr: ph.minLr,
      schedule: ph.schedule,
      warmupSteps: ph.warmupSteps,
      seed: ph.seed,
    });
  }
  let stopped = false;
  for (const ph of phases) {
    if (ph.weights) {
      const w = writePhaseData(dataDir, ph.weights);
      ph.data = w.file;
      log(ctx, `phase ${ph.name}: ${path.basename(w.file)} ${JSON.stringify(w.counts)}`);
    }
    stopped = await trainPhase(ctx, plan, ph, threads, stopAt);
    if (stopped) break;
  }
  const lastRun = phases[phases.length - 1]!.runDir;

  // 5. the model: the latest checkpoint without its optimizer state
  const done = latestCheckpoint(stopped ? lastStarted(phases) : lastRun);
  if (!done) throw new DimooError(`no checkpoint in ${lastRun}`, 'E_TRAIN');
  const state = JSON.parse(fs.readFileSync(path.join(done.dir, TRAINER_STATE), 'utf8')) as {
    history: Array<{ step: number; loss: number }>;
  };
  const tail = state.history.slice(-20);
  const phase = phases.find((p) => done.dir.startsWith(p.runDir + path.sep))!;
  const summary = {
    phase: phase.name,
    step: done.step,
    totalSteps: phase.steps,
    complete: phase === phases[phases.length - 1] && done.step >= phase.steps,
    lossLast20: tail.length ? tail.reduce((a, b) => a + b.loss, 0) / tail.length : null,
    plan,
    vqvae: vqDir,
    data: dataDir,
    command: 'npm run train:shapes',
  };
  exportModel(done.dir, finalDir, summary);
  log(
    ctx,
    `model: ${finalDir} (phase ${phase.name}, step ${done.step} of ${phase.steps}${summary.complete ? '' : ': resumable, rerun to continue'}), mean loss of the last ${tail.length} steps ${summary.lossLast20?.toFixed(4)}`,
  );
  if (f.ship) {
    const ship = shippedModelDir();
    fs.mkdirSync(path.dirname(ship), { recursive: true });
    exportModel(finalDir, ship, summary);
    log(ctx, `shipped: ${ship}`);
  }
  if (stopped) log(ctx, 'stopped by the time budget: rerun the same command to continue training');
}

export function registerShapesTrain(shapes: Command, ctx: CliContext): void {
  shapes
    .command('train')
    .description(
      'train the shapes model end to end (VQ-VAE, data set, transformer), resumable: rerun to continue',
    )
    .option(
      '--work <dir>',
      'work folder for every stage (outside the repository)',
      '/work/shapes-run',
    )
    .option(
      '--vq <dir>',
      'the VQ-VAE folder (trained there unless already complete; default WORK/vq)',
    )
    .option('--seed <n>', 'seed of every stage', intOpt('--seed', { min: 0 }), 0)
    .option('--threads <n>', 'CPU threads per stage', intOpt('--threads', { min: 1, max: 1024 }), 2)
    .option('--vq-minutes <m>', 'VQ-VAE training time', numOpt('--vq-minutes', { min: 0 }), 45)
    .option(
      '--scenes <n>',
      'scenes in the data set (each: a caption, an edit, --questions questions)',
      intOpt('--scenes', { min: 10 }),
      12000,
    )
    .option(
      '--holdout <f>',
      'held-out share of the scenes',
      numOpt('--holdout', { min: 0, max: 0.9 }),
      0.1,
    )
    .option('--questions <n>', 'questions per scene', intOpt('--questions', { min: 0, max: 10 }), 2)
    .option(
      '--minutes <m>',
      'transformer time budget of this run (it stops, saved and resumable, when spent)',
      numOpt('--minutes', { min: 0 }),
      120,
    )
    .option(
      '--steps <n>',
      'transformer optimiser steps (default: from --minutes and --sec-per-step)',
      intOpt('--steps', { min: 1 }),
    )
    .option(
      '--sec-per-step <s>',
      'expected seconds per transformer step, to plan --steps from --minutes (measured at batch 16 on 2 cores: 0.5-1.0 since the world moved onto the token grid, AVX-512; 1.5-2.4 before, AVX2)',
      numOpt('--sec-per-step', { min: 0.001 }),
      1.0,
    )
    .option('--batch-size <n>', 'records per step', intOpt('--batch-size', { min: 1 }), 16)
    .option(
      '--lr <x>',
      'peak learning rate (from scratch: far above the fine-tuning 2e-5)',
      numOpt('--lr', { min: 0 }),
      1.5e-3,
    )
    .option(
      '--min-lr <x>',
      'learning rate at the end of the cosine',
      numOpt('--min-lr', { min: 0 }),
      1e-4,
    )
    .option('--warmup-steps <n>', 'linear warm-up steps', intOpt('--warmup-steps', { min: 0 }), 50)
    .option(
      '--answer-block <n>',
      'understanding answer + padding block',
      intOpt('--answer-block', { min: 1 }),
      SHAPES_ANSWER_BLOCK,
    )
    .option(
      '--no-mask-padding',
      'attend to the batch padding as the original train.py does (default: masked)',
    )
    .option(
      '--no-group-by-length',
      'batches in random order of any length mix (default: batches of similar-length records, less padding)',
    )
    .option(
      '--i2i-drop <original|guidance>',
      "the edits' condition drop (dimoo train --i2i-drop): guidance also trains the two contexts the edit sampler's guidance uses",
      choiceOpt('--i2i-drop', I2I_DROPS),
      'guidance',
    )
    .option(
      '--image-full-mask <p>',
      'share of answer pictures masked whole (dimoo train --image-full-mask)',
      numOpt('--image-full-mask', { min: 0, max: 1 }),
      0.5,
    )
    .option(
      '--no-curriculum',
      'train only the mixed run (default: then the curriculum: --single-steps on single-object text-to-image, then a weighted mix)',
    )
    .option(
      '--single-steps <n>',
      'curriculum: steps on single-object text-to-image records alone (0: none)',
      intOpt('--single-steps', { min: 0 }),
      0,
    )
    .option(
      '--final-steps <n>',
      'curriculum: steps on every record, text-to-image weighted up (0: none)',
      intOpt('--final-steps', { min: 0 }),
      4400,
    )
    .option(
      '--final-weights <a,b,c,d>',
      'curriculum: repeats per record in the final phase of single-object text-to-image, other text-to-image, edits, questions',
      parsePhaseWeights,
      { ...FINAL_MIX_WEIGHTS },
    )
    .option(
      '--rope-theta <x>',
      "the transformer's RoPE base (default: the official config's 500000)",
      numOpt('--rope-theta', { min: 1 }),
    )
    .option(
      '--save-minutes <m>',
      'save (resumable) about this often',
      numOpt('--save-minutes', { min: 0.01 }),
      5,
    )
    .option(
      '--deadline <time>',
      'also stop the transformer at this date/time (ISO 8601, e.g. 2026-11-30T20:45:00Z)',
    )
    .option('--ship', "copy the result into the package's models/shapes/ (the default model)")
    .action((f: Flags, c: Command) =>
      trainShapes(ctx, f, (k) => c.getOptionValueSource(k) === 'cli'),
    );
}
