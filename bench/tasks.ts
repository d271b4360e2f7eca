/**
 * The bench's measurements. Each task runs in its own child process (see
 * child.ts) so that peak RSS and load time belong to one configuration.
 */
import { taskVq } from './vq.js';
import { taskTrainStep } from './train.js';
import * as os from 'node:os';
import { Dimoo } from '../src/pipelines/dimoo.js';
import { runImageJob, type ImageJob, type StepInspection } from '../src/pipelines/image-engine.js';
import { textToImagePrompt } from '../src/pipelines/prompts.js';
import type { UnderstandParams } from '../src/pipelines/types.js';
import { guideTextToImage } from '../src/samplers/guidance.js';
import { MASKED } from '../src/samplers/maskgit.js';
import { DEFAULT_ML_CACHE } from '../src/samplers/mlcache.js';
import type { ForwardRequest, Transformer } from '../src/models/transformer.js';
import { measureGemm, measureGemmSet, type GemmKind, type GemmResult } from './gemm.js';
import { passFlops } from './flops.js';
import {
  defaultGoldenDir,
  goldenCaseAgreement,
  goldenForwardQuality,
  goldenUnderstandingAgreement,
  relL2,
} from './quality.js';

export const PROMPT =
  'A photo of a red fox sitting in fresh snow at sunrise, soft light, high detail.';

export interface Common {
  /** Peak resident set of the child, GB (VmHWM: file-backed mapped pages included). */
  peakRssGb: number;
  loadavg: number;
}

function common(): Common {
  return { peakRssGb: (process.resourceUsage().maxRSS * 1024) / 1e9, loadavg: os.loadavg()[0]! };
}

/** Counts time and FLOPs of every forward call. */
export class ForwardMeter {
  ms = 0;
  flops = 0;
  calls = 0;
  readonly original: Transformer['forward'];

  constructor(readonly model: Transformer) {
    this.original = model.forward.bind(model);
    model.forward = async <R extends ForwardRequest>(req: R) => {
      const t = performance.now();
      const r = await this.original(req);
      this.ms += performance.now() - t;
      this.calls++;
      const P = req.ids.length;
      const rowmax = req.rowmaxRows ?? [];
      const image = req.imageRows ?? [];
      const headRows = rowmax.length
        ? new Set([...Array.from(rowmax), ...Array.from(image)]).size
        : image.length;
      this.flops += passFlops(model.config, {
        P,
        S: req.cache ? req.cache.slots : P,
        imageRows: headRows,
        textRows: req.logitRows?.length ?? 0,
      });
      return r;
    };
  }

  snapshot(): { ms: number; flops: number } {
    return { ms: this.ms, flops: this.flops };
  }
}

async function loadDimoo(dir: string, threads: number): Promise<{ d: Dimoo; loadMs: number }> {
  const t = performance.now();
  const d = await Dimoo.load(dir, { threads });
  return { d, loadMs: performance.now() - t };
}

interface T2iOptions {
  size: number;
  timesteps?: number;
  useCache?: boolean;
  temperature?: number;
  seed?: number;
  cfg?: number;
  inspect?: ImageJob['inspect'];
  /** Stop after this many steps. */
  maxSteps?: number;
  onStep?: (step: number, ms: number) => void;
}

/** A text-to-image job exactly as Dimoo.generate builds it. */
async function t2iJob(
  d: Dimoo,
  o: T2iOptions,
): Promise<{ job: ImageJob; condLen: number; uncondLen: number }> {
  const texts = textToImagePrompt(PROMPT);
  const condIds = await d.tokenizer.encode(texts.prompt);
  const uncondIds = await d.tokenizer.encode(texts.uncondPrompt);
  const g = o.size / 16;
  const cfg = o.cfg ?? 4;
  const job: ImageJob = {
    task: 'generate',
    condPrefix: condIds,
    uncondPrefixes: [uncondIds],
    guide: (c, u) => guideTextToImage(c, u[0]!, cfg),
    cells: new Int32Array(g * g).fill(MASKED),
    gridH: g,
    gridW: g,
    sampling: {
      timesteps: o.timesteps ?? 64,
      temperature: o.temperature ?? 1,
      seed: o.seed ?? 0,
      useCache: o.useCache ?? false,
      ...DEFAULT_ML_CACHE,
    },
    inspect: o.inspect,
  };
  const tail = 2 + g * (g + 1) + 2;
  return { job, condLen: condIds.length + tail, uncondLen: uncondIds.length + tail };
}

async function runT2i(d: Dimoo, o: T2iOptions): Promise<{ codes?: Int32Array; stepMs: number[] }> {
  const { job } = await t2iJob(d, o);
  const ac = new AbortController();
  const stepMs: number[] = [];
  try {
    const r = await runImageJob({ model: d.model, special: d.special }, job, {
      signal: ac.signal,
      onProgress: (e) => {
        stepMs.push(e.ms);
        o.onStep?.(e.step - 1, e.ms);
        if (o.maxSteps !== undefined && stepMs.length >= o.maxSteps) ac.abort();
      },
    });
    return { codes: r.codes, stepMs };
  } catch (e) {
    if ((e as Error).name === 'AbortError') return { stepMs };
    throw e;
  }
}

// ---------------------------------------------------------------- tasks

export async function taskGemm(a: {
  kind: GemmKind;
  threads: number;
  M: number;
  K: number;
  N: number;
  prepack?: boolean;
}): Promise<GemmResult & Common> {
  const r = await measureGemm(a.kind, a.threads, {
    M: a.M,
    K: a.K,
    N: a.N,
    repeats: 5,
    prepack: a.prepack,
  });
  return { ...r, ...common() };
}

/** The int8 kernel table: every kernel at every M, interleaved in one process. */
export async function taskGemmSet(a: {
  kinds: GemmKind[];
  threads: number;
  Ms: number[];
  rounds?: number;
}): Promise<{ rows: GemmResult[] } & Common> {
  const rows = await measureGemmSet(a.kinds, a.threads, { Ms: a.Ms, rounds: a.rounds });
  return { rows, ...common() };
}

export interface ForwardRow extends Common {
  tokens: number;
  ms: number;
  tokensPerS: number;
  gflops: number;
  loadMs: number;
}

/** One forward of a 256x256 text-to-image conditional sequence (all cells masked). */
export async function taskForward(a: {
  dir: string;
  threads: number;
  size: number;
  reps: number;
}): Promise<ForwardRow> {
  const { d, loadMs } = await loadDimoo(a.dir, a.threads);
  try {
    const { job, condLen } = await t2iJob(d, { size: a.size });
    const tail: number[] = [];
    // The cond sequence = prefix + tail; masked rows are the grid cells.
    const g = a.size / 16;
    tail.push(d.special.boa, d.special.boi);
    for (let r = 0; r < g; r++) {
      for (let c = 0; c < g; c++) tail.push(d.special.mask);
      tail.push(d.special.newline);
    }
    tail.push(d.special.eoi, d.special.eoa);
    const ids = [...job.condPrefix, ...tail];
    const rows: number[] = [];
    for (let r = 0; r < g; r++)
      for (let c = 0; c < g; c++) rows.push(job.condPrefix.length + 2 + r * (g + 1) + c);
    let best = Infinity;
    for (let i = 0; i < a.reps; i++) {
      const t = performance.now();
      await d.model.forward({ ids, imageRows: rows });
      best = Math.min(best, performance.now() - t);
    }
    const flops = passFlops(d.model.config, { P: condLen, S: condLen, imageRows: rows.length });
    return {
      tokens: condLen,
      ms: best,
      tokensPerS: condLen / (best / 1000),
      gflops: flops / (best * 1e6),
      loadMs,
      ...common(),
    };
  } finally {
    await d.dispose();
  }
}

export interface StepRow extends Common {
  /** Weights repacked at load (false: quantized blocks used in place from the file). */
  prepacked: boolean;
  loadMs: number;
  rssAfterLoadGb: number;
  condLen: number;
  uncondLen: number;
  /** The measured step (the fastest after the first, or the first when only one ran). */
  stepMs: number;
  modelMs: number;
  flops: number;
  allStepMs: number[];
}

/** Sampling steps of text-to-image (cond + uncond, every step a full pass). */
export async function taskT2iStep(a: {
  dir: string;
  threads: number;
  size: number;
  steps: number;
  prepack?: boolean;
}): Promise<StepRow> {
  if (a.prepack !== undefined) process.env.DIMOO_QUANT_PREPACK = a.prepack ? '1' : '0';
  const { d, loadMs } = await loadDimoo(a.dir, a.threads);
  const rssAfterLoadGb = process.memoryUsage().rss / 1e9;
  try {
    const meter = new ForwardMeter(d.model);
    const per: { ms: number; modelMs: number; flops: number }[] = [];
    let last = meter.snapshot();
    const { condLen, uncondLen } = await t2iJob(d, { size: a.size });
    await runT2i(d, {
      size: a.size,
      maxSteps: a.steps,
      onStep: (_s, ms) => {
        const now = meter.snapshot();
        per.push({ ms, modelMs: now.ms - last.ms, flops: now.flops - last.flops });
        last = now;
      },
    });
    const measured = per.length > 1 ? per.slice(1) : per;
    const best = measured.reduce((x, y) => (y.ms < x.ms ? y : x));
    return {
      prepacked: d.model.prepacked,
      loadMs,
      rssAfterLoadGb,
      condLen,
      uncondLen,
      stepMs: best.ms,
      modelMs: best.modelMs,
      flops: best.flops,
      allStepMs: per.map((p) => p.ms),
      ...common(),
    };
  } finally {
    await d.dispose();
  }
}

export interface MlCacheRow extends Common {
  timesteps: number;
  offMs: number;
  onMs: number;
  offModelMs: number;
  onModelMs: number;
  speedup: number;
  modelSpeedup: number;
  codeAgreement: number;
  /** Mean over masked rows of |guided_cached - guided_exact| / |guided_exact| at the final step. */
  finalLogitRelL2: number;
  fullSteps: number;
}

/** A whole generation with ML-Cache off and on (original defaults 0.9 / 0.3 / 5). */
export async function taskMlCache(a: {
  dir: string;
  threads: number;
  size: number;
  timesteps: number;
}): Promise<MlCacheRow> {
  const { d } = await loadDimoo(a.dir, a.threads);
  try {
    const meter = new ForwardMeter(d.model);
    const exact = meter.original;
    // Warm-up: buffers and ORT's arena reach their size.
    await runT2i(d, { size: a.size, maxSteps: 2 });
    const sum = (xs: number[]) => xs.reduce((s, x) => s + x, 0);
    let m0 = meter.snapshot();
    const off = await runT2i(d, { size: a.size, timesteps: a.timesteps });
    const offModelMs = meter.snapshot().ms - m0.ms;
    let inspectMs = 0;
    let finalRel = NaN;
    let fullSteps = 0;
    const inspect = async (info: StepInspection): Promise<void> => {
      if (info.full) fullSteps++;
      if (info.step !== a.timesteps - 1) return;
      const t = performance.now();
      const branch = async (b: number) =>
        (await exact({ ids: info.sequences[b]!, imageRows: info.rows[b]! })).imageLogits!;
      const c = await branch(0);
      const u = await branch(1);
      const want = guideTextToImage(c, u, 4);
      const V = d.model.imageVocabSize;
      const n = info.rows[0]!.length;
      let s = 0;
      for (let r = 0; r < n; r++)
        s += relL2(info.guided.subarray(r * V, (r + 1) * V), want.subarray(r * V, (r + 1) * V));
      finalRel = s / n;
      inspectMs += performance.now() - t;
    };
    m0 = meter.snapshot();
    const on = await runT2i(d, { size: a.size, timesteps: a.timesteps, useCache: true, inspect });
    const onModelMs = meter.snapshot().ms - m0.ms - 0;
    const offMs = sum(off.stepMs);
    const onMs = sum(on.stepMs) - inspectMs;
    let same = 0;
    for (let i = 0; i < off.codes!.length; i++) if (off.codes![i] === on.codes![i]) same++;
    return {
      timesteps: a.timesteps,
      offMs,
      onMs,
      offModelMs,
      onModelMs,
      speedup: offMs / onMs,
      modelSpeedup: offModelMs / onModelMs,
      codeAgreement: same / off.codes!.length,
      finalLogitRelL2: finalRel,
      fullSteps,
      ...common(),
    };
  } finally {
    await d.dispose();
  }
}

export interface UnderstandingRow extends Common {
  steps: number;
  offMs: number;
  onMs: number;
  offStepMs: number;
  onStepMs: number;
  speedup: number;
  agreement: number;
  /** The ML-Cache variant (dual cache + recompute only unsure positions within a block), default schedule. */
  mlMs: number;
  mlStepMs: number;
  mlSpeedup: number;
  /** Share of answer tokens identical to the uncached run. */
  mlAgreement: number;
  /** Golden understanding cases (tiny checkpoint only): token agreement with the reference per mode. */
  golden?: { cached: number; uncached: number; ml: number };
}

/** Understanding, gen_length/block as given, with and without the dual cache. */
export async function taskUnderstanding(a: {
  dir: string;
  threads: number;
  genLength: number;
  blockLength: number;
  steps: number;
  imageSize: number;
  golden?: boolean;
}): Promise<UnderstandingRow> {
  const { d } = await loadDimoo(a.dir, a.threads);
  try {
    const g = a.imageSize / 16;
    const codes = Array.from({ length: g * g }, (_, i) => (i * 2654435761) % 8192);
    const image = { tokens: { width: a.imageSize, height: a.imageSize, codes } };
    const run = (
      useCache: UnderstandParams['useCache'],
      genLength = a.genLength,
      blockLength = a.blockLength,
      steps = a.steps,
    ) =>
      d.understand({
        question: 'What is in this picture? Describe it in detail.',
        image,
        genLength,
        blockLength,
        steps,
        earlyStop: false,
        useCache,
      });
    await run(false, 16, 16, 4); // warm-up
    const off = await run(false);
    const on = await run('dual');
    const ml = await run('ml-cache');
    const sum = (xs: number[]) => xs.reduce((s, x) => s + x, 0);
    const same = (ids: number[]) => ids.filter((t, i) => t === off.ids[i]).length / off.ids.length;
    let golden: UnderstandingRow['golden'];
    if (a.golden) {
      const mean = (xs: { agreement: number }[]) =>
        xs.reduce((s, x) => s + x.agreement, 0) / xs.length;
      golden = {
        uncached: mean(await goldenUnderstandingAgreement(d, defaultGoldenDir(), false)),
        cached: mean(await goldenUnderstandingAgreement(d, defaultGoldenDir(), 'dual')),
        ml: mean(await goldenUnderstandingAgreement(d, defaultGoldenDir(), 'ml-cache')),
      };
    }
    return {
      steps: off.stepMs.length,
      offMs: sum(off.stepMs),
      onMs: sum(on.stepMs),
      offStepMs: sum(off.stepMs) / off.stepMs.length,
      onStepMs: sum(on.stepMs) / on.stepMs.length,
      speedup: sum(off.stepMs) / sum(on.stepMs),
      agreement: same(on.ids),
      mlMs: sum(ml.stepMs),
      mlStepMs: sum(ml.stepMs) / ml.stepMs.length,
      mlSpeedup: sum(off.stepMs) / sum(ml.stepMs),
      mlAgreement: same(ml.ids),
      golden,
      ...common(),
    };
  } finally {
    await d.dispose();
  }
}

export interface QualityRow extends Common {
  logitsRelL2: number;
  argmaxAgreement: number;
  caseAgreement: number;
  cases: { name: string; agreement: number }[];
}

/** A (quantized) golden checkpoint against the golden references. */
export async function taskQuality(a: { dir: string; threads: number }): Promise<QualityRow> {
  const { d } = await loadDimoo(a.dir, a.threads);
  try {
    const fq = await goldenForwardQuality(d.model);
    const cases = await goldenCaseAgreement(d);
    return {
      logitsRelL2: fq.logitsRelL2,
      argmaxAgreement: fq.argmaxAgreement,
      caseAgreement: cases.reduce((s, c) => s + c.agreement, 0) / cases.length,
      cases: cases.map((c) => ({ name: c.name, agreement: c.agreement })),
      ...common(),
    };
  } finally {
    await d.dispose();
  }
}

export const TASKS = {
  vq: taskVq,
  gemm: taskGemm,
  gemmSet: taskGemmSet,
  forward: taskForward,
  t2iStep: taskT2iStep,
  mlcache: taskMlCache,
  understanding: taskUnderstanding,
  quality: taskQuality,
  trainStep: taskTrainStep,
} as const;

export type TaskName = keyof typeof TASKS;
