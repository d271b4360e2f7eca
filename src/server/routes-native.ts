/**
 * DiMOO's own API: jobs with ids (create, status, cancel, SSE progress with
 * previews), token grids in and out, stored result files, health.
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import { editTypeHasFixedPrompt, runPaintTask, TASK_NAMES, TASKS } from '../pipelines/tasks.js';
import type { ImageInput, MaskSpec, ModelInfo, TokenGrid } from '../pipelines/types.js';
import { paintCellMask } from '../image/masks.js';
import { awaitJob } from './context.js';
import { RequestError } from './errors.js';
import {
  bytesOfDataUrl,
  checkTokenGrid,
  decodeUpload,
  gridSizeFor,
  maskCellsFromPng,
  pngOf,
} from './images.js';
import type { Job, JobEvent } from './jobs.js';
import { TASK_DEFAULTS, type ServerLimits } from './limits.js';
import { readForm } from './multipart.js';
import {
  asBody,
  optEditType,
  optChoice,
  optInt,
  optNumber,
  optString,
  parseSampling,
  parseSize,
  parseUnderstand,
  reqString,
  type Body,
} from './params.js';
import { SseStream } from './sse.js';
import {
  requireVq,
  runImage,
  runUnderstand,
  toTokens,
  type ImageOutput,
  type TaskEnv,
} from './tasks.js';

/** A parsed `image` field: decoded pixels (with the grid size painting uses) or a token grid. */
interface ImageRef {
  input: ImageInput;
  /** Size the model sees. */
  width: number;
  height: number;
  /** Size as uploaded (a mask PNG must match it). */
  srcWidth: number;
  srcHeight: number;
}

async function parseImageRef(
  v: unknown,
  param: string,
  limits: ServerLimits,
  model: ModelInfo,
): Promise<ImageRef> {
  if (typeof v === 'string') v = { data_url: v };
  const o = v as Body | undefined;
  if (!o || typeof o !== 'object')
    throw new RequestError(
      `${param}: expected {"tokens": {...}} or {"data_url": "data:image/png;base64,..."}`,
      'E_PARAM',
      400,
      param,
    );
  if (o['tokens'] !== undefined) {
    const g = checkTokenGrid(o['tokens'], `${param}.tokens`, limits, model);
    return {
      input: { tokens: g },
      width: g.width,
      height: g.height,
      srcWidth: g.width,
      srcHeight: g.height,
    };
  }
  if (o['data_url'] !== undefined) {
    const img = await decodeUpload(
      bytesOfDataUrl(o['data_url'], `${param}.data_url`),
      param,
      limits,
    );
    // Decoded pixels: the library fits them (crop for edits and understanding, `size` for painting).
    const size = gridSizeFor(img.width, img.height, limits);
    return {
      input: { rgb: img },
      width: size.width,
      height: size.height,
      srcWidth: img.width,
      srcHeight: img.height,
    };
  }
  throw new RequestError(
    `${param}: expected {"tokens": {...}} or {"data_url": "data:image/png;base64,..."}`,
    'E_PARAM',
    400,
    param,
  );
}

async function parseMask(
  v: unknown,
  img: ImageRef,
  limits: ServerLimits,
): Promise<MaskSpec | undefined> {
  if (v === undefined || v === null) return undefined;
  const o = v as Body;
  const gw = img.width / 16;
  const gh = img.height / 16;
  if (typeof o !== 'object')
    throw new RequestError('mask: expected an object', 'E_PARAM', 400, 'mask');
  if (o['cells'] !== undefined) {
    const c = o['cells'];
    if (!Array.isArray(c) || c.length !== gw * gh || !c.every((x) => x === 0 || x === 1)) {
      throw new RequestError(
        `mask.cells: expected ${gw * gh} flags of 0 or 1 (a ${gw}x${gh} grid, row-major)`,
        'E_MASK',
        400,
        'mask',
      );
    }
    return { kind: 'cells', cells: c as number[] };
  }
  if (o['rects'] !== undefined) {
    const rs = o['rects'];
    if (!Array.isArray(rs) || rs.length === 0 || rs.length > 256)
      throw new RequestError('mask.rects: expected 1..256 rectangles', 'E_MASK', 400, 'mask');
    const rects = rs.map((r: Body, i: number) => {
      const vals = ['x', 'y', 'width', 'height'].map((k) => r?.[k]);
      if (!vals.every((x) => typeof x === 'number' && Number.isFinite(x))) {
        throw new RequestError(
          `mask.rects[${i}]: needs numeric x, y, width, height (pixels)`,
          'E_MASK',
          400,
          'mask',
        );
      }
      const [x, y, width, height] = vals as number[];
      if (
        width! <= 0 ||
        height! <= 0 ||
        x! < 0 ||
        y! < 0 ||
        x! + width! > img.width ||
        y! + height! > img.height
      ) {
        throw new RequestError(
          `mask.rects[${i}]: must lie inside the ${img.width}x${img.height} image`,
          'E_MASK',
          400,
          'mask',
        );
      }
      return { x: x!, y: y!, width: width!, height: height! };
    });
    return { kind: 'rects', rects };
  }
  if (o['ratio'] !== undefined) {
    const r = o['ratio'] as Body;
    const h = optNumber(r ?? {}, 'h', 0, 1);
    const w = optNumber(r ?? {}, 'w', 0, 1);
    if (h === undefined || w === undefined)
      throw new RequestError('mask.ratio: expected {"h": 0..1, "w": 0..1}', 'E_MASK', 400, 'mask');
    return { kind: 'ratio', hRatio: h, wRatio: w };
  }
  if (o['data_url'] !== undefined) {
    const cells = await maskCellsFromPng(
      bytesOfDataUrl(o['data_url'], 'mask.data_url'),
      img.srcWidth,
      img.srcHeight,
      img,
      limits,
    );
    return { kind: 'cells', cells: Array.from(cells) };
  }
  throw new RequestError(
    'mask: expected one of {"cells"}, {"rects"}, {"ratio"}, {"data_url"}',
    'E_MASK',
    400,
    'mask',
  );
}

/**
 * The model refuses a mask that selects no token cell; a queued job would
 * only fail later, so the same cells are worked out here (as the model does)
 * and such a request is a 400 before any job exists.
 */
function refuseEmptyMask(mask: MaskSpec, img: ImageRef, task: string, dilate: number): void {
  let any: boolean;
  if (mask.kind === 'cells') any = Array.prototype.some.call(mask.cells, (v: number) => v !== 0);
  else if (mask.kind === 'ratio') {
    const m = paintCellMask(img.srcWidth, img.srcHeight, {
      maskHRatio: mask.hRatio,
      maskWRatio: mask.wRatio,
      mode: task === 'outpaint' ? 'outpainting' : 'inpainting',
      scale: 16,
      encodedWidth: img.width,
      encodedHeight: img.height,
      dilate,
    });
    any = m.cells.some((v) => v);
  } else any = true; // rectangles inside the image always touch a cell
  if (!any)
    throw new RequestError(
      'mask: selects no token cell: nothing to regenerate',
      'E_MASK',
      400,
      'mask',
    );
}

function statusJson(app: FastifyInstance, job: Job): Record<string, unknown> {
  const j = job.toJSON();
  if (job.status === 'queued') j['queue_position'] = app.dimoo.queue.position(job);
  j['events_url'] = `/v1/jobs/${job.id}/events`;
  return j;
}

/** Understanding's images: `image` (one), `images` (a list, in order) or neither (a text-only question). */
async function parseUnderstandImages(
  b: Body,
  limits: ServerLimits,
  model: ModelInfo,
): Promise<ImageInput[]> {
  const one = b['image'];
  const list = b['images'];
  if (one !== undefined && one !== null && list !== undefined && list !== null)
    throw new RequestError('image, images: give one of them, not both', 'E_PARAM', 400, 'images');
  if (one !== undefined && one !== null)
    return [(await parseImageRef(one, 'image', limits, model)).input];
  if (list === undefined || list === null) return [];
  if (!Array.isArray(list))
    throw new RequestError(
      'images: expected an array of images (each {"tokens"} or {"data_url"})',
      'E_PARAM',
      400,
      'images',
    );
  if (list.length > limits.maxImages)
    throw new RequestError(
      `images: at most ${limits.maxImages} per request (limit maxImages), got ${list.length}`,
      'E_LIMIT',
      400,
      'images',
    );
  const out: ImageInput[] = [];
  for (let i = 0; i < list.length; i++)
    out.push((await parseImageRef(list[i], `images[${i}]`, limits, model)).input);
  return out;
}

/** Builds the runner for a native job from its JSON body; validation errors are thrown here, before queueing. */
async function prepareJob(env: TaskEnv, b: Body, limits: ServerLimits, previewDefault: number) {
  const task = optChoice(b, 'task', TASK_NAMES);
  if (!task)
    throw new RequestError(
      `task: required, one of ${TASK_NAMES.join(', ')}`,
      'E_PARAM',
      400,
      'task',
    );
  const previewEvery = optInt(b, 'preview_every', 0, 100000) ?? previewDefault;
  if (task === 'understand') {
    const question = reqString(b, 'question', limits.maxPromptChars);
    const images = await parseUnderstandImages(b, limits, env.api.info());
    const p = { ...parseUnderstand(b, limits, env.api.info().defaults.mmu), question, images };
    return {
      task,
      meta: { steps: p.steps },
      run: (ctx: Parameters<typeof runUnderstand>[1]) => runUnderstand(env, ctx, p),
    };
  }
  requireVq(env.api);
  const s = parseSampling(b, limits, TASK_DEFAULTS.steps);
  const seed = s.seed;
  if (task === 'generate') {
    const prompt = reqString(b, 'prompt', limits.maxPromptChars);
    const { width, height } = parseSize(b, limits, env.api.info().defaults.t2i);
    return {
      task,
      meta: { width, height, steps: s.timesteps },
      run: (ctx: Parameters<typeof runImage>[1]) =>
        runImage(
          env,
          ctx,
          (o) => env.api.generate({ ...s, prompt, width, height }, o),
          previewEvery,
          seed,
        ),
    };
  }
  const img = await parseImageRef(b['image'], 'image', limits, env.api.info());
  if (task === 'edit') {
    const editType = optEditType(b) ?? 'edit_add';
    // Fixed-prompt edit types (dense, style transfer, multi-view) ignore the text, as the original does.
    const prompt = editTypeHasFixedPrompt(editType)
      ? (optString(b, 'prompt', limits.maxPromptChars) ?? '')
      : reqString(b, 'prompt', limits.maxPromptChars);
    const cfgImg = optNumber(b, 'cfg_img', 0, 100);
    const ref =
      b['ref_image'] !== undefined
        ? await parseImageRef(b['ref_image'], 'ref_image', limits, env.api.info())
        : undefined;
    if (editType === 'image_ref_transfer' && !ref)
      throw new RequestError(
        'ref_image: needed by edit_type image_ref_transfer',
        'E_PARAM',
        400,
        'ref_image',
      );
    const p = {
      ...s,
      prompt,
      editType,
      image: img.input,
      ...(ref ? { refImage: ref.input } : {}),
      ...(cfgImg !== undefined ? { cfgImg } : {}),
    };
    return {
      task,
      meta: { edit_type: editType, steps: s.timesteps },
      run: (ctx: Parameters<typeof runImage>[1]) =>
        runImage(env, ctx, (o) => env.api.edit(p, o), previewEvery, seed),
    };
  }
  const mask = await parseMask(b['mask'], img, limits);
  if (TASKS[task].mask === 'required' && !mask)
    throw new RequestError(
      `mask: ${task} needs a mask (cells, rects or data_url)`,
      'E_MASK',
      400,
      'mask',
    );
  const prompt = TASKS[task].promptOptional
    ? (optString(b, 'prompt', limits.maxPromptChars) ?? '')
    : reqString(b, 'prompt', limits.maxPromptChars);
  const dilate = optInt(b, 'dilate', 0, 16);
  if (mask) refuseEmptyMask(mask, img, task, dilate ?? 0);
  return {
    task,
    meta: { width: img.width, height: img.height, steps: s.timesteps },
    run: async (ctx: Parameters<typeof runImage>[1]) => {
      // Pixels are encoded exactly at their (gridded) size, so masks in cells and rects line up.
      const tokens = await toTokens(env, img.input, ctx.signal, {
        width: img.width,
        height: img.height,
      });
      const p = {
        ...s,
        prompt,
        image: { tokens },
        ...(mask ? { mask } : {}),
        ...(dilate !== undefined ? { dilate } : {}),
      };
      return runImage(env, ctx, (o) => runPaintTask(env.api, task, p, o), previewEvery, seed);
    },
  };
}

function publicResult(r: unknown): unknown {
  // The store's file name stays internal; clients use image_url.
  if (r && typeof r === 'object' && 'file' in r) {
    const { file: _f, ...rest } = r as ImageOutput;
    void _f;
    return rest;
  }
  return r;
}

export function registerNativeRoutes(app: FastifyInstance): void {
  const st = app.dimoo;
  const { limits, queue } = st;

  const findJob = (id: string): Job => {
    const j = /^job_[0-9a-f]{24}$/.test(id) ? queue.get(id) : undefined;
    if (!j)
      throw new RequestError(`no job ${JSON.stringify(id.slice(0, 64))}`, 'E_NOT_FOUND', 404, 'id');
    return j;
  };

  app.get('/healthz', async (_req, reply) => {
    const info = st.api.info();
    // A WorkerDimoo whose thread died cannot run anything: say so to load balancers.
    const alive = (st.api as { alive?: boolean }).alive !== false;
    if (!alive) reply.code(503);
    return {
      status: alive ? 'ok' : 'model worker stopped',
      model: info.name,
      has_vq: info.hasVq,
      device: info.device,
      // The model's own picture size (its generation_config.json): the web page starts there.
      default_size: [info.defaults.t2i.width, info.defaults.t2i.height],
      queue: {
        running: queue.running ? 1 : 0,
        waiting: queue.waitingCount,
        max_waiting: limits.maxQueue,
      },
      uptime_s: Math.round((Date.now() - st.startedAt) / 1000),
    };
  });

  app.post('/v1/jobs', async (req, reply) => {
    const b = asBody(req.body);
    const prep = await prepareJob(st, b, limits, st.previewEvery);
    const job = queue.submit(
      prep.task,
      async (ctx) => publicResult(await prep.run(ctx)),
      prep.meta,
    );
    return reply.code(202).header('location', `/v1/jobs/${job.id}`).send(statusJson(app, job));
  });

  app.get<{ Params: { id: string } }>('/v1/jobs/:id', async (req) =>
    statusJson(app, findJob(req.params.id)),
  );

  const cancel = async (id: string): Promise<unknown> => {
    const job = findJob(id);
    queue.cancel(job);
    return statusJson(app, job);
  };
  app.post<{ Params: { id: string } }>('/v1/jobs/:id/cancel', async (req) => cancel(req.params.id));
  app.delete<{ Params: { id: string } }>('/v1/jobs/:id', async (req) => cancel(req.params.id));

  app.get<{ Params: { id: string } }>('/v1/jobs/:id/events', async (req, reply) => {
    const job = findJob(req.params.id);
    const sse = new SseStream(reply);
    // Late subscribers first get the state so far, then live events.
    sse.send(statusJson(app, job), 'status');
    if (job.finished) {
      sse.send(statusJson(app, job), job.status === 'succeeded' ? 'done' : job.status);
      sse.end();
      return reply;
    }
    if (job.progress) sse.send(job.progress, 'progress');
    if (job.lastPreview) sse.send(job.lastPreview, 'preview');
    const off = job.subscribe((e: JobEvent) => {
      const terminal = e.event === 'done' || e.event === 'failed' || e.event === 'cancelled';
      sse.send(terminal ? statusJson(app, job) : e.data, e.event);
      if (terminal) sse.end();
    });
    sse.onClose(off);
    return reply;
  });

  app.post('/v1/tokens/encode', async (req, reply) => {
    requireVq(st.api);
    let img;
    let sizeBody: Body;
    if (req.isMultipart()) {
      const form = await readForm(req, ['image'], limits.maxPromptChars);
      const f = form.files.get('image');
      if (!f)
        throw new RequestError(
          'image: a file part named "image" is required',
          'E_PARAM',
          400,
          'image',
        );
      img = await decodeUpload(f.data, 'image', limits);
      sizeBody = form.fields;
    } else {
      const b = asBody(req.body);
      img = await decodeUpload(
        bytesOfDataUrl((b['image'] as Body | undefined)?.['data_url'] ?? b['image'], 'image'),
        'image',
        limits,
      );
      sizeBody = b;
    }
    const size =
      sizeBody['size'] !== undefined
        ? parseSize(sizeBody, limits, { width: 0, height: 0 })
        : undefined;
    const target = size ?? gridSizeFor(img.width, img.height, limits);
    const job = queue.submit(
      'encode',
      async (ctx) => {
        const tokens: TokenGrid = await toTokens(st, { rgb: img }, ctx.signal, target);
        // The reconstruction is what retouching will start from; show it rather than the upload.
        const png = await pngOf(await st.api.decodeTokens(tokens));
        return {
          width: tokens.width,
          height: tokens.height,
          tokens,
          image_url: `/v1/files/${st.store.put(png)}`,
        };
      },
      { width: target.width, height: target.height },
    );
    return awaitJob(app, job, reply);
  });

  app.post('/v1/tokens/decode', async (req, reply) => {
    requireVq(st.api);
    const b = asBody(req.body);
    const grid = checkTokenGrid(b['tokens'] ?? b, 'tokens', limits, st.api.info());
    const job = queue.submit('decode', async () => pngOf(await st.api.decodeTokens(grid)), {
      width: grid.width,
      height: grid.height,
    });
    const png = (await awaitJob(app, job, reply)) as Buffer;
    return reply.type('image/png').send(png);
  });

  app.get<{ Params: { name: string } }>('/v1/files/:name', async (req, reply: FastifyReply) => {
    const f = st.store.get(req.params.name);
    if (!f)
      throw new RequestError(
        'no such file (results are kept for a limited time)',
        'E_NOT_FOUND',
        404,
      );
    return reply
      .type(f.type)
      .header('cache-control', 'private, max-age=3600, immutable')
      .send(f.data);
  });
}
