/**
 * OpenAI-compatible endpoints: Images (generations, edits), Chat
 * Completions (image understanding, optionally streamed), Models.
 */
import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Job } from './jobs.js';
import sharp from 'sharp';
import { PAINT_TASKS, runPaintTask } from '../pipelines/tasks.js';
import type { EditParams, ImageInput, UnderstandParams } from '../pipelines/types.js';
import { awaitJob, checkModelField } from './context.js';
import { errorBody, RequestError } from './errors.js';
import { bytesOfDataUrl, decodeUpload, gridSizeFor, maskCellsFromPng } from './images.js';
import { TASK_DEFAULTS } from './limits.js';
import { readForm } from './multipart.js';
import {
  asBody,
  optEditType,
  optBool,
  optChoice,
  optInt,
  optNumber,
  parseSampling,
  parseSize,
  parseUnderstand,
  reqString,
  type Body,
} from './params.js';
import { SseStream } from './sse.js';
import { requireVq, runImage, runUnderstand, toTokens, type ImageOutput } from './tasks.js';

function origin(req: FastifyRequest): string {
  return `${req.protocol}://${req.host}`;
}

type OutputFormat = 'png' | 'jpeg' | 'webp';

interface OutputOptions {
  responseFormat: 'b64_json' | 'url';
  outputFormat: OutputFormat;
  /** 0-100, for jpeg and webp (OpenAI's output_compression: 100 = best quality). */
  compression: number;
}

function parseOutput(b: Body): OutputOptions {
  const responseFormat =
    optChoice(b, 'response_format', ['b64_json', 'url'] as const) ?? 'b64_json';
  const outputFormat = optChoice(b, 'output_format', ['png', 'jpeg', 'webp'] as const) ?? 'png';
  const compression = optInt(b, 'output_compression', 0, 100) ?? 100;
  if (
    b['output_compression'] !== undefined &&
    b['output_compression'] !== null &&
    outputFormat === 'png'
  ) {
    throw new RequestError(
      'output_compression: applies only to output_format jpeg or webp',
      'E_PARAM',
      400,
      'output_compression',
    );
  }
  return { responseFormat, outputFormat, compression };
}

/** The PNG a job stored, in the format the client asked for. */
async function encodeAs(png: Buffer, o: OutputOptions): Promise<Buffer> {
  if (o.outputFormat === 'png') return png;
  const img = sharp(png);
  return o.outputFormat === 'jpeg'
    ? img.jpeg({ quality: Math.max(1, o.compression) }).toBuffer()
    : img.webp({ quality: Math.max(1, o.compression) }).toBuffer();
}

/** OpenAI's image usage: tokens fed in (of which `imageTokens` from input images), image tokens out. */
function imageUsage(outs: ImageOutput[], imageTokens = 0): Record<string, unknown> {
  const out = outs.reduce((s, o) => s + o.tokens.codes.length, 0);
  const input = outs.reduce((s, o) => s + o.prompt_tokens, 0);
  const image = Math.min(input, imageTokens * outs.length);
  return {
    input_tokens: input,
    input_tokens_details: { text_tokens: input - image, image_tokens: image },
    output_tokens: out,
    total_tokens: input + out,
  };
}

async function imagesResponse(
  app: FastifyInstance,
  req: FastifyRequest,
  outs: ImageOutput[],
  o: OutputOptions,
  imageTokens = 0,
): Promise<unknown> {
  const data = [];
  for (const out of outs) {
    const extra = { seed: out.seed, width: out.width, height: out.height };
    // Sent inline (b64_json): taken out of the store, keeping it for an hour would only grow memory under load.
    const f =
      o.responseFormat === 'url' ? app.dimoo.store.get(out.file!) : app.dimoo.store.take(out.file!);
    if (!f) throw new RequestError('the result expired before it could be sent', 'E_INTERNAL', 500);
    if (o.responseFormat === 'url') {
      const url =
        o.outputFormat === 'png'
          ? out.image_url!
          : `/v1/files/${app.dimoo.store.put(await encodeAs(f.data, o), `image/${o.outputFormat}`)}`;
      data.push({ url: `${origin(req)}${url}`, ...extra });
    } else {
      data.push({ b64_json: (await encodeAs(f.data, o)).toString('base64'), ...extra });
    }
  }
  return {
    created: Math.floor(Date.now() / 1000),
    data,
    output_format: o.outputFormat,
    size: outs[0] ? `${outs[0].width}x${outs[0].height}` : undefined,
    usage: imageUsage(outs, imageTokens),
  };
}

export function registerOpenAiRoutes(app: FastifyInstance): void {
  registerModels(app);
  registerImageGenerations(app);
  registerImageEdits(app);
  registerChatCompletions(app);
}

/** GET /v1/models and /v1/models/:id: the one model served. */
function registerModels(app: FastifyInstance): void {
  const st = app.dimoo;
  app.get('/v1/models', async () => {
    const info = st.api.info();
    return {
      object: 'list',
      // The checkpoint's own name first, then every alias a request may use.
      data: [...new Set([info.name, ...st.modelIds.slice(2)])].map((id) => ({
        id,
        object: 'model',
        created: Math.floor(st.startedAt / 1000),
        owned_by: 'dimoo',
      })),
    };
  });
  app.get<{ Params: { id: string } }>('/v1/models/:id', async (req) => {
    checkModelField(app, req.params.id);
    return {
      id: req.params.id,
      object: 'model',
      created: Math.floor(st.startedAt / 1000),
      owned_by: 'dimoo',
    };
  });
}

/** POST /v1/images/generations: text-to-image. */
function registerImageGenerations(app: FastifyInstance): void {
  const st = app.dimoo;
  const { limits } = st;
  app.post('/v1/images/generations', async (req, reply) => {
    const b = asBody(req.body);
    checkModelField(app, b['model']);
    requireVq(st.api);
    const prompt = reqString(b, 'prompt', limits.maxPromptChars);
    const n = optInt(b, 'n', 1, limits.maxN, 'maxN') ?? 1;
    const { width, height } =
      b['size'] === 'auto'
        ? autoSize(limits, st.api.info().defaults.t2i)
        : parseSize(b, limits, st.api.info().defaults.t2i);
    const output = parseOutput(b);
    const s = parseSampling(b, limits, TASK_DEFAULTS.steps);
    const T = s.timesteps!;
    const stream = optBool(b, 'stream') ?? false;
    const partials = optInt(b, 'partial_images', 0, 3) ?? 0;
    // Partial images are previews decoded every `previewEvery` steps of the first image.
    const previewEvery = stream && partials > 0 ? Math.max(1, Math.floor(T / (partials + 1))) : 0;
    const job = st.queue.submit(
      'generate',
      async (ctx) => {
        const outs: ImageOutput[] = [];
        for (let i = 0; i < n; i++) {
          const seed = (s.seed + i) >>> 0;
          outs.push(
            await runImage(
              st,
              ctx,
              (o) => st.api.generate({ ...s, prompt, width, height, seed }, o),
              i === 0 ? previewEvery : 0,
              seed,
              i * T,
              n * T,
            ),
          );
        }
        return { images: outs };
      },
      { width, height, n, steps: T },
    );
    if (stream) return streamImages(app, req, reply, job, output, partials);
    const r = (await awaitJob(app, job, reply)) as { images: ImageOutput[] };
    return imagesResponse(app, req, r.images, output);
  });
}

/** POST /v1/images/edits: with a mask inpainting/retouching/outpainting, without one an instruction edit. */
function registerImageEdits(app: FastifyInstance): void {
  const st = app.dimoo;
  const { limits } = st;
  app.post('/v1/images/edits', async (req, reply) => {
    requireVq(st.api);
    const form = await readForm(req, ['image', 'mask', 'ref_image'], limits.maxPromptChars);
    const b = form.fields;
    checkModelField(app, b['model']);
    const prompt = reqString(b, 'prompt', limits.maxPromptChars);
    const n = optInt(b, 'n', 1, limits.maxN, 'maxN') ?? 1;
    const output = parseOutput(b);
    const imageFile = form.files.get('image');
    if (!imageFile)
      throw new RequestError(
        'image: a file part named "image" is required',
        'E_PARAM',
        400,
        'image',
      );
    const img = await decodeUpload(imageFile.data, 'image', limits);
    const sizeGiven = b['size'] !== undefined && b['size'] !== 'auto' && b['size'] !== '';
    const size = sizeGiven
      ? parseSize(b, limits, { width: 0, height: 0 })
      : gridSizeFor(img.width, img.height, limits);
    const maskFile = form.files.get('mask');
    if (maskFile) {
      if (b['edit_type'] !== undefined) {
        throw new RequestError(
          'edit_type: applies only without a mask (a mask means inpainting or retouching)',
          'E_PARAM',
          400,
          'edit_type',
        );
      }
      const task = optChoice(b, 'task', PAINT_TASKS) ?? 'inpaint';
      const cells = await maskCellsFromPng(maskFile.data, img.width, img.height, size, limits);
      if (!cells.some((c) => c === 1)) {
        throw new RequestError(
          'mask: marks no 16x16 cell for regeneration (a cell is regenerated when more than half of it is transparent)',
          'E_MASK',
          400,
          'mask',
        );
      }
      const dilate = optInt(b, 'dilate', 0, 16);
      const s = parseSampling(b, limits, TASK_DEFAULTS.steps);
      const job = st.queue.submit(
        task,
        async (ctx) => {
          const tokens = await toTokens(st, { rgb: img }, ctx.signal, size);
          const outs: ImageOutput[] = [];
          for (let i = 0; i < n; i++) {
            const seed = (s.seed + i) >>> 0;
            const p = {
              ...s,
              seed,
              prompt,
              image: { tokens },
              mask: { kind: 'cells' as const, cells: Array.from(cells) },
              ...(dilate !== undefined ? { dilate } : {}),
            };
            outs.push(
              await runImage(
                st,
                ctx,
                (o) => runPaintTask(st.api, task, p, o),
                0,
                seed,
                i * s.timesteps!,
                n * s.timesteps!,
              ),
            );
          }
          return { images: outs };
        },
        { width: size.width, height: size.height, n, steps: s.timesteps },
      );
      const r = (await awaitJob(app, job, reply)) as { images: ImageOutput[] };
      return imagesResponse(app, req, r.images, output, cellsOf(size, st.api.info().vqScale));
    }
    const editType = optEditType(b) ?? 'edit_add';
    const s = parseSampling(b, limits, TASK_DEFAULTS.steps);
    const cfgImg = optNumber(b, 'cfg_img', 0, 100);
    // The library crops both images as the original does (as for `dimoo edit`).
    const rgb = img;
    let refImage: ImageInput | undefined;
    const refFile = form.files.get('ref_image');
    if (refFile) refImage = { rgb: await decodeUpload(refFile.data, 'ref_image', limits) };
    if (editType === 'image_ref_transfer' && !refImage) {
      throw new RequestError(
        'ref_image: edit_type image_ref_transfer needs a second image (ref_image or a second image[])',
        'E_PARAM',
        400,
        'ref_image',
      );
    }
    const job = st.queue.submit(
      'edit',
      async (ctx) => {
        const outs: ImageOutput[] = [];
        // An explicit size: the upload is resized to it (the library's image processor) and
        // kept as a token grid of that size; without one the original's area-budget crop applies.
        const image: ImageInput = sizeGiven
          ? { tokens: await toTokens(st, { rgb }, ctx.signal, size) }
          : { rgb };
        for (let i = 0; i < n; i++) {
          const seed = (s.seed + i) >>> 0;
          const p: EditParams = {
            ...s,
            seed,
            prompt,
            editType,
            image,
            ...(refImage ? { refImage } : {}),
            ...(cfgImg !== undefined ? { cfgImg } : {}),
          };
          outs.push(
            await runImage(
              st,
              ctx,
              (o) => st.api.edit(p, o),
              0,
              seed,
              i * s.timesteps!,
              n * s.timesteps!,
            ),
          );
        }
        return { images: outs };
      },
      { edit_type: editType, n, steps: s.timesteps },
    );
    const r = (await awaitJob(app, job, reply)) as { images: ImageOutput[] };
    return imagesResponse(
      app,
      req,
      r.images,
      output,
      cellsOf(size, st.api.info().vqScale) * (refImage ? 2 : 1),
    );
  });
}

/** POST /v1/chat/completions: image understanding, optionally streamed (SSE). */
function registerChatCompletions(app: FastifyInstance): void {
  const st = app.dimoo;
  const { limits } = st;
  app.post('/v1/chat/completions', async (req, reply) => {
    const b = asBody(req.body);
    checkModelField(app, b['model']);
    const { question, images: urls } = parseMessages(b['messages'], limits);
    const images: ImageInput[] = [];
    for (const url of urls) {
      const what =
        urls.length > 1 ? `image_url ${images.length + 1} of ${urls.length}` : 'image_url';
      images.push({
        rgb: await decodeUpload(bytesOfDataUrl(url, 'messages[].image_url'), what, limits),
      });
    }
    const p = parseUnderstand(b, limits, st.api.info().defaults.mmu);
    const params: UnderstandParams = { ...p, question, images };
    const stream = optBool(b, 'stream') ?? false;
    const n = optInt(b, 'n', 1, limits.maxN, 'maxN') ?? 1;
    const stops = parseStop(b['stop']);
    const so = b['stream_options'];
    const includeUsage =
      so !== undefined &&
      so !== null &&
      typeof so === 'object' &&
      (so as Body)['include_usage'] === true;
    const id = `chatcmpl-${randomBytes(12).toString('hex')}`;
    const created = Math.floor(Date.now() / 1000);
    const model = st.api.info().name;
    const chunk = (
      index: number,
      delta: Record<string, string>,
      finish: string | null,
    ): unknown => ({
      id,
      object: 'chat.completion.chunk',
      created,
      model,
      choices: [{ index, delta, finish_reason: finish }],
    });

    let sse: SseStream | null = null;
    const sent = new Array<string>(n).fill('');
    const stopped = new Array<boolean>(n).fill(false);
    const emitText = (index: number, full: string): void => {
      if (!sse || stopped[index]) return;
      const cut = cutAtStop(full, stops);
      const text = cut.text;
      // Deltas only ever extend what was sent; committed text is a prefix of the final answer.
      if (text.length > sent[index]!.length && text.startsWith(sent[index]!)) {
        sse.send(chunk(index, { content: text.slice(sent[index]!.length) }, null));
        sent[index] = text;
      }
      if (cut.stopped) stopped[index] = true;
    };
    const job = st.queue.submit(
      'understand',
      async (ctx) => {
        const answers: UnderstandAnswer[] = [];
        for (let i = 0; i < n; i++) {
          const seed = p.seed !== undefined ? (p.seed + i) >>> 0 : undefined;
          const one = { ...params, ...(seed !== undefined ? { seed } : {}) };
          answers.push(await runUnderstand(st, ctx, one, (t) => emitText(i, t)));
        }
        return { answers };
      },
      { steps: p.steps, gen_length: p.genLength, n },
    );
    const finishOf = (a: UnderstandAnswer): { text: string; finish: 'stop' | 'length' } => {
      const cut = cutAtStop(a.text, stops);
      if (cut.stopped) return { text: cut.text, finish: 'stop' };
      // No end-of-answer token inside the answer region: it was cut by max_tokens.
      return { text: a.text, finish: a.tokens >= (p.genLength ?? 0) ? 'length' : 'stop' };
    };
    const usageOf = (answers: UnderstandAnswer[]) => {
      const prompt = answers[0]?.prompt_tokens ?? 0;
      const completion = answers.reduce((s, a) => s + a.tokens, 0);
      return {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
      };
    };
    if (!stream) {
      const r = (await awaitJob(app, job, reply)) as { answers: UnderstandAnswer[] };
      return {
        id,
        object: 'chat.completion',
        created,
        model,
        choices: r.answers.map((a, index) => {
          const f = finishOf(a);
          return {
            index,
            message: { role: 'assistant', content: f.text },
            finish_reason: f.finish,
          };
        }),
        usage: usageOf(r.answers),
      };
    }
    // Opened only now: a full queue above still answers with a plain 429.
    sse = new SseStream(reply);
    sse.onClose(() => {
      if (!job.finished) st.queue.cancel(job);
    });
    for (let i = 0; i < n; i++) sse.send(chunk(i, { role: 'assistant', content: '' }, null));
    await job.done;
    if (job.status === 'succeeded') {
      const answers = (job.result as { answers: UnderstandAnswer[] }).answers;
      answers.forEach((a, i) => {
        emitText(i, a.text);
        sse!.send(chunk(i, {}, finishOf(a).finish));
      });
      if (includeUsage) {
        sse.send({
          id,
          object: 'chat.completion.chunk',
          created,
          model,
          choices: [],
          usage: usageOf(answers),
        });
      }
    } else {
      const error = job.error ?? errorBody(409, 'the job was cancelled', 'E_CANCELLED');
      sse.send({ error });
    }
    sse.send('[DONE]');
    sse.end();
    return reply;
  });
}

type UnderstandAnswer = Awaited<ReturnType<typeof runUnderstand>>;

/** OpenAI's `stop`: a string or up to 4 strings; the answer ends before the first one found. */
function parseStop(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  const list = typeof v === 'string' ? [v] : v;
  if (
    !Array.isArray(list) ||
    list.length > 4 ||
    list.some((x) => typeof x !== 'string' || x === '')
  ) {
    throw new RequestError(
      'stop: a non-empty string or an array of at most 4 of them',
      'E_PARAM',
      400,
      'stop',
    );
  }
  return list as string[];
}

function cutAtStop(text: string, stops: string[]): { text: string; stopped: boolean } {
  let at = -1;
  for (const s of stops) {
    const i = text.indexOf(s);
    if (i >= 0 && (at < 0 || i < at)) at = i;
  }
  return at < 0 ? { text, stopped: false } : { text: text.slice(0, at), stopped: true };
}

/**
 * The question is the last user message's text; the images are every
 * image_url part (data URLs) of the user messages, in order: none asks a
 * text-only question, several are all spliced into the prompt.
 */
function parseMessages(
  v: unknown,
  limits: { maxPromptChars: number; maxImages: number },
): { question: string; images: string[] } {
  const maxChars = limits.maxPromptChars;
  if (!Array.isArray(v) || v.length === 0)
    throw new RequestError('messages: a non-empty array is required', 'E_PARAM', 400, 'messages');
  const images: string[] = [];
  let question = '';
  for (let i = 0; i < v.length; i++) {
    const m = v[i] as { role?: unknown; content?: unknown };
    if (!m || typeof m !== 'object' || typeof m.role !== 'string')
      throw new RequestError(`messages[${i}]: needs a role`, 'E_PARAM', 400, 'messages');
    if (m.role !== 'user') continue;
    const texts: string[] = [];
    if (typeof m.content === 'string') texts.push(m.content);
    else if (Array.isArray(m.content)) {
      for (const part of m.content as Body[]) {
        if (part?.['type'] === 'text' && typeof part['text'] === 'string') texts.push(part['text']);
        else if (part?.['type'] === 'image_url') {
          const iu = part['image_url'];
          images.push(
            typeof iu === 'string' ? iu : String((iu as Body | undefined)?.['url'] ?? ''),
          );
        } else
          throw new RequestError(
            `messages[${i}]: content parts must be "text" or "image_url"`,
            'E_PARAM',
            400,
            'messages',
          );
      }
    } else
      throw new RequestError(
        `messages[${i}]: content must be a string or an array of parts`,
        'E_PARAM',
        400,
        'messages',
      );
    question = texts.join('\n').trim();
  }
  if (images.length > limits.maxImages) {
    throw new RequestError(
      `messages: at most ${limits.maxImages} image_url parts per request (limit maxImages), got ${images.length}`,
      'E_LIMIT',
      400,
      'messages',
    );
  }
  if (!question)
    throw new RequestError(
      'messages: the last user message has no text question',
      'E_PARAM',
      400,
      'messages',
    );
  if (question.length > maxChars)
    throw new RequestError(
      `messages: the question is longer than ${maxChars} characters`,
      'E_LIMIT',
      400,
      'messages',
    );
  return { question, images };
}

/** size "auto": the default size, shrunk to a square that fits the pixel limit. */
/** The model's default size, shrunk (keeping its aspect) to the server's limits. */
function autoSize(
  limits: { maxPixels: number; maxSide: number },
  dflt: { width: number; height: number },
): {
  width: number;
  height: number;
} {
  const k = Math.min(
    1,
    limits.maxSide / Math.max(dflt.width, dflt.height),
    Math.sqrt(limits.maxPixels / (dflt.width * dflt.height)),
  );
  const fit = (v: number): number => Math.max(16, Math.floor((v * k) / 16) * 16);
  return { width: fit(dflt.width), height: fit(dflt.height) };
}

/**
 * `stream: true` on images: OpenAI's events as Server-Sent Events,
 * `image_generation.partial_image` (decoded previews, `partial_images` of
 * them at most) then one `image_generation.completed` per image.
 */
async function streamImages(
  app: FastifyInstance,
  req: FastifyRequest,
  reply: FastifyReply,
  job: Job,
  o: OutputOptions,
  partials: number,
): Promise<FastifyReply> {
  const sse = new SseStream(reply);
  sse.onClose(() => {
    if (!job.finished) app.dimoo.queue.cancel(job);
  });
  const meta = (size: string) => ({
    created_at: Math.floor(Date.now() / 1000),
    size,
    quality: 'auto',
    background: 'opaque',
    output_format: o.outputFormat,
  });
  let sent = 0;
  let pending: Promise<void> = Promise.resolve();
  const size = `${(job.meta['width'] as number) ?? 0}x${(job.meta['height'] as number) ?? 0}`;
  const unsubscribe = job.subscribe((e) => {
    if (e.event !== 'preview' || sent >= partials) return;
    const index = sent++;
    const png = Buffer.from(
      String((e.data as { image: string }).image).split(',')[1] ?? '',
      'base64',
    );
    pending = pending.then(async () => {
      const b64 = (await encodeAs(png, o)).toString('base64');
      sse.send(
        {
          type: 'image_generation.partial_image',
          b64_json: b64,
          partial_image_index: index,
          ...meta(size),
        },
        'image_generation.partial_image',
      );
    });
  });
  await job.done;
  unsubscribe();
  await pending.catch(() => undefined);
  if (job.status === 'succeeded') {
    const outs = (job.result as { images: ImageOutput[] }).images;
    const usage = imageUsage(outs);
    for (const out of outs) {
      const f = app.dimoo.store.take(out.file!);
      const b64 = f ? (await encodeAs(f.data, o)).toString('base64') : '';
      sse.send(
        {
          type: 'image_generation.completed',
          b64_json: b64,
          ...meta(`${out.width}x${out.height}`),
          usage,
        },
        'image_generation.completed',
      );
    }
  } else {
    sse.send(
      { error: job.error ?? errorBody(409, 'the job was cancelled', 'E_CANCELLED') },
      'error',
    );
  }
  sse.end();
  void req;
  return reply;
}

function cellsOf(size: { width: number; height: number }, scale: number): number {
  return Math.floor(size.width / scale) * Math.floor(size.height / scale);
}
