/**
 * OpenAI-compatible endpoints: Images (generations, edits), Chat
 * Completions (image understanding, optionally streamed), Models.
 */
import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { PAINT_TASKS, runPaintTask } from '../pipelines/tasks.js';
import type { EditParams, EditType, ImageInput, UnderstandParams } from '../pipelines/types.js';
import { awaitJob, checkModelField } from './context.js';
import { RequestError } from './errors.js';
import {
  bytesOfDataUrl,
  decodeUpload,
  gridSizeFor,
  maskCellsFromPng,
} from './images.js';
import { TASK_DEFAULTS } from './limits.js';
import { readForm } from './multipart.js';
import {
  asBody,
  EDIT_TYPES,
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

function imagesResponse(
  app: FastifyInstance,
  req: FastifyRequest,
  outs: ImageOutput[],
  format: 'b64_json' | 'url',
): unknown {
  return {
    created: Math.floor(Date.now() / 1000),
    data: outs.map((o) => {
      const extra = { seed: o.seed, width: o.width, height: o.height };
      if (format === 'url') return { url: `${origin(req)}${o.image_url}`, ...extra };
      // Sent inline: keeping it for an hour would only grow memory under load.
      const f = app.dimoo.store.take(o.file!);
      if (!f)
        throw new RequestError('the result expired before it could be sent', 'E_INTERNAL', 500);
      return { b64_json: f.data.toString('base64'), ...extra };
    }),
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
      data: [
        {
          id: info.name,
          object: 'model',
          created: Math.floor(st.startedAt / 1000),
          owned_by: 'dimoo',
        },
      ],
    };
  });
  app.get<{ Params: { id: string } }>('/v1/models/:id', async (req) => {
    checkModelField(app, req.params.id);
    const info = st.api.info();
    return {
      id: info.name,
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
    const { width, height } = parseSize(b, limits, TASK_DEFAULTS.size);
    const format = optChoice(b, 'response_format', ['b64_json', 'url'] as const) ?? 'b64_json';
    const s = parseSampling(b, limits, TASK_DEFAULTS.steps);
    const T = s.timesteps!;
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
              0,
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
    const r = (await awaitJob(app, job, reply)) as { images: ImageOutput[] };
    return imagesResponse(app, req, r.images, format);
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
    const format = optChoice(b, 'response_format', ['b64_json', 'url'] as const) ?? 'b64_json';
    const imageFile = form.files.get('image');
    if (!imageFile)
      throw new RequestError(
        'image: a file part named "image" is required',
        'E_PARAM',
        400,
        'image',
      );
    const img = await decodeUpload(imageFile.data, 'image', limits);
    const size =
      b['size'] !== undefined && b['size'] !== 'auto'
        ? parseSize(b, limits, 0)
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
      return imagesResponse(app, req, r.images, format);
    }
    const editType = (optChoice(b, 'edit_type', EDIT_TYPES) ?? 'edit_add') as EditType;
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
        for (let i = 0; i < n; i++) {
          const seed = (s.seed + i) >>> 0;
          const p: EditParams = {
            ...s,
            seed,
            prompt,
            editType,
            image: { rgb },
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
    return imagesResponse(app, req, r.images, format);
  });
}

/** POST /v1/chat/completions: image understanding, optionally streamed (SSE). */
function registerChatCompletions(app: FastifyInstance): void {
  const st = app.dimoo;
  const { limits } = st;
  app.post('/v1/chat/completions', async (req, reply) => {
    const b = asBody(req.body);
    checkModelField(app, b['model']);
    const { question, image } = parseMessages(b['messages'], limits.maxPromptChars);
    const rgb = await decodeUpload(bytesOfDataUrl(image, 'messages[].image_url'), 'image_url', limits);
    const p = parseUnderstand(b, limits);
    const params: UnderstandParams = { ...p, question, image: { rgb } };
    const stream = optBool(b, 'stream') ?? false;
    const id = `chatcmpl-${randomBytes(12).toString('hex')}`;
    const created = Math.floor(Date.now() / 1000);
    const model = st.api.info().name;
    const chunk = (delta: Record<string, string>, finish: string | null): unknown => ({
      id,
      object: 'chat.completion.chunk',
      created,
      model,
      choices: [{ index: 0, delta, finish_reason: finish }],
    });

    let sse: SseStream | null = null;
    let sent = '';
    const emitText = (text: string): void => {
      // Deltas only ever extend what was sent; committed text is a prefix of the final answer.
      if (sse && text.length > sent.length && text.startsWith(sent)) {
        sse.send(chunk({ content: text.slice(sent.length) }, null));
        sent = text;
      }
    };
    const job = st.queue.submit('understand', (ctx) => runUnderstand(st, ctx, params, emitText), {
      steps: p.steps,
      gen_length: p.genLength,
    });
    if (!stream) {
      const r = (await awaitJob(app, job, reply)) as { text: string; tokens: number };
      return {
        id,
        object: 'chat.completion',
        created,
        model,
        choices: [
          { index: 0, message: { role: 'assistant', content: r.text }, finish_reason: 'stop' },
        ],
        usage: { prompt_tokens: null, completion_tokens: r.tokens, total_tokens: null },
      };
    }
    // Opened only now: a full queue above still answers with a plain 429.
    sse = new SseStream(reply);
    sse.onClose(() => {
      if (!job.finished) st.queue.cancel(job);
    });
    sse.send(chunk({ role: 'assistant', content: '' }, null));
    await job.done;
    if (job.status === 'succeeded') {
      emitText((job.result as { text: string }).text);
      sse.send(chunk({}, 'stop'));
    } else {
      const error = job.error ?? {
        message: 'the job was cancelled',
        type: 'invalid_request_error',
        code: 'E_CANCELLED',
      };
      sse.send({ error });
    }
    sse.send('[DONE]');
    sse.end();
    return reply;
  });
}

/** The question is the last user message's text; the image is its one image_url part (data URL). */
function parseMessages(v: unknown, maxChars: number): { question: string; image: string } {
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
  if (images.length !== 1) {
    throw new RequestError(
      `messages: understanding needs exactly one image_url part (a data: URL) in the user messages, got ${images.length}`,
      'E_PARAM',
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
  return { question, image: images[0]! };
}
