/**
 * What each job does on the model: `runJobSpec` runs one JobSpec's DimooApi
 * calls with progress and previews, stores result PNGs, and returns the JSON
 * a client gets (including the final token grid, so it can retouch without
 * re-encoding). The same executor runs in the server process and on queue
 * workers.
 */
import type { FastifyBaseLogger } from 'fastify';
import { PAINT_TASKS, runPaintTask } from '../pipelines/tasks.js';
import type {
  DimooApi,
  EditParams,
  GenerateParams,
  PaintParams,
  ImageInput,
  ImageResult,
  ProgressEvent,
  RunOptions,
  TokenGrid,
  UnderstandParams,
} from '../pipelines/types.js';
import { addPngText } from '../image/png-text.js';
import { imageParameters } from '../pipelines/parameters.js';
import { RequestError } from './errors.js';
import { dataUrl, pngOf, renderPreview } from './images.js';
import type { ImageJobSpec, JobSpec, UnderstandJobSpec } from './job-spec.js';
import type { JobContext } from './jobs.js';
import { TASK_DEFAULTS } from './limits.js';
import type { ResultStore } from './store.js';

export interface TaskEnv {
  api: DimooApi;
  store: ResultStore;
  log: FastifyBaseLogger;
}

export interface ImageOutput {
  width: number;
  height: number;
  seed: number | null;
  tokens: TokenGrid;
  /** Relative URL of the PNG in the server's store (absent without a VQ-VAE). */
  image_url: string | null;
  /** File name in the store. */
  file: string | null;
  step_ms: number[];
  /** Tokens fed to the model besides the sampled cells (prompt, layout, input images), for OpenAI's usage. */
  prompt_tokens: number;
}

export type ImageCall = (o: RunOptions) => Promise<ImageResult>;

/**
 * Runs one image call, forwarding progress and, every `previewEvery` steps,
 * a decoded preview. At most one preview decode is in flight; it runs on the
 * model thread between sampling steps.
 */
export async function runImage(
  env: TaskEnv,
  ctx: JobContext,
  call: ImageCall,
  previewEvery: number,
  seed: number | null,
  stepOffset = 0,
  stepTotal?: number,
  /** The PNG's `parameters` text, given the result's size (how to make it again). */
  parameters?: (r: ImageResult) => string,
): Promise<ImageOutput> {
  let inFlight: Promise<void> | null = null;
  const wantPreview = previewEvery > 0 && env.api.info().hasVq;
  const onProgress = (e: ProgressEvent): void => {
    const total = stepTotal ?? e.total;
    const step = stepOffset + e.step;
    ctx.progress({ step, total, ...(e.masked !== undefined ? { masked: e.masked } : {}) });
    if (
      !wantPreview ||
      !e.previewCodes ||
      inFlight ||
      e.step === e.total ||
      e.step % previewEvery !== 0 ||
      !ctx.wantsPreview
    )
      return;
    const codes = e.previewCodes;
    inFlight = renderPreview(env.api, codes, e.gridH!, e.gridW!)
      .then((png) => ctx.preview(step, total, dataUrl(png)))
      .catch((err: unknown) => env.log.warn({ err }, 'preview failed'))
      .finally(() => {
        inFlight = null;
      });
  };
  let r: ImageResult;
  try {
    r = await call({ signal: ctx.signal, onProgress, preview: wantPreview });
  } finally {
    // Let a pending preview decode finish before the next job takes the model.
    await (inFlight as Promise<void> | null)?.catch(() => undefined);
  }
  let file: string | null = null;
  if (r.image) {
    const png = await pngOf(r.image);
    file = await env.store.put(parameters ? addPngText(png, { parameters: parameters(r) }) : png);
  }
  return {
    width: r.width,
    height: r.height,
    seed,
    tokens: { width: r.width, height: r.height, codes: r.codes },
    image_url: file ? `/v1/files/${file}` : null,
    file,
    step_ms: r.stepMs.map((x) => Math.round(x * 10) / 10),
    prompt_tokens: r.promptIds.length - r.codes.length,
  };
}

/** Pixels -> tokens at `size` (the library resizes with its image processor), or at the image's own size floored to the grid. */
export async function toTokens(
  env: TaskEnv,
  input: ImageInput,
  signal: AbortSignal,
  size?: { width: number; height: number },
): Promise<TokenGrid> {
  signal.throwIfAborted();
  if ('tokens' in input) return input.tokens;
  const g = await env.api.encodeImage(input, size ? { size } : { crop: 'none' });
  signal.throwIfAborted();
  return g;
}

export interface UnderstandAnswer {
  text: string;
  /** Answer tokens generated. */
  tokens: number;
  /** Tokens fed to the model before the answer (for OpenAI's usage). */
  prompt_tokens: number;
  step_ms: number[];
}

/** One answer; progress carries the text so far (and `index`, the answer's, when given). */
export async function runUnderstand(
  env: TaskEnv,
  ctx: JobContext,
  p: UnderstandParams,
  onText?: (text: string) => void,
  index?: number,
): Promise<UnderstandAnswer> {
  const r = await env.api.understand(p, {
    signal: ctx.signal,
    onProgress: (e) => {
      ctx.progress({
        step: e.step,
        total: e.total,
        ...(e.text !== undefined ? { text: e.text } : {}),
        ...(index !== undefined ? { index } : {}),
      });
      if (e.text !== undefined) onText?.(e.text);
    },
  });
  return {
    text: r.text,
    tokens: r.ids.length,
    prompt_tokens: r.codeStart,
    step_ms: r.stepMs.map((x) => Math.round(x * 10) / 10),
  };
}

export function requireVq(model: { hasVq: boolean }): void {
  if (!model.hasVq) {
    throw new RequestError(
      'this checkpoint has no VQ-VAE, so images cannot be encoded or decoded',
      'E_NO_VQ',
      400,
    );
  }
}

/** One image spec: pixels are encoded first where the spec says so; image i uses seed + i. */
async function runImageSpec(env: TaskEnv, ctx: JobContext, spec: ImageJobSpec): Promise<unknown> {
  const { task, n } = spec;
  let params = spec.params;
  const paint = (PAINT_TASKS as readonly string[]).includes(task);
  if (paint || (task === 'edit' && spec.encodeSize)) {
    const p = params as PaintParams | EditParams;
    // Pixels are encoded at the size the route decided, so masks in cells and rects line up.
    params = { ...p, image: { tokens: await toTokens(env, p.image, ctx.signal, spec.encodeSize) } };
  }
  const T = params.timesteps ?? TASK_DEFAULTS.steps;
  const seed0 = params.seed;
  const outs: ImageOutput[] = [];
  for (let i = 0; i < n; i++) {
    const seed = seed0 === undefined ? undefined : (seed0 + i) >>> 0;
    const p = { ...params, ...(seed !== undefined ? { seed } : {}) };
    const call: ImageCall = (o) =>
      task === 'generate'
        ? env.api.generate(p as GenerateParams, o)
        : task === 'edit'
          ? env.api.edit(p as EditParams, o)
          : runPaintTask(env.api, task, p as PaintParams, o);
    outs.push(
      await runImage(
        env,
        ctx,
        call,
        // Previews (and OpenAI's partial images) show the first image only.
        i === 0 ? spec.previewEvery : 0,
        seed ?? null,
        n > 1 ? i * T : 0,
        n > 1 ? n * T : undefined,
        (r) => imageParameters(task, p, r, env.api),
      ),
    );
  }
  if (spec.shape === 'images') return { images: outs };
  // The store's file name stays internal; clients use image_url.
  const { file: _f, ...rest } = outs[0]!;
  void _f;
  return rest;
}

/** Understanding: one answer (native jobs) or `{answers}` (chat completions); answer i uses seed + i. */
async function runUnderstandSpec(
  env: TaskEnv,
  ctx: JobContext,
  spec: UnderstandJobSpec,
): Promise<unknown> {
  const n = spec.n ?? 1;
  if (spec.shape !== 'answers') return runUnderstand(env, ctx, spec.params);
  const answers: UnderstandAnswer[] = [];
  for (let i = 0; i < n; i++) {
    const seed = spec.params.seed !== undefined ? (spec.params.seed + i) >>> 0 : undefined;
    const p = { ...spec.params, ...(seed !== undefined ? { seed } : {}) };
    answers.push(await runUnderstand(env, ctx, p, undefined, i));
  }
  return { answers };
}

/** Runs a job's model work; the result is the JSON its client gets. */
export async function runJobSpec(env: TaskEnv, ctx: JobContext, spec: JobSpec): Promise<unknown> {
  switch (spec.task) {
    case 'understand':
      return runUnderstandSpec(env, ctx, spec);
    case 'encode': {
      const tokens = await toTokens(env, { rgb: spec.image }, ctx.signal, spec.size);
      // The reconstruction is what retouching will start from; show it rather than the upload.
      const png = await pngOf(await env.api.decodeTokens(tokens));
      return {
        width: tokens.width,
        height: tokens.height,
        tokens,
        image_url: `/v1/files/${await env.store.put(png)}`,
      };
    }
    case 'decode': {
      const file = await env.store.put(await pngOf(await env.api.decodeTokens(spec.tokens)));
      return { file };
    }
    default:
      return runImageSpec(env, ctx, spec);
  }
}
