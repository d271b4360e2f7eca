/* eslint-disable @typescript-eslint/no-explicit-any -- golden case JSON is read loosely here */
/**
 * Quality of a model (e.g. a quantized copy of the golden checkpoint) on the
 * golden cases: logits against the reference, and token agreement of every
 * golden sampling case run through the library.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { SafetensorsFile } from '../src/models/safetensors.js';
import type { Transformer } from '../src/models/transformer.js';
import type { Dimoo } from '../src/pipelines/dimoo.js';
import type { EditType, TokenGrid } from '../src/pipelines/types.js';

export function defaultGoldenDir(): string {
  return process.env.DIMOO_GOLDEN ?? path.resolve(process.cwd(), '../shared/golden');
}

function caseFile(golden: string, name: string): string {
  return path.join(golden, 'cases', 'dimoo-tiny', name);
}

function readCase<T>(golden: string, name: string): T {
  return JSON.parse(fs.readFileSync(caseFile(golden, name), 'utf8')) as T;
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

export async function goldenForwardQuality(model: Transformer, golden = defaultGoldenDir()): Promise<ForwardQuality> {
  const fj = readCase<{ sequences: Record<string, { input_ids: number[] }> }>(golden, 'forward.json');
  const ref = SafetensorsFile.open(caseFile(golden, 'forward.safetensors'));
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
  return { logitsRelL2: Math.sqrt(num / den), argmaxAgreement: agree / counted, positions: counted };
}

export interface CaseAgreement {
  name: string;
  /** Share of output tokens equal to the reference's. */
  agreement: number;
  tokens: number;
}

interface Grid {
  codes: number[];
  grid_h: number;
  grid_w: number;
}
const tokens = (g: Grid): TokenGrid => ({ height: g.grid_h * 16, width: g.grid_w * 16, codes: g.codes });
const flat = (v: unknown): number[] => (v as unknown[]).flat(3) as number[];

function share(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = Math.max(a.length, b.length);
  let same = 0;
  for (let i = 0; i < n; i++) if (a[i] === b[i]) same++;
  return n === 0 ? 1 : same / n;
}

/** Runs every golden sampling case (tokens in, tokens out) and compares with the reference. */
export async function goldenCaseAgreement(dimoo: Dimoo, golden = defaultGoldenDir()): Promise<CaseAgreement[]> {
  const out: CaseAgreement[] = [];
  for (const name of ['t2i_64x48_cfg4', 't2i_48x80_cfg4', 't2i_64x48_cfg0', 'mlcache_t2i_64x48_cfg4', 'mlcache_t2i_48x80_cfg4']) {
    const g = readCase<any>(golden, `${name}.json`);
    const p = g.params;
    const res = await dimoo.generate({
      prompt: g.prompt_text,
      width: g.width,
      height: g.height,
      timesteps: p.timesteps,
      cfgScale: p.cfg_scale,
      temperature: p.temperature,
      useCache: p.use_cache,
      cacheRatio: p.cache_ratio,
      warmupRatio: p.warmup_ratio,
      refreshInterval: p.refresh_interval,
    });
    const want = flat(g.vq_codes);
    out.push({ name, agreement: share(res.codes, want), tokens: want.length });
  }
  for (const name of ['i2i_edit_add', 'i2i_image_ref_transfer']) {
    const g = readCase<any>(golden, `${name}.json`);
    const p = g.params;
    const grids = g.input_image_grids as Grid[];
    const res = await dimoo.edit({
      prompt: g.prompt_text,
      editType: g.edit_type as EditType,
      image: { tokens: tokens(grids[0]!) },
      refImage: grids[1] ? { tokens: tokens(grids[1]) } : undefined,
      timesteps: p.timesteps,
      cfgScale: p.cfg_scale,
      cfgImg: p.cfg_img,
      temperature: p.temperature,
    });
    const want = flat(g.vq_codes);
    out.push({ name, agreement: share(res.codes, want), tokens: want.length });
  }
  for (const [name, task] of [
    ['inpaint_96x64', 'inpaint'],
    ['outpaint_96x64', 'outpaint'],
  ] as const) {
    const g = readCase<any>(golden, `${name}.json`);
    const p = g.params;
    const res = await dimoo[task]({
      prompt: g.prompt_text,
      image: { tokens: tokens(g.input_grid) },
      mask: { kind: 'ratio', hRatio: g.paint.mask_h_ratio, wRatio: g.paint.mask_w_ratio },
      timesteps: p.timesteps,
      cfgScale: p.cfg_scale,
      temperature: p.temperature,
    });
    const want = flat(g.vq_codes);
    out.push({ name, agreement: share(res.codes, want), tokens: want.length });
  }
  out.push(...(await goldenUnderstandingAgreement(dimoo, golden, false)));
  return out;
}

/** The golden understanding cases, with or without the dual cache, against the reference answers. */
export async function goldenUnderstandingAgreement(dimoo: Dimoo, golden = defaultGoldenDir(), useCache = false): Promise<CaseAgreement[]> {
  const out: CaseAgreement[] = [];
  for (const name of ['mmu_single_breaks', 'mmu_script_layout']) {
    const g = readCase<any>(golden, `${name}.json`);
    const p = g.params;
    const res = await dimoo.understand({
      question: g.question,
      image: { tokens: tokens(g.image_grid) },
      genLength: p.gen_length,
      blockLength: p.block_length,
      steps: p.steps,
      temperature: p.temperature,
      earlyStop: false,
      scriptLayout: name === 'mmu_script_layout',
      useCache,
    });
    const want = g.answer_ids as number[];
    out.push({ name, agreement: share(res.ids, want), tokens: want.length });
  }
  return out;
}
