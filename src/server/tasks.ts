/**
 * What each job does on the model: runs one DimooApi call with progress and
 * previews, stores the result PNG, and returns the JSON a client gets
 * (including the final token grid, so it can retouch without re-encoding).
 */
import type { FastifyBaseLogger } from 'fastify';
import type {
  DimooApi,
  ImageInput,
  ImageResult,
  ProgressEvent,
  RunOptions,
  TokenGrid,
  UnderstandParams,
} from '../pipelines/types.js';
import { RequestError } from './errors.js';
import { dataUrl, pngOf, renderPreview } from './images.js';
import type { JobContext } from './jobs.js';
import type { BlobStore } from './store.js';

export interface TaskEnv {
  api: DimooApi;
  store: BlobStore;
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
  if (r.image) file = env.store.put(await pngOf(r.image));
  return {
    width: r.width,
    height: r.height,
    seed,
    tokens: { width: r.width, height: r.height, codes: r.codes },
    image_url: file ? `/v1/files/${file}` : null,
    file,
    step_ms: r.stepMs.map((x) => Math.round(x * 10) / 10),
  };
}

/** Raw pixels arriving as an already-gridded RGB image are encoded first, so masks in cells line up exactly. */
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

export async function runUnderstand(
  env: TaskEnv,
  ctx: JobContext,
  p: UnderstandParams,
  onText?: (text: string) => void,
): Promise<{ text: string; tokens: number; step_ms: number[] }> {
  const r = await env.api.understand(p, {
    signal: ctx.signal,
    onProgress: (e) => {
      ctx.progress({
        step: e.step,
        total: e.total,
        ...(e.text !== undefined ? { text: e.text } : {}),
      });
      if (e.text !== undefined) onText?.(e.text);
    },
  });
  return {
    text: r.text,
    tokens: r.ids.length,
    step_ms: r.stepMs.map((x) => Math.round(x * 10) / 10),
  };
}

export function requireVq(api: DimooApi): void {
  if (!api.info().hasVq) {
    throw new RequestError(
      'this checkpoint has no VQ-VAE, so images cannot be encoded or decoded',
      'E_NO_VQ',
      400,
    );
  }
}
