/**
 * OpenAI-compatible endpoints: Images (generations, edits), Chat
 * Completions (image understanding, optionally streamed), Models.
 */
import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { EditParams, EditType, ImageInput, UnderstandParams } from '../pipelines/types.js';
import { awaitJob, ownerOf } from './context.js';
import type { ModelEntry } from './backend.js';
import { RequestError } from './errors.js';
import {
  bytesOfDataUrl,
  decodeUpload,
  fitToGrid,
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
import type { ImageJobSpec } from './job-spec.js';
import { SseStream } from './sse.js';
import { requireVq, type ImageOutput } from './tasks.js';

function origin(req: FastifyRequest): string {
  return `${req.protocol}://${req.host}`;
}

async function imagesResponse(
  app: FastifyInstance,
  req: FastifyRequest,
  outs: ImageOutput[],
  format: 'b64_json' | 'url',
): Promise<unknown> {
  const data = [];
  for (const o of outs) {
    const extra = { seed: o.seed, width: o.width, height: o.height };
    if (format === 'url') {
      data.push({ url: `${origin(req)}${o.image_url}`, ...extra });
      continue;
    }
    const f = await app.dimoo.store.get(o.file!);
    if (!f) throw new RequestError('the result expired before it could be sent', 'E_INTERNAL', 500);
    data.push({ b64_json: f.data.toString('base64'), ...extra });
  }
  return { created: Math.floor(Date.now() / 1000), data };
}

export function registerOpenAiRoutes(app: FastifyInstance): void {
  registerModels(app);
  registerImageGenerations(app);
  registerImageEdits(app);
  registerChatCompletions(app);
}

function modelJson(m: ModelEntry): Record<string, unknown> {
  return { id: m.id, object: 'model', created: m.created, owned_by: 'dimoo' };
}

/** Queues an image spec and answers in the Images API's format. */
async function imageJob(
  app: FastifyInstance,
  req: FastifyRequest,
  reply: FastifyReply,
  model: ModelEntry,
  spec: ImageJobSpec,
  format: 'b64_json' | 'url',
  meta: Record<string, unknown>,
): Promise<unknown> {
  const job = await app.dimoo.jobs.submit(model, spec, { meta, owner: ownerOf(req) });
  const r = (await awaitJob(app, job, reply)) as { images: ImageOutput[] };
  return imagesResponse(app, req, r.images, format);
}

/** GET /v1/models and /v1/models/:id: the models that can take jobs now. */
function registerModels(app: FastifyInstance): void {
  const st = app.dimoo;
  app.get('/v1/models', async () => ({
    object: 'list',
    data: (await st.jobs.models()).map(modelJson),
  }));
  app.get<{ Params: { id: string } }>('/v1/models/:id', async (req) =>
    modelJson(await st.jobs.resolveModel(req.params.id)),
  );
}

/** POST /v1/images/generations: text to image. */
function registerImageGenerations(app: FastifyInstance): void {
  const st = app.dimoo;
  const { limits } = st;
  app.post('/v1/images/generations', async (req, reply) => {
    const b = asBody(req.body);
    const model = await st.jobs.resolveModel(b['model']);
    requireVq(model);
    const prompt = reqString(b, 'prompt', limits.maxPromptChars);
    const n = optInt(b, 'n', 1, limits.maxN, 'maxN') ?? 1;
    const { width, height } = parseSize(b, limits, TASK_DEFAULTS.size);
    const format = optChoice(b, 'response_format', ['b64_json', 'url'] as const) ?? 'b64_json';
    const s = parseSampling(b, limits, TASK_DEFAULTS.steps);
    const spec: ImageJobSpec = {
      task: 'generate',
      params: { ...s, prompt, width, height },
      n,
      previewEvery: 0,
      shape: 'images',
    };
    return imageJob(app, req, reply, model, spec, format, { width, height, n, steps: s.timesteps });
  });
}

/** POST /v1/images/edits: edit, inpaint, outpaint, retouch (multipart). */
function registerImageEdits(app: FastifyInstance): void {
  const st = app.dimoo;
  const { limits } = st;
  app.post('/v1/images/edits', async (req, reply) => {
    const form = await readForm(req, ['image', 'mask', 'ref_image'], limits.maxPromptChars);
    const b = form.fields;
    const model = await st.jobs.resolveModel(b['model']);
    requireVq(model);
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
      const task = optChoice(b, 'task', ['inpaint', 'retouch', 'outpaint'] as const) ?? 'inpaint';
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
      const rgb = await fitToGrid(img, limits, size);
      const spec: ImageJobSpec = {
        task,
        params: {
          ...s,
          prompt,
          image: { rgb },
          mask: { kind: 'cells', cells: Array.from(cells) },
          ...(dilate !== undefined ? { dilate } : {}),
        },
        n,
        previewEvery: 0,
        shape: 'images',
      };
      return imageJob(app, req, reply, model, spec, format, {
        width: size.width,
        height: size.height,
        n,
        steps: s.timesteps,
      });
    }
    const editType = (optChoice(b, 'edit_type', EDIT_TYPES) ?? 'edit_add') as EditType;
    const s = parseSampling(b, limits, TASK_DEFAULTS.steps);
    const cfgImg = optNumber(b, 'cfg_img', 0, 100);
    const rgb = await fitToGrid(img, limits, size);
    let refImage: ImageInput | undefined;
    const refFile = form.files.get('ref_image');
    if (refFile)
      refImage = {
        rgb: await fitToGrid(await decodeUpload(refFile.data, 'ref_image', limits), limits),
      };
    if (editType === 'image_ref_transfer' && !refImage) {
      throw new RequestError(
        'ref_image: edit_type image_ref_transfer needs a second image (ref_image or a second image[])',
        'E_PARAM',
        400,
        'ref_image',
      );
    }
    const params: EditParams = {
      ...s,
      prompt,
      editType,
      image: { rgb },
      ...(refImage ? { refImage } : {}),
      ...(cfgImg !== undefined ? { cfgImg } : {}),
    };
    const spec: ImageJobSpec = { task: 'edit', params, n, previewEvery: 0, shape: 'images' };
    return imageJob(app, req, reply, model, spec, format, {
      edit_type: editType,
      n,
      steps: s.timesteps,
    });
  });
}

/** POST /v1/chat/completions: image understanding, optionally streamed. */
function registerChatCompletions(app: FastifyInstance): void {
  const st = app.dimoo;
  const { limits } = st;
  app.post('/v1/chat/completions', async (req, reply) => {
    const b = asBody(req.body);
    const m = await st.jobs.resolveModel(b['model']);
    const { question, image } = parseMessages(b['messages'], limits.maxPromptChars);
    const rgb = await fitToGrid(
      await decodeUpload(bytesOfDataUrl(image, 'messages[].image_url'), 'image_url', limits),
      limits,
    );
    const p = parseUnderstand(b, limits);
    const params: UnderstandParams = { ...p, question, image: { rgb } };
    const stream = optBool(b, 'stream') ?? false;
    const id = `chatcmpl-${randomBytes(12).toString('hex')}`;
    const created = Math.floor(Date.now() / 1000);
    const model = m.id;
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
    const job = await st.jobs.submit(
      m,
      { task: 'understand', params },
      { meta: { steps: p.steps, gen_length: p.genLength }, owner: ownerOf(req) },
    );
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
    const off = job.subscribe((e) => {
      const t = (e.data as { text?: unknown } | null)?.text;
      if (e.event === 'progress' && typeof t === 'string') emitText(t);
    });
    sse.onClose(() => {
      off();
      if (!job.finished) void st.jobs.cancel(job).catch(() => undefined);
    });
    sse.send(chunk({ role: 'assistant', content: '' }, null));
    await job.done;
    off();
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
