/**
 * `Trainer`: fine-tuning as a library. It opens the checkpoint, reads and
 * checks the whole data set, builds the training engine (full fine-tuning or
 * LoRA/QLoRA), optionally resumes a saved run, and then trains step by step
 * (`trainStep`) or to the end (`run`, with an AbortSignal honoured between
 * steps and a callback per step). `save(dir)` writes a complete, resumable
 * folder (see save.ts).
 *
 *   const t = await Trainer.create({ model, data: 'train.jsonl', steps: 100, lr: 1e-4 });
 *   await t.run({ signal, onStep: (r) => console.log(r.step, r.loss) });
 *   await t.save('out/checkpoint-100');
 *   await t.dispose();
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DimooError, isDimooError } from '../errors.js';
import { openCheckpoint } from '../checkpoint/folder.js';
import type { Checkpoint } from '../checkpoint/layout.js';
import { resolveSpecialTokens, type SpecialTokens } from '../checkpoint/special-tokens.js';
import { TextTokenizer } from '../models/tokenizer.js';
import { loadVqConfig } from '../checkpoint/vq-config.js';
import { createTrainEngine, type TrainEngine } from './engine.js';
import {
  loadTrainingData,
  type DataContext,
  type PixelGrid,
  type Skipped,
  type TrainRecord,
} from './data.js';
import { lossCurveSvg } from './loss-curve.js';
import { nonZeroRows, parseVocabRows, type VocabRanges } from './vocab-rows.js';
import { readTensorFloat32 } from '../checkpoint/safetensors.js';
import { ANSWER_BLOCK } from './recipe.js';
import {
  TRAIN_DEFAULTS,
  TrainLoop,
  planRun,
  type RunOptions,
  type StepReport,
  type TrainerConfig,
} from './loop.js';
import {
  LORA_MODULES,
  readResumeState,
  writeRunFolder,
  type LoraSettings,
  type SaveDtype,
  type TrainerStateFile,
} from './save.js';

export interface TrainOptions extends Partial<TrainerConfig> {
  /** Base checkpoint folder (official layout, or a `dimoo quantize` folder with `lora`). */
  model: string;
  /** JSONL file(s). */
  data: string | readonly string[];
  device?: 'cpu' | 'webgpu';
  threads?: number;
  /** LoRA adapters instead of full fine-tuning. */
  lora?: LoraSettings;
  /** Longest accepted sequence (default 4096). */
  maxLen?: number;
  /** Skip (and count) bad data lines instead of stopping. */
  skipBad?: boolean;
  /** A folder saved by a previous run: continue it. */
  resume?: string;
  /** Weights dtype of saved checkpoints (default bf16, the official layout). */
  saveDtype?: SaveDtype;
  /**
   * How an image field becomes a grid. Default: an inline {"height","width","codes"}
   * object or a token-grid JSON file (as `dimoo encode` writes); the CLI adds
   * image files encoded with the checkpoint's VQ-VAE.
   */
  resolveImage?: DataContext['resolveImage'];
  /** Called while the data is read (line done / lines total). */
  onDataLine?: (done: number, total: number) => void;
}

export const DEFAULT_MAX_LEN = 4096;

/** Reads a token-grid file or takes an inline grid; shape checks come later. */
export async function defaultResolveImage(
  value: unknown,
  where: string,
  baseDir: string,
): Promise<PixelGrid> {
  let v = value;
  if (typeof value === 'string') {
    const file = path.resolve(baseDir, value);
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new DimooError(
        `${file}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`,
        'E_TOKENS',
      );
    }
    try {
      v = JSON.parse(text);
    } catch {
      throw new DimooError(
        `${file} is not a token-grid JSON file (image files need the VQ-VAE: use \`dimoo train\` or \`dimoo encode\`)`,
        'E_TOKENS',
      );
    }
  }
  const g = v as Partial<PixelGrid> | null;
  if (
    typeof g !== 'object' ||
    g === null ||
    !Number.isSafeInteger(g.height) ||
    !Number.isSafeInteger(g.width) ||
    !Array.isArray(g.codes)
  ) {
    throw new DimooError(
      `${where}: expected a token grid {"height","width","codes"} (pixel sizes)`,
      'E_TOKENS',
    );
  }
  return g as PixelGrid;
}

function fingerprint(files: readonly string[]): string {
  const h = createHash('sha256');
  for (const f of files) h.update(fs.readFileSync(f));
  return h.digest('hex');
}

/** The --vocab-rows setting as ranges (undefined: every row). */
function resolveVocabRows(spec: string, ckpt: Checkpoint): VocabRanges | undefined {
  if (spec === 'all') return undefined;
  if (spec !== 'auto') return parseVocabRows(spec);
  const name = 'model.transformer.wte.weight';
  const info = ckpt.weights.get(name);
  if (!info) throw new DimooError(`${ckpt.dir}: weight ${name} is missing`, 'E_CHECKPOINT');
  return nonZeroRows(readTensorFloat32(info), ckpt.config.embeddingSize, ckpt.config.dModel);
}

/** Settings that must match the saved run for a bit-identical continuation. */
const FIXED_ON_RESUME: ReadonlyArray<keyof TrainerConfig> = [
  'batchSize',
  'gradAccum',
  'seed',
  'shuffle',
  'groupByLength',
  'maskPadding',
  'answerBlock',
  'i2iDrop',
  'imageFullMask',
  'vocabRows',
];

export class Trainer {
  private history: TrainerStateFile['history'];

  private constructor(
    readonly checkpoint: Checkpoint,
    readonly tokens: SpecialTokens,
    private readonly engine: TrainEngine,
    private readonly loop: TrainLoop,
    readonly records: readonly TrainRecord[],
    /** Bad data lines skipped (with skipBad). */
    readonly skipped: readonly Skipped[],
    private readonly dataInfo: TrainerStateFile['data'],
    readonly lora: LoraSettings | undefined,
    readonly saveDtype: SaveDtype,
    history: TrainerStateFile['history'],
  ) {
    this.history = history;
  }

  static async create(opts: TrainOptions): Promise<Trainer> {
    const saved = opts.resume !== undefined ? readResumeState(opts.resume) : undefined;
    const ckpt = openCheckpoint(opts.model);
    const vq = ckpt.vqvaeDir ? loadVqConfig(ckpt.vqvaeDir) : undefined;
    const tokenizer = TextTokenizer.fromFile(ckpt.tokenizerPath);
    const tokens = resolveSpecialTokens(
      tokenizer,
      ckpt.config,
      vq ? { codebookSize: vq.numVqEmbeddings } : {},
    );

    const explicit: Partial<TrainerConfig> = {};
    for (const k of Object.keys(TRAIN_DEFAULTS) as Array<keyof TrainerConfig>) {
      if (opts[k] !== undefined) (explicit as Record<string, unknown>)[k] = opts[k];
    }
    if (opts.steps !== undefined) explicit.steps = opts.steps;
    let config: TrainerConfig;
    let lora = opts.lora;
    if (saved) {
      const s = saved.trainer;
      for (const k of FIXED_ON_RESUME) {
        const was = (s.config as Partial<TrainerConfig>)[k] ?? TRAIN_DEFAULTS[k];
        if (explicit[k] !== undefined && explicit[k] !== was) {
          throw new DimooError(
            `--resume ${opts.resume}: the run was saved with ${k} = ${String(was)}; continuing with ${String(explicit[k])} would not be the same run`,
            'E_RESUME',
          );
        }
      }
      // Runs saved before a setting existed ran with its default.
      const old = s.config as Partial<TrainerConfig>;
      config = {
        ...s.config,
        answerBlock: old.answerBlock ?? TRAIN_DEFAULTS.answerBlock,
        vocabRows: old.vocabRows ?? TRAIN_DEFAULTS.vocabRows,
        groupByLength: old.groupByLength ?? TRAIN_DEFAULTS.groupByLength,
        i2iDrop: old.i2iDrop ?? TRAIN_DEFAULTS.i2iDrop,
        imageFullMask: old.imageFullMask ?? TRAIN_DEFAULTS.imageFullMask,
        ...explicit,
      };
      if (explicit.steps === undefined && explicit.epochs !== undefined) delete config.steps;
      if (lora && JSON.stringify(lora) !== JSON.stringify(s.lora)) {
        throw new DimooError(
          `--resume ${opts.resume}: the run was saved with LoRA ${JSON.stringify(s.lora ?? null)}, not ${JSON.stringify(lora)}`,
          'E_RESUME',
        );
      }
      lora = s.lora;
    } else {
      config = { ...TRAIN_DEFAULTS, ...explicit };
      if (explicit.steps !== undefined && explicit.epochs === undefined) delete config.epochs;
    }
    if (lora) {
      for (const t of lora.targets) {
        if (!(t in LORA_MODULES)) {
          throw new DimooError(
            `unknown LoRA target "${t}" (known: ${Object.keys(LORA_MODULES).join(', ')})`,
            'E_PARAM',
          );
        }
      }
    }

    // Checked before the data is read; the engine checks the rows against the weights.
    const vocabRows = resolveVocabRows(config.vocabRows, ckpt);
    const files = typeof opts.data === 'string' ? [opts.data] : [...opts.data];
    const maxLen = opts.maxLen ?? DEFAULT_MAX_LEN;
    if (!Number.isSafeInteger(maxLen) || maxLen < 1) {
      throw new DimooError(`--max-len must be a positive integer, got ${maxLen}`, 'E_PARAM');
    }
    const { records, skipped } = await loadTrainingData(
      files,
      {
        tokens,
        vocabSize: ckpt.config.embeddingSize,
        vqScale: vq?.scaleFactor ?? 16,
        tokenizer,
        maxLen,
        answerBlock: config.answerBlock,
        resolveImage: opts.resolveImage ?? defaultResolveImage,
      },
      { skipBad: opts.skipBad, onLine: opts.onDataLine },
    );
    const dataInfo = {
      files: files.map((f) => path.resolve(f)),
      sha256: fingerprint(files),
      records: records.length,
    };
    if (saved && saved.trainer.data.sha256 !== dataInfo.sha256) {
      throw new DimooError(
        `--resume ${opts.resume}: the data differs from the saved run's (${saved.trainer.data.files.join(', ')}); its position would be meaningless`,
        'E_RESUME',
      );
    }

    // Check the loop's settings before building the engine (seconds to minutes).
    planRun(records.length, config, saved?.trainer.step ?? 0);
    const engine = await createTrainEngine({
      model: ckpt.dir,
      device: opts.device,
      threads: opts.threads,
      lora,
      maskPadding: config.maskPadding,
      seed: config.seed,
      vocabRows,
    });
    try {
      if (saved) engine.importState(saved.engine);
    } catch (e) {
      await engine.dispose();
      if (isDimooError(e))
        throw new DimooError(`--resume ${opts.resume}: ${e.message}`, 'E_RESUME');
      throw e;
    }
    const loop = new TrainLoop(engine, { records, tokens }, config, {
      startStep: saved?.trainer.step ?? 0,
    });
    return new Trainer(
      ckpt,
      tokens,
      engine,
      loop,
      records,
      skipped,
      dataInfo,
      lora,
      opts.saveDtype ?? 'bf16',
      saved?.trainer.history ?? [],
    );
  }

  get config(): TrainerConfig {
    return this.loop.config;
  }

  get totalSteps(): number {
    return this.loop.totalSteps;
  }

  /** Optimiser steps taken (including those of a resumed run). */
  get step(): number {
    return this.loop.step;
  }

  get done(): boolean {
    return this.loop.done;
  }

  /** Loss, grad norm and lr of every step so far. */
  get losses(): TrainerStateFile['history'] {
    return this.history.slice();
  }

  private record(r: StepReport): void {
    this.history.push({ step: r.step, loss: r.loss, gradNorm: r.gradNorm, lr: r.lr });
  }

  async trainStep(): Promise<StepReport> {
    const r = await this.loop.trainStep();
    this.record(r);
    return r;
  }

  async run(opts: RunOptions = {}): Promise<{ reports: StepReport[]; aborted: boolean }> {
    return this.loop.run({
      signal: opts.signal,
      onStep: async (r) => {
        this.record(r);
        await opts.onStep?.(r);
      },
    });
  }

  /** The trained tensors (checkpoint names, or PEFT keys with LoRA). */
  parameters(): Map<string, { shape: number[]; data: Float32Array }> {
    return this.engine.parameters();
  }

  /** Values the optimiser updates (fewer than parameters() holds with --vocab-rows). */
  get trainedCount(): number {
    return this.engine.trainedCount;
  }

  /** The loss curve so far as SVG. */
  async lossCurve(): Promise<string> {
    return lossCurveSvg(this.history, `loss (${this.step}/${this.totalSteps} steps)`);
  }

  /** Writes a complete, resumable folder at `dir` (atomically). */
  async save(
    dir: string,
    opts: { dtype?: SaveDtype; maxShardBytes?: number } = {},
  ): Promise<string> {
    const trainer: TrainerStateFile = {
      format: 'dimoo-trainer-state',
      version: 1,
      step: this.step,
      totalSteps: this.totalSteps,
      baseModel: this.checkpoint.dir,
      ...(this.lora ? { lora: this.lora } : {}),
      config: this.config,
      data: this.dataInfo,
      history: this.history,
      position: {
        epoch: Math.floor((this.step * this.config.gradAccum) / this.loop.batchesPerEpoch),
        microBatch: (this.step * this.config.gradAccum) % this.loop.batchesPerEpoch,
        batchesPerEpoch: this.loop.batchesPerEpoch,
      },
      rng: {
        generator: 'xoshiro128** (samplers/prng.ts)',
        seed: this.config.seed,
        shuffle: this.config.groupByLength
          ? 'epoch e: stream (seed, 1, e), then length groups from stream (seed, 3, e)'
          : 'epoch e: stream (seed, 1, e)',
        masks: 'record i in epoch e: stream (seed, 2, e, i)',
      },
    };
    writeRunFolder(dir, {
      base: this.checkpoint,
      params: this.engine.parameters(),
      lora: this.lora,
      dtype: opts.dtype ?? this.saveDtype,
      state: { trainer, engine: this.engine.exportState() },
      curveSvg: this.history.length > 0 ? await this.lossCurve() : undefined,
      maxShardBytes: opts.maxShardBytes,
      ...(this.config.answerBlock !== ANSWER_BLOCK && {
        // Generate answers of the length the model learned to fill.
        generationDefaults: {
          understanding: {
            genLength: this.config.answerBlock,
            blockLength: this.config.answerBlock,
            steps: this.config.answerBlock,
          },
        },
      }),
    });
    return path.resolve(dir);
  }

  async dispose(): Promise<void> {
    await this.engine.dispose();
  }
}
