/**
 * Quality of a model (e.g. a quantized copy of the golden checkpoint) on the
 * golden cases: logits against the reference, and token agreement of every
 * golden sampling case run through the library.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SafetensorsFile } from '../src/checkpoint/safetensors.js';
import type { Transformer } from '../src/models/transformer.js';
import type { Dimoo } from '../src/pipelines/dimoo.js';
import type { UnderstandParams } from '../src/pipelines/types.js';
import {
  GOLDEN_SAMPLING_CASES,
  GOLDEN_TEXT_CASES,
  goldenCaseFile,
  runGoldenCase,
} from '../test/helpers/golden-cases.js';

export function defaultGoldenDir(): string {
  return process.env.DIMOO_GOLDEN ?? path.resolve(process.cwd(), '../shared/golden');
}

function readCase<T>(golden: string, name: string): T {
  return JSON.parse(fs.readFileSync(goldenCaseFile(golden, name), 'utf8')) as T;
}

/** sqrt(sum (a-b)^2 / sum b^2) */
export function relL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    const d = a[i]! - b[i]!;
    num += d * d;
    den += b[i]! * b[i]!;
  }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

export interface ForwardQuality {
  /** Relative L2 of the reference's full logit rows, all sequences together. */
  logitsRelL2: number;
  /** Share of positions whose argmax equals the reference's (where the reference's top-2 gap > 1e-3). */
  argmaxAgreement: number;
  positions: number;
}

export async function goldenForwardQuality(
  model: Transformer,
  golden = defaultGoldenDir(),
): Promise<ForwardQuality> {
  const fj = readCase<{ sequences: Record<string, { input_ids: number[] }> }>(
    golden,
    'forward.json',
  );
  const ref = SafetensorsFile.open(goldenCaseFile(golden, 'forward.safetensors'));
  const V = model.config.embeddingSize;
  let num = 0;
  let den = 0;
  let agree = 0;
  let counted = 0;
  for (const [name, seq] of Object.entries(fj.sequences)) {
    const L = seq.input_ids.length;
    const all = Array.from({ length: L }, (_, i) => i);
    const logits = (await model.forward({ ids: seq.input_ids, logitRows: all })).logits!;
    const full = ref.readFloat32(`${name}.full_rows`);
    const rows = Array.from(ref.readInt64(`${name}.full_rows_index`), Number);
    rows.forEach((row, k) => {
      for (let j = 0; j < V; j++) {
        const d = logits[row * V + j]! - full[k * V + j]!;
        num += d * d;
        den += full[k * V + j]! ** 2;
      }
    });
    const argmax = Array.from(ref.readInt64(`${name}.argmax`), Number);
    const gap = ref.readFloat32(`${name}.top1_gap`);
    for (let i = 0; i < L; i++) {
      if (!(gap[i]! > 1e-3)) continue;
      let best = 0;
      for (let j = 1; j < V; j++) if (logits[i * V + j]! > logits[i * V + best]!) best = j;
      counted++;
      if (best === argmax[i]) agree++;
    }
  }
  return {
    logitsRelL2: Math.sqrt(num / den),
    argmaxAgreement: agree / counted,
    positions: counted,
  };
}

export interface CaseAgreement {
  name: string;
  /** Share of output tokens equal to the reference's. */
  agreement: number;
  tokens: number;
}

function share(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = Math.max(a.length, b.length);
  let same = 0;
  for (let i = 0; i < n; i++) if (a[i] === b[i]) same++;
  return n === 0 ? 1 : same / n;
}

/** Runs every golden sampling case (tokens in, tokens out) and compares with the reference. */
export async function goldenCaseAgreement(
  dimoo: Dimoo,
  golden = defaultGoldenDir(),
): Promise<CaseAgreement[]> {
  const out: CaseAgreement[] = [];
  for (const name of GOLDEN_SAMPLING_CASES) {
    const r = await runGoldenCase(dimoo, name, golden);
    out.push({ name, agreement: share(r.got, r.want), tokens: r.want.length });
  }
  return out;
}

/** The golden understanding cases, with or without the dual cache, against the reference answers. */
export async function goldenUnderstandingAgreement(
  dimoo: Dimoo,
  golden = defaultGoldenDir(),
  useCache: UnderstandParams['useCache'] = false,
): Promise<CaseAgreement[]> {
  const out: CaseAgreement[] = [];
  for (const name of GOLDEN_TEXT_CASES) {
    const r = await runGoldenCase(dimoo, name, golden, { useCache });
    out.push({ name, agreement: share(r.got, r.want), tokens: r.want.length });
  }
  return out;
}
