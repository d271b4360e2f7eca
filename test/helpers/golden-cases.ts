/* eslint-disable @typescript-eslint/no-explicit-any -- golden case JSON is read loosely; every field used is compared */
/**
 * The golden sampling cases as library calls: one place maps each case's
 * JSON (prompt, sizes, parameters, input token grids) to the `DimooApi` call
 * the original made, and says what the reference produced. The parity tests
 * (CPU and WebGPU) and the bench's quality rows all run cases through this.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type {
  DimooApi,
  EditType,
  ImageResult,
  TokenGrid,
  UnderstandParams,
  UnderstandResult,
} from '../../src/pipelines/types.js';

export const GOLDEN_IMAGE_CASES = [
  't2i_64x48_cfg4',
  't2i_48x80_cfg4',
  't2i_64x48_cfg0',
  'mlcache_t2i_64x48_cfg4',
  'mlcache_t2i_48x80_cfg4',
  'i2i_edit_add',
  'i2i_image_ref_transfer',
  'inpaint_96x64',
  'outpaint_96x64',
] as const;
export const GOLDEN_TEXT_CASES = ['mmu_single_breaks', 'mmu_script_layout'] as const;
export const GOLDEN_SAMPLING_CASES = [...GOLDEN_IMAGE_CASES, ...GOLDEN_TEXT_CASES] as const;
export type GoldenCaseName = (typeof GOLDEN_SAMPLING_CASES)[number];

export interface GoldenOutcome {
  name: GoldenCaseName;
  /** Output tokens: image codes, or answer ids. */
  got: number[];
  want: number[];
  /** Conditional prompt ids and code_start, ours and the reference's. */
  promptIds: number[];
  wantPromptIds: number[];
  codeStart: number;
  wantCodeStart: number;
  /** Understanding: decoded answer, ours and the reference's. */
  text?: string;
  wantText?: string;
  /** Image tasks: the full result (decoded pixels when the checkpoint has a VQ-VAE). */
  image?: ImageResult;
}

interface Grid {
  codes: number[];
  grid_h: number;
  grid_w: number;
}
const tokens = (g: Grid): TokenGrid => ({
  height: g.grid_h * 16,
  width: g.grid_w * 16,
  codes: g.codes,
});
const flat = (v: unknown): number[] => (v as unknown[]).flat(3) as number[];

export function goldenCaseFile(golden: string, file: string): string {
  return path.join(golden, 'cases', 'dimoo-tiny', file);
}

/** Runs one golden case through the library (`useCache` only matters for understanding). */
export async function runGoldenCase(
  api: DimooApi,
  name: GoldenCaseName,
  golden: string,
  opts: { useCache?: UnderstandParams['useCache'] } = {},
): Promise<GoldenOutcome> {
  const g = JSON.parse(fs.readFileSync(goldenCaseFile(golden, `${name}.json`), 'utf8')) as any;
  const p = g.params;
  if (name.startsWith('mmu_')) {
    const r: UnderstandResult = await api.understand({
      question: g.question,
      image: { tokens: tokens(g.image_grid) },
      genLength: p.gen_length,
      blockLength: p.block_length,
      steps: p.steps,
      temperature: p.temperature,
      earlyStop: false,
      scriptLayout: name === 'mmu_script_layout',
      useCache: opts.useCache ?? false,
    });
    return {
      name,
      got: r.ids,
      want: g.answer_ids,
      promptIds: r.promptIds,
      wantPromptIds: g.initial_sequence,
      codeStart: r.codeStart,
      wantCodeStart: g.code_start,
      text: r.text,
      wantText: g.answer_text,
    };
  }
  let r: ImageResult;
  let wantPromptIds: number[] = g.prompt_ids;
  if (name.startsWith('i2i_')) {
    const grids = g.input_image_grids as Grid[];
    r = await api.edit({
      prompt: g.prompt_text,
      editType: g.edit_type as EditType,
      image: { tokens: tokens(grids[0]!) },
      refImage: grids[1] ? { tokens: tokens(grids[1]) } : undefined,
      timesteps: p.timesteps,
      cfgScale: p.cfg_scale,
      cfgImg: p.cfg_img,
      temperature: p.temperature,
    });
    wantPromptIds = g.cond_input_initial;
  } else if (name === 'inpaint_96x64' || name === 'outpaint_96x64') {
    r = await api[name === 'inpaint_96x64' ? 'inpaint' : 'outpaint']({
      prompt: g.prompt_text,
      image: { tokens: tokens(g.input_grid) },
      mask: { kind: 'ratio', hRatio: g.paint.mask_h_ratio, wRatio: g.paint.mask_w_ratio },
      timesteps: p.timesteps,
      cfgScale: p.cfg_scale,
      temperature: p.temperature,
    });
  } else {
    r = await api.generate({
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
  }
  return {
    name,
    got: r.codes,
    want: flat(g.vq_codes),
    promptIds: r.promptIds,
    wantPromptIds,
    codeStart: r.codeStart,
    wantCodeStart: g.code_start,
    image: r,
  };
}
