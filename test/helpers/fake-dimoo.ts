/**
 * A stand-in DimooApi with no weights, for tests and UI work without a
 * checkpoint. It behaves like the real model where the server and the worker
 * proxy can tell: steps hold the thread (like ONNX Runtime's run), progress
 * events carry preview codes, aborts are honoured between steps, retouching
 * changes only the marked cells, bad parameters raise DimooError.
 *
 * Its "VQ-VAE" maps a code to a flat 16x16 colour (5 bits red, 4 green,
 * 4 blue), and encoding picks the nearest such colour per cell.
 */
import { DimooError } from '../../src/errors.js';
import type {
  DimooApi,
  EditParams,
  EncodeOptions,
  GenerateParams,
  ImageInput,
  ImageResult,
  LoadOptions,
  MaskSpec,
  ModelInfo,
  PaintParams,
  RetouchParams,
  RgbImage,
  RunOptions,
  TaskName,
  TokenGrid,
  UnderstandParams,
  UnderstandResult,
} from '../../src/pipelines/types.js';
import { resolveTaskDefaults } from '../../src/pipelines/validate.js';

const S = 16;
const CODES = 8192;

export interface FakeOptions extends LoadOptions {
  /** Milliseconds each sampling step holds the thread (default 5). */
  stepMs?: number;
}

function hash(...parts: (string | number)[]): number {
  // FNV-1a over the joined parts: stable across runs and machines.
  let h = 0x811c9dc5;
  const s = parts.join('\u0001');
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

export function fakeCodeColor(code: number): [number, number, number] {
  return [((code >> 8) & 31) * 8 + 4, ((code >> 4) & 15) * 16 + 8, (code & 15) * 16 + 8];
}

function colorCode(r: number, g: number, b: number): number {
  return (
    ((Math.min(31, r >> 3) << 8) | (Math.min(15, g >> 4) << 4) | Math.min(15, b >> 4)) & (CODES - 1)
  );
}

function holdThread(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    // Busy on purpose: the real model's steps do not yield either.
  }
}

function checkSize(w: number | undefined, h: number | undefined): [number, number] {
  const width = w ?? 1024;
  const height = h ?? 1024;
  for (const [k, v] of [
    ['width', width],
    ['height', height],
  ] as const) {
    if (!Number.isInteger(v) || v < S || v % S !== 0)
      throw new DimooError(`${k} must be a positive multiple of 16, got ${v}`, 'E_PARAM');
  }
  return [width, height];
}

export class FakeDimoo implements DimooApi {
  private disposed = false;
  private constructor(
    private readonly dir: string,
    private readonly stepMs: number,
  ) {}

  static async load(dir: string, opts: FakeOptions = {}): Promise<FakeDimoo> {
    if (dir.includes('missing'))
      throw new DimooError(`${dir}: not a checkpoint folder`, 'E_CHECKPOINT');
    return new FakeDimoo(dir, opts.stepMs ?? 5);
  }

  info(): ModelInfo {
    return {
      dir: this.dir,
      name: 'dimoo-fake',
      hasVq: true,
      vqScale: S,
      codebookSize: 8192,
      device: 'cpu',
      defaults: resolveTaskDefaults({}),
    };
  }

  async dispose(): Promise<void> {
    this.disposed = true;
  }

  private async sample(
    task: TaskName,
    start: Int32Array,
    gridH: number,
    gridW: number,
    key: string,
    p: { timesteps?: number; seed?: number },
    o: RunOptions = {},
  ): Promise<ImageResult> {
    if (this.disposed) throw new DimooError('model is disposed', 'E_STATE');
    const T = p.timesteps ?? 64;
    if (!Number.isInteger(T) || T < 1)
      throw new DimooError(`timesteps must be a positive integer, got ${T}`, 'E_PARAM');
    const seed = p.seed ?? 0;
    const cells = Int32Array.from(start);
    const todo: number[] = [];
    for (let i = 0; i < cells.length; i++) if (cells[i] === -1) todo.push(i);
    todo.sort((a, b) => hash(key, seed, 'order', a) - hash(key, seed, 'order', b));
    const stepMs: number[] = [];
    let done = 0;
    for (let step = 0; step < T; step++) {
      o.signal?.throwIfAborted();
      // ONNX Runtime's run defers with setImmediate, then computes synchronously.
      await new Promise((r) => setImmediate(r));
      const t0 = performance.now();
      holdThread(this.stepMs);
      const target = Math.round((todo.length * (step + 1)) / T);
      for (; done < target; done++) {
        const c = todo[done]!;
        cells[c] = hash(key, seed, c) % CODES;
      }
      const ms = performance.now() - t0;
      stepMs.push(ms);
      o.onProgress?.({
        task,
        step: step + 1,
        total: T,
        masked: todo.length - done,
        gridH,
        gridW,
        ms,
        ...(o.preview ? { previewCodes: Int32Array.from(cells) } : {}),
      });
    }
    const codes = Array.from(cells);
    const width = gridW * S;
    const height = gridH * S;
    return {
      width,
      height,
      gridH,
      gridW,
      codes,
      image: await this.decodeTokens({ width, height, codes }),
      promptIds: [1, 2, 3],
      codeStart: 3,
      stepMs,
    };
  }

  async generate(p: GenerateParams, o?: RunOptions): Promise<ImageResult> {
    if (typeof p.prompt !== 'string') throw new DimooError('prompt is required', 'E_PARAM');
    const [w, h] = checkSize(p.width, p.height);
    const cells = new Int32Array((w / S) * (h / S)).fill(-1);
    return this.sample('generate', cells, h / S, w / S, `gen:${p.prompt}`, p, o);
  }

  async edit(p: EditParams, o?: RunOptions): Promise<ImageResult> {
    const g = await this.encodeImage(p.image, { crop: 512 });
    const cells = new Int32Array(g.codes.length).fill(-1);
    return this.sample(
      'edit',
      cells,
      g.height / S,
      g.width / S,
      `edit:${p.editType}:${p.prompt}:${g.codes.join(',')}`,
      p,
      o,
    );
  }

  private async paint(
    task: TaskName,
    p: PaintParams | RetouchParams,
    invert: boolean,
    o?: RunOptions,
  ): Promise<ImageResult> {
    const g = await this.encodeImage(p.image, { crop: 'none' });
    const gh = g.height / S;
    const gw = g.width / S;
    const mask = p.mask
      ? maskCells(p.mask, g.width, g.height)
      : maskCells({ kind: 'ratio', hRatio: 1, wRatio: 0.2 }, g.width, g.height);
    const cells = Int32Array.from(g.codes);
    for (let i = 0; i < cells.length; i++) if ((mask[i] === 1) !== invert) cells[i] = -1;
    return this.sample(task, cells, gh, gw, `${task}:${p.prompt ?? ''}`, p, o);
  }

  inpaint(p: PaintParams, o?: RunOptions): Promise<ImageResult> {
    return this.paint('inpaint', p, false, o);
  }
  outpaint(p: PaintParams, o?: RunOptions): Promise<ImageResult> {
    return this.paint('outpaint', p, true, o);
  }
  retouch(p: RetouchParams, o?: RunOptions): Promise<ImageResult> {
    if (!p.mask) throw new DimooError('retouch needs a mask', 'E_PARAM');
    return this.paint('retouch', p, false, o);
  }

  async understand(p: UnderstandParams, o: RunOptions = {}): Promise<UnderstandResult> {
    if (!p.question) throw new DimooError('question is required', 'E_PARAM');
    const inputs = p.images ?? (p.image ? [p.image] : []);
    let cells = 0;
    for (const img of inputs) cells += (await this.encodeImage(img, { crop: 1024 })).codes.length;
    const words = `${inputs.length} images show ${cells} cells and you asked : ${p.question}`.split(
      /\s+/,
    );
    const steps = p.steps ?? 8;
    const stepMs: number[] = [];
    for (let s = 0; s < steps; s++) {
      o.signal?.throwIfAborted();
      await new Promise((r) => setImmediate(r));
      holdThread(this.stepMs);
      stepMs.push(this.stepMs);
      const n = Math.round((words.length * (s + 1)) / steps);
      o.onProgress?.({
        task: 'understand',
        step: s + 1,
        total: steps,
        block: 0,
        text: words.slice(0, n).join(' '),
        ms: this.stepMs,
      });
    }
    return {
      text: words.join(' '),
      ids: words.map((_, i) => i),
      promptIds: [],
      codeStart: 0,
      stepMs,
    };
  }

  async encodeImage(input: ImageInput, opts: EncodeOptions = {}): Promise<TokenGrid> {
    if ('tokens' in input) {
      const t = input.tokens;
      checkSize(t.width, t.height);
      if (t.codes.length !== (t.width / S) * (t.height / S))
        throw new DimooError('token grid has the wrong number of codes', 'E_PARAM');
      return { width: t.width, height: t.height, codes: [...t.codes] };
    }
    if ('path' in input) throw new DimooError('the fake model reads no files', 'E_PARAM');
    const img = input.rgb;
    if (opts.crop === 'none' && (img.width % S !== 0 || img.height % S !== 0)) {
      throw new DimooError(
        `image is ${img.width}x${img.height}; with crop 'none' both sides must be multiples of 16`,
        'E_PARAM',
      );
    }
    const gw = Math.floor(img.width / S);
    const gh = Math.floor(img.height / S);
    if (gw < 1 || gh < 1) throw new DimooError('image is smaller than one 16x16 cell', 'E_IMAGE');
    const codes: number[] = [];
    for (let r = 0; r < gh; r++) {
      for (let c = 0; c < gw; c++) {
        let R = 0;
        let G = 0;
        let B = 0;
        for (let y = 0; y < S; y++) {
          for (let x = 0; x < S; x++) {
            const o = ((r * S + y) * img.width + c * S + x) * 3;
            R += img.data[o]!;
            G += img.data[o + 1]!;
            B += img.data[o + 2]!;
          }
        }
        codes.push(colorCode(R / 256, G / 256, B / 256));
      }
    }
    return { width: gw * S, height: gh * S, codes };
  }

  async decodeTokens(grid: TokenGrid): Promise<RgbImage> {
    const [w, h] = checkSize(grid.width, grid.height);
    const gw = w / S;
    if (grid.codes.length !== gw * (h / S))
      throw new DimooError('token grid has the wrong number of codes', 'E_PARAM');
    const data = new Uint8Array(w * h * 3);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const code = grid.codes[Math.floor(y / S) * gw + Math.floor(x / S)]!;
        if (!Number.isInteger(code) || code < 0 || code >= CODES)
          throw new DimooError(`code ${code} is outside 0..8191`, 'E_PARAM');
        const [r, g, b] = fakeCodeColor(code);
        const o = (y * w + x) * 3;
        data[o] = r;
        data[o + 1] = g;
        data[o + 2] = b;
      }
    }
    return { data, width: w, height: h };
  }
}

function maskCells(m: MaskSpec, width: number, height: number): Uint8Array {
  const gw = width / S;
  const gh = height / S;
  const out = new Uint8Array(gw * gh);
  if (m.kind === 'cells') {
    if (m.cells.length !== out.length)
      throw new DimooError(`mask has ${m.cells.length} cells, the grid ${out.length}`, 'E_MASK');
    for (let i = 0; i < out.length; i++) out[i] = m.cells[i] ? 1 : 0;
  } else if (m.kind === 'rects') {
    for (const r of m.rects) {
      for (let gy = Math.floor(r.y / S); gy < Math.min(gh, Math.ceil((r.y + r.height) / S)); gy++) {
        for (let gx = Math.floor(r.x / S); gx < Math.min(gw, Math.ceil((r.x + r.width) / S)); gx++)
          out[gy * gw + gx] = 1;
      }
    }
  } else if (m.kind === 'ratio') {
    const mh = Math.round(gh * m.hRatio);
    const mw = Math.round(gw * m.wRatio);
    const y0 = Math.floor((gh - mh) / 2);
    const x0 = Math.floor((gw - mw) / 2);
    for (let y = y0; y < y0 + mh; y++) for (let x = x0; x < x0 + mw; x++) out[y * gw + x] = 1;
  } else {
    throw new DimooError('the fake model reads no mask files', 'E_MASK');
  }
  return out;
}
