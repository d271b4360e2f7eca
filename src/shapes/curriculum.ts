/**
 * The shapes model's training curriculum: which records each training phase
 * sees, and how often. Measured (docs/shapes.md, the seventh run): on the
 * full mix the transformer learns the objects' codes and where objects
 * tend to be, but not where a caption puts one (5 000 steps, no effect of the
 * caption's place on its map); a few hundred steps of single-object
 * text-to-image records alone teach that binding. A phase's data is a JSONL
 * written beside the data set's train.jsonl (so its relative picture paths
 * stay valid), each record repeated by its weight.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DimooError } from '../errors.js';
import type { ShapesRecord } from './dataset.js';

/** Repeats per record of each kind (0 leaves the kind out). */
export interface PhaseWeights {
  /** Text-to-image records of one object. */
  t2iSingle: number;
  /** Text-to-image records of two or three objects. */
  t2iMulti: number;
  edit: number;
  mmu: number;
}

export const SINGLE_OBJECT_WEIGHTS: Readonly<PhaseWeights> = Object.freeze({
  t2iSingle: 1,
  t2iMulti: 0,
  edit: 0,
  mmu: 0,
});

/**
 * The last phase: every record, text-to-image ones more often (single objects
 * most: 45% of the phase's records; the eighth run, where binding and the
 * objects' codes rose together, against 3,2,1,1 in the seventh).
 */
export const FINAL_MIX_WEIGHTS: Readonly<PhaseWeights> = Object.freeze({
  t2iSingle: 8,
  t2iMulti: 2,
  edit: 1,
  mmu: 1,
});

const KINDS: ReadonlyArray<keyof PhaseWeights> = ['t2iSingle', 't2iMulti', 'edit', 'mmu'];

export function checkWeights(w: PhaseWeights, what: string): void {
  for (const k of KINDS) {
    const v = w[k];
    if (!Number.isSafeInteger(v) || v < 0 || v > 100)
      throw new DimooError(
        `${what}.${k} must be an integer in [0, 100], got ${String(v)}`,
        'E_PARAM',
      );
  }
  if (KINDS.every((k) => w[k] === 0))
    throw new DimooError(`${what}: every weight is 0, so the phase has no data`, 'E_PARAM');
}

/** The kind of a record for the weights. */
export function recordKind(r: Pick<ShapesRecord, 'task' | 'shapes'>): keyof PhaseWeights {
  if (r.task === 't2i') return r.shapes.scene.objects.length === 1 ? 't2iSingle' : 't2iMulti';
  return r.task;
}

/** File name of a phase's data: the weights in it, so equal weights share one file. */
export function phaseDataName(w: PhaseWeights): string {
  return `train-w${KINDS.map((k) => w[k]).join('-')}.jsonl`;
}

/**
 * Writes `dataDir/phaseDataName(w)` from `dataDir/train.jsonl` (each record
 * `w[kind]` times, in file order; the trainer shuffles). Atomic: written under a temporary name, then renamed. Returns its path and
 * the records written per kind.
 */
export function writePhaseData(
  dataDir: string,
  w: PhaseWeights,
): { file: string; counts: Record<keyof PhaseWeights, number> } {
  checkWeights(w, 'weights');
  const src = path.join(dataDir, 'train.jsonl');
  const file = path.join(dataDir, phaseDataName(w));
  const counts = { t2iSingle: 0, t2iMulti: 0, edit: 0, mmu: 0 };
  const lines = fs.readFileSync(src, 'utf8').split('\n');
  const out: string[] = [];
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    let r: ShapesRecord;
    try {
      r = JSON.parse(line) as ShapesRecord;
    } catch (e) {
      throw new DimooError(`${src}:${i + 1}: not JSON (${(e as Error).message})`, 'E_DATA');
    }
    if (!r.shapes?.scene || !['t2i', 'edit', 'mmu'].includes(r.task))
      throw new DimooError(
        `${src}:${i + 1}: not a shapes record (needs "task" and "shapes.scene")`,
        'E_DATA',
      );
    const k = recordKind(r);
    for (let j = 0; j < w[k]; j++) out.push(line);
    counts[k] += w[k];
  });
  if (out.length === 0)
    throw new DimooError(`${src}: no record for weights ${JSON.stringify(w)}`, 'E_DATA');
  // Rewritten on every call with the same bytes (the trainer checks a resumed run's data hash).
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, out.join('\n') + '\n');
  fs.renameSync(tmp, file);
  return { file, counts };
}
