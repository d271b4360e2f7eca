/**
 * Writes a shapes training set: PNG images, optional token grids (encoded by
 * a checkpoint's VQ-VAE, as `dimoo encode` does), and JSONL records in the
 * original's training item format (`system_prompt`, `user_prompt`,
 * `user_image`, `answer_image`, `answer_text`; see train/train.py) for
 * text-to-image, edit pairs and questions, split into train and held-out by
 * scene (a record is held out when any scene in it is).
 *
 * Image paths in records are relative to the JSONL file's folder (as in
 * `dimoo encode --list`), so the folder can be moved whole. The folder is
 * built under a temporary name and renamed at the end: an interrupted run
 * leaves no half data set under the real name.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DimooError } from '../errors.js';
import { writeImage } from '../image/io.js';
import { PROMPT_TEMPLATES, imageToImagePrompt } from '../pipelines/prompts.js';
import type { RgbImage, TokenGrid } from '../pipelines/types.js';
import { Prng } from '../samplers/prng.js';
import { atomicWriteFileSync } from '../util/atomic-write.js';
import { sampleCaption, sampleEdit, sampleQuestion, type ImageRequest } from './language.js';
import { renderScene } from './render.js';
import { isHeldOut, sampleScene, sceneFacts, type Scene, type SceneFacts } from './world.js';

export const DATASET_VERSION = 1;
export const MANIFEST_FILE = 'dataset.json';

export type RecordTask = 't2i' | 'edit' | 'mmu';

/** One line of train.jsonl / heldout.jsonl. */
export interface ShapesRecord {
  id: string;
  system_prompt: string;
  user_prompt: string;
  /** Token grid file (or PNG when not encoded), relative to the JSONL's folder; "" when none. */
  user_image: string;
  answer_image: string;
  answer_text: string;
  answer_thinking: string;
  task: RecordTask;
  /** Edits: the original's edit_type. */
  edit_type?: string;
  /** Questions: color, shape, count, background, describe. */
  question_type?: string;
  /** What the checker needs: the facts of the images, and what a caption asked for. */
  shapes: {
    scene: SceneFacts;
    after?: SceneFacts;
    request?: ImageRequest;
    edit?: string;
  };
}

export interface DatasetOptions {
  /** Output folder (must not exist, or be empty). */
  out: string;
  /** Number of scenes; each gives one text-to-image record, one edit and `questions` questions. */
  count: number;
  seed: number;
  /** Share of scenes held out (by their facts; default 0.1). */
  holdout?: number;
  questions?: number;
  /** Encodes an image into a token grid (a checkpoint's VQ-VAE); without it records point at the PNGs. */
  encode?: (img: RgbImage) => Promise<TokenGrid>;
  /** Names the encoder in the manifest. */
  encodedWith?: string;
  onProgress?: (done: number, total: number) => void;
  signal?: AbortSignal;
}

export interface DatasetSummary {
  out: string;
  scenes: number;
  heldOutScenes: number;
  records: Record<'train' | 'heldout', Record<RecordTask, number>>;
  encoded: boolean;
}

function checkOptions(o: DatasetOptions): void {
  if (!Number.isSafeInteger(o.count) || o.count < 1)
    throw new DimooError(`count must be a positive integer, got ${o.count}`, 'E_PARAM');
  if (!Number.isSafeInteger(o.seed) || o.seed < 0)
    throw new DimooError(`seed must be a non-negative integer, got ${o.seed}`, 'E_PARAM');
  const h = o.holdout ?? 0.1;
  if (!(h >= 0 && h <= 1)) throw new DimooError(`holdout must be in [0, 1], got ${h}`, 'E_PARAM');
  const q = o.questions ?? 2;
  if (!Number.isSafeInteger(q) || q < 0 || q > 10)
    throw new DimooError(`questions must be an integer 0..10, got ${q}`, 'E_PARAM');
  if (
    fs.existsSync(o.out) &&
    (!fs.statSync(o.out).isDirectory() || fs.readdirSync(o.out).length > 0)
  ) {
    throw new DimooError(
      `${o.out} already exists and is not an empty folder; choose a new --out`,
      'E_PARAM',
    );
  }
}

/** The records of one scene (pure: depends on seed and index only). */
export function sceneRecords(
  seed: number,
  index: number,
  questions: number,
): {
  scene: Scene;
  after: Scene;
  records: Array<
    Omit<ShapesRecord, 'user_image' | 'answer_image'> & {
      userScene: 'scene' | 'after' | null;
      answerScene: 'scene' | 'after' | null;
    }
  >;
} {
  const root = new Prng(seed, index);
  const scene = sampleScene(root.fork(1));
  const facts = sceneFacts(scene);
  const caption = sampleCaption(root.fork(2), facts);
  const edit = sampleEdit(root.fork(3), scene);
  if (!edit) throw new DimooError(`scene ${index}: no edit applies`, 'E_STATE');
  const after = sceneFacts(edit.after);
  const id = `s${String(index).padStart(6, '0')}`;
  const base = { answer_text: '', answer_thinking: '' };
  const records: ReturnType<typeof sceneRecords>['records'] = [
    {
      ...base,
      id: `${id}-t2i`,
      task: 't2i',
      system_prompt: PROMPT_TEMPLATES.image_generation,
      user_prompt: caption.text,
      userScene: null,
      answerScene: 'scene',
      shapes: { scene: facts, request: caption.request },
    },
    {
      ...base,
      id: `${id}-edit`,
      task: 'edit',
      edit_type: edit.editType,
      system_prompt: imageToImagePrompt(edit.prompt, edit.editType).systemPrompt,
      user_prompt: edit.prompt,
      userScene: 'scene',
      answerScene: 'after',
      shapes: { scene: facts, after, edit: edit.kind },
    },
  ];
  for (let k = 0; k < questions; k++) {
    const q = sampleQuestion(root.fork(4, k), facts);
    records.push({
      ...base,
      id: `${id}-q${k}`,
      task: 'mmu',
      question_type: q.type,
      system_prompt: PROMPT_TEMPLATES.text_understanding,
      user_prompt: q.question,
      answer_text: q.answer,
      userScene: 'scene',
      answerScene: null,
      shapes: { scene: facts },
    });
  }
  return { scene, after: edit.after, records };
}

function emptyCounts(): Record<RecordTask, number> {
  return { t2i: 0, edit: 0, mmu: 0 };
}

/** Generates the data set into o.out (see the module comment). */
export async function generateDataset(o: DatasetOptions): Promise<DatasetSummary> {
  checkOptions(o);
  const holdout = o.holdout ?? 0.1;
  const questions = o.questions ?? 2;
  const out = path.resolve(o.out);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  const tmp = fs.mkdtempSync(path.join(path.dirname(out), `.${path.basename(out)}.tmp-`));
  let done = false;
  try {
    fs.mkdirSync(path.join(tmp, 'images'));
    if (o.encode) fs.mkdirSync(path.join(tmp, 'tokens'));
    const lines: Record<'train' | 'heldout', string[]> = { train: [], heldout: [] };
    const records = { train: emptyCounts(), heldout: emptyCounts() };
    let heldOutScenes = 0;
    for (let i = 0; i < o.count; i++) {
      if (o.signal?.aborted) throw new DimooError('cancelled', 'E_CANCELLED');
      const { scene, after, records: recs } = sceneRecords(o.seed, i, questions);
      const name = `s${String(i).padStart(6, '0')}`;
      const files: Record<'scene' | 'after', string> = { scene: '', after: '' };
      for (const [which, s] of [
        ['scene', scene],
        ['after', after],
      ] as const) {
        const img = renderScene(s);
        const png = `images/${name}${which === 'after' ? '-edit' : ''}.png`;
        await writeImage(path.join(tmp, png), img);
        files[which] = png;
        if (o.encode) {
          const grid = await o.encode({ data: img.data, width: img.width, height: img.height });
          const tok = `tokens/${name}${which === 'after' ? '-edit' : ''}.json`;
          atomicWriteFileSync(path.join(tmp, tok), JSON.stringify(grid) + '\n', { fsync: false });
          files[which] = tok;
        }
      }
      const sceneHeld = isHeldOut(scene, holdout);
      if (sceneHeld) heldOutScenes++;
      for (const r of recs) {
        const {
          userScene,
          answerScene,
          id,
          system_prompt,
          user_prompt,
          answer_text,
          answer_thinking,
          ...rest
        } = r;
        // The original's fields first, in its order; ours after.
        const rec: ShapesRecord = {
          id,
          system_prompt,
          user_prompt,
          user_image: userScene ? files[userScene] : '',
          answer_image: answerScene ? files[answerScene] : '',
          answer_text,
          answer_thinking,
          ...rest,
        };
        // Held out when any scene it shows is: training never sees a held-out picture.
        const held =
          sceneHeld ||
          ((userScene === 'after' || answerScene === 'after') && isHeldOut(after, holdout));
        const split = held ? 'heldout' : 'train';
        lines[split].push(JSON.stringify(rec));
        records[split][rec.task]++;
      }
      o.onProgress?.(i + 1, o.count);
      // Let a Ctrl-C handler run between scenes.
      if (i % 64 === 63) await new Promise<void>((r) => setImmediate(r));
    }
    for (const split of ['train', 'heldout'] as const) {
      fs.writeFileSync(
        path.join(tmp, `${split}.jsonl`),
        lines[split].map((l) => l + '\n').join(''),
      );
    }
    const summary: DatasetSummary = {
      out,
      scenes: o.count,
      heldOutScenes,
      records,
      encoded: o.encode !== undefined,
    };
    const manifest = {
      world: 'shapes',
      version: DATASET_VERSION,
      seed: o.seed,
      count: o.count,
      holdout,
      questions,
      canvas: 128,
      files: { train: 'train.jsonl', heldout: 'heldout.jsonl' },
      images: o.encode ? 'tokens' : 'png',
      encodedWith: o.encodedWith ?? null,
      records,
      heldOutScenes,
    };
    fs.writeFileSync(path.join(tmp, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
    if (fs.existsSync(out)) fs.rmdirSync(out);
    fs.renameSync(tmp, out);
    done = true;
    return summary;
  } finally {
    if (!done) fs.rmSync(tmp, { recursive: true, force: true });
  }
}
