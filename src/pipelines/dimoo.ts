/**
 * A loaded DiMOO checkpoint and every task it offers, in-process.
 *
 * Each task: validate parameters -> build prompts and token layouts exactly as
 * the original scripts -> run the shared MaskGIT engine (or the block-wise
 * text engine) -> decode tokens with the VQ-VAE. The VQ-VAE is loaded on
 * first use, so token-only work (e.g. retouching from a token grid with
 * `--tokens-out`) needs no VQ at all.
 */
import * as path from 'node:path';
import { DimooError } from '../errors.js';
import { openCheckpoint } from '../checkpoint/folder.js';
import { hubRepoName, resolveModelDir } from '../checkpoint/hub.js';
import { resolveModel } from '../checkpoint/default-model.js';
import type { Checkpoint } from '../checkpoint/layout.js';
import {
  requireSpecialTokens,
  resolveSpecialTokens,
  type SpecialTokens,
} from '../checkpoint/special-tokens.js';
import { TextTokenizer } from '../models/tokenizer.js';
import { Transformer } from '../models/transformer.js';
import { loadVqConfig, type VqConfig } from '../checkpoint/vq-config.js';
import { VqModel } from '../models/vq-model.js';
import type { Image8 } from '../image/image.js';
import { readImage, readMask } from '../image/io.js';
import type { FitMode } from '../image/processor.js';
import {
  checkMaskSize,
  dilateCells,
  paintCellMask,
  pixelMaskToCells,
  rectsToCellMask,
  type CellMask,
  type PaintMode,
} from '../image/masks.js';
import { guideImageToImage, guideTextToImage } from '../samplers/guidance.js';
import { MASKED } from '../samplers/maskgit.js';
import { Prng } from '../samplers/prng.js';
import { runImageJob, type ImageJob } from './image-engine.js';
import {
  buildImageToImage,
  buildUnderstanding,
  imageBlock,
  imageToImagePrompt,
  textToImagePrompt,
  understandingPrompt,
} from './prompts.js';
import { runTextJob } from './text-engine.js';
import { EDIT_TYPES_HELP, editTypeTakesRef, isEditType, TASKS, type PaintTask } from './tasks.js';
import { checkTokenGrid } from './token-grid.js';
import { blameWeights, NonFiniteError } from '../checkpoint/nonfinite.js';
import type {
  TaskDefaults,
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
  TokenGrid,
  UnderstandParams,
  UnderstandResult,
} from './types.js';
import {
  checkBlockLayout,
  checkInt,
  checkNumber,
  checkPrompt,
  checkSize,
  DEFAULTS,
  LIMITS,
  resolveSampling,
  resolveTaskDefaults,
  resolveTextCache,
} from './validate.js';
import { readGenerationDefaults } from '../checkpoint/generation-config.js';

const E = 'E_PARAM';

/** An image as a token grid, plus its pixels when it came from pixels. */
interface GridImage {
  gridH: number;
  gridW: number;
  codes: Int32Array;
  /** Pixel size of the grid. */
  width: number;
  height: number;
  /** Size of the source picture before any resize (masks are given at this size). */
  sourceWidth: number;
  sourceHeight: number;
}

export class Dimoo implements DimooApi {
  private vqPromise?: Promise<VqModel>;

  private constructor(
    readonly checkpoint: Checkpoint,
    readonly tokenizer: TextTokenizer,
    readonly model: Transformer,
    readonly special: SpecialTokens,
    readonly vqConfig: VqConfig | undefined,
    private readonly opts: LoadOptions,
    /** Request defaults: the checkpoint's generation_config.json over the original scripts'. */
    readonly defaults: TaskDefaults,
  ) {}

  /**
   * `dir` is a checkpoint folder or a Hugging Face id (`Alpha-VLLM/Lumina-DiMOO`, through the Hub cache);
   * omitted: the default model ($DIMOO_MODEL, else the shipped shapes model).
   */
  static async load(dir?: string, opts: LoadOptions = {}): Promise<Dimoo> {
    const progress = opts.onProgress ?? (() => {});
    const local = await resolveModelDir(resolveModel(dir, process.env, 'dir'), {
      revision: opts.revision,
      token: opts.token,
      onProgress: (p) =>
        progress({ stage: 'download', done: p.done, total: p.total, detail: p.file }),
    });
    const ckpt = openCheckpoint(local);
    progress({
      stage: 'files',
      done: ckpt.files.length,
      total: ckpt.files.length,
      detail: `${ckpt.files.length} files of ${ckpt.dir}`,
    });
    const tokenizer = TextTokenizer.fromFile(ckpt.tokenizerPath);
    const vqConfig = ckpt.vqvaeDir ? loadVqConfig(ckpt.vqvaeDir) : undefined;
    const codebookSize = vqConfig?.numVqEmbeddings ?? 8192;
    requireSpecialTokens(tokenizer, ckpt.tokenizerPath);
    const special = resolveSpecialTokens(tokenizer, ckpt.config, { codebookSize });
    const defaults = resolveTaskDefaults(readGenerationDefaults(ckpt.generationConfigPath));
    const model = await Transformer.load(ckpt, {
      threads: opts.threads,
      device: opts.device,
      precision: opts.precision,
      imageVocabSize: codebookSize,
      lora: opts.lora,
    });
    progress({ stage: 'session', done: 1, total: 1, detail: `transformer (${model.device})` });
    return new Dimoo(ckpt, tokenizer, model, special, vqConfig, opts, defaults);
  }

  /** Pixels per token side. */
  get vqScale(): number {
    return this.vqConfig?.scaleFactor ?? 16;
  }

  info(): ModelInfo {
    return {
      dir: this.checkpoint.dir,
      name: hubRepoName(this.checkpoint.dir) ?? path.basename(path.resolve(this.checkpoint.dir)),
      hasVq: this.vqConfig !== undefined,
      vqScale: this.vqScale,
      codebookSize: this.special.codebookSize,
      device: this.model.device,
      defaults: this.defaults,
    };
  }

  private vq(): Promise<VqModel> {
    if (!this.checkpoint.vqvaeDir) {
      return Promise.reject(
        new DimooError(
          `${this.checkpoint.dir} has no vqvae/ folder: images cannot be encoded or decoded (use token grids)`,
          'E_NO_VQ',
        ),
      );
    }
    this.vqPromise ??= VqModel.load(this.checkpoint.vqvaeDir, {
      threads: this.opts.threads,
      device: this.opts.device,
    });
    return this.vqPromise;
  }

  private async encode(text: string): Promise<number[]> {
    return this.tokenizer.encode(text);
  }

  // ---- images in and out --------------------------------------------------

  private checkGrid(grid: TokenGrid, what: string): GridImage {
    const s = this.vqScale;
    const { width, height, codes } = checkTokenGrid(grid, what, {
      scale: s,
      codebookSize: this.special.codebookSize,
      maxSide: LIMITS.maxSide,
    });
    return {
      gridH: height / s,
      gridW: width / s,
      codes: Int32Array.from(codes),
      width,
      height,
      sourceWidth: width,
      sourceHeight: height,
    };
  }

  private async pixels(input: ImageInput, what: string): Promise<Image8> {
    if ('path' in input) {
      if (typeof input.path !== 'string' || input.path === '')
        throw new DimooError(`${what}: image path is empty`, E);
      return readImage(input.path);
    }
    if ('rgb' in input) {
      const { data, width, height } = input.rgb;
      if (!(data instanceof Uint8Array) || data.length !== width * height * 3) {
        throw new DimooError(`${what}: rgb data must hold width*height*3 bytes`, E);
      }
      return { data, width, height, channels: 3 };
    }
    throw new DimooError(`${what}: expected {path}, {rgb} or {tokens}`, E);
  }

  /**
   * Resolves an input image to a token grid. Pixels are fitted by the VQ's image
   * processor: the original's crop to an area budget, 'none' (the size floored
   * to a multiple of the VQ scale), or an explicit size.
   */
  private async toGrid(
    input: ImageInput | undefined,
    what: string,
    fit: FitMode | { width: number; height: number },
  ): Promise<GridImage> {
    if (!input || typeof input !== 'object') throw new DimooError(`${what} is required`, E);
    if ('tokens' in input) return this.checkGrid(input.tokens, what);
    const img = await this.pixels(input, what);
    const vq = await this.vq();
    const ready =
      typeof fit === 'object'
        ? vq.processor.resize(img, fit.width, fit.height, what)
        : vq.processor.fit(img, fit, what);
    if (ready.width > LIMITS.maxSide || ready.height > LIMITS.maxSide) {
      throw new DimooError(
        `${what}: ${ready.width}x${ready.height} exceeds ${LIMITS.maxSide} px`,
        'E_IMAGE',
      );
    }
    const g = await vq.encode(ready);
    return {
      gridH: g.gridH,
      gridW: g.gridW,
      codes: g.codes,
      width: ready.width,
      height: ready.height,
      sourceWidth: img.width,
      sourceHeight: img.height,
    };
  }

  async encodeImage(input: ImageInput, opts: EncodeOptions = {}): Promise<TokenGrid> {
    const crop = opts.crop ?? 'none';
    if (![256, 512, 1024, 'none'].includes(crop))
      throw new DimooError(`crop must be 256, 512, 1024 or none, got ${String(crop)}`, E);
    if (opts.size !== undefined && crop !== 'none')
      throw new DimooError('encodeImage: give crop or size, not both', E);
    const size = opts.size && {
      width: checkSize('size.width', opts.size.width, this.vqScale),
      height: checkSize('size.height', opts.size.height, this.vqScale),
    };
    const g = await this.toGrid(input, 'image', size ?? crop);
    return { height: g.height, width: g.width, codes: Array.from(g.codes) };
  }

  async decodeTokens(grid: TokenGrid): Promise<RgbImage> {
    const g = this.checkGrid(grid, 'tokens');
    const vq = await this.vq();
    const out = await vq.decode(g.codes, g.gridH, g.gridW);
    return { data: out.data, width: out.width, height: out.height };
  }

  private async finish(
    codes: Int32Array,
    gridH: number,
    gridW: number,
    promptIds: number[],
    codeStart: number,
    stepMs: number[],
  ): Promise<ImageResult> {
    const s = this.vqScale;
    const res: ImageResult = {
      width: gridW * s,
      height: gridH * s,
      gridH,
      gridW,
      codes: Array.from(codes),
      promptIds,
      codeStart,
      stepMs,
    };
    if (this.vqConfig)
      res.image = await this.decodeTokens({
        height: res.height,
        width: res.width,
        codes: res.codes,
      });
    return res;
  }

  // ---- tasks ----------------------------------------------------------------

  async generate(p: GenerateParams, o: RunOptions = {}): Promise<ImageResult> {
    const prompt = checkPrompt('prompt', p.prompt);
    const width = checkSize('width', p.width ?? this.defaults.t2i.width, this.vqScale);
    const height = checkSize('height', p.height ?? this.defaults.t2i.height, this.vqScale);
    const cfg = checkNumber('cfgScale', p.cfgScale ?? DEFAULTS.t2i.cfgScale, 0, 100);
    const sampling = resolveSampling(p, DEFAULTS.t2i);
    const gridH = height / this.vqScale;
    const gridW = width / this.vqScale;
    return this.textToImageJob(
      'generate',
      prompt,
      cfg,
      new Int32Array(gridH * gridW).fill(MASKED),
      gridH,
      gridW,
      sampling,
      o,
    );
  }

  private async textToImageJob(
    task: ImageJob['task'],
    prompt: string,
    cfg: number,
    cells: Int32Array,
    gridH: number,
    gridW: number,
    sampling: ImageJob['sampling'],
    o: RunOptions,
  ): Promise<ImageResult> {
    const texts = textToImagePrompt(prompt);
    const condIds = await this.encode(texts.prompt);
    const uncondIds = await this.encode(texts.uncondPrompt);
    // The original runs a single, unguided branch when cfg_scale is 0.
    const guided = cfg > 0;
    const r = await this.blameNonFinite(
      runImageJob(
        { model: this.model, special: this.special },
        {
          task,
          condPrefix: condIds,
          uncondPrefixes: guided ? [uncondIds] : [],
          guide: guided ? (c, u) => guideTextToImage(c, u[0]!, cfg) : undefined,
          cells,
          gridH,
          gridW,
          sampling,
        },
        o,
      ),
    );
    return this.finish(r.codes, gridH, gridW, r.promptIds, r.codeStart, r.stepMs);
  }

  async edit(p: EditParams, o: RunOptions = {}): Promise<ImageResult> {
    const editType = p.editType;
    if (!isEditType(editType)) {
      throw new DimooError(
        `unknown edit type ${JSON.stringify(editType)}; known: ${EDIT_TYPES_HELP}`,
        E,
      );
    }
    const prompt = checkPrompt('prompt', p.prompt, false);
    const cfg = checkNumber('cfgScale', p.cfgScale ?? DEFAULTS.i2i.cfgScale, 0, 100);
    const cfgImg = checkNumber('cfgImg', p.cfgImg ?? DEFAULTS.i2i.cfgImg, 0, 100);
    const sampling = resolveSampling(p, DEFAULTS.i2i);
    const isRef = editTypeTakesRef(editType);
    if (isRef && !p.refImage)
      throw new DimooError(
        'edit type image_ref_transfer needs a reference image (refImage / --ref-image)',
        E,
      );
    const budget = this.defaults.i2i.cropBudget;
    const main = await this.toGrid(p.image, 'image', budget);
    // Style transfer: the input image comes first, the reference second, and the output takes the reference's size.
    const ref = isRef ? await this.toGrid(p.refImage, 'refImage', budget) : undefined;
    const images = [main, ...(ref ? [ref] : [])].map((g) =>
      imageBlock(Array.from(g.codes), g.gridH, g.gridW, this.special),
    );
    const out = ref ?? main;
    const texts = imageToImagePrompt(prompt, editType);
    const layout = buildImageToImage(
      {
        promptIds: await this.encode(texts.prompt),
        uncondTextIds: await this.encode(texts.uncondPrompt),
        images,
        gridH: out.gridH,
        gridW: out.gridW,
      },
      this.special,
    );
    const guided = cfg > 0 || cfgImg > 0;
    const r = await this.blameNonFinite(
      runImageJob(
        { model: this.model, special: this.special },
        {
          task: 'edit',
          condPrefix: layout.sequence.slice(0, layout.codeStart - 2),
          uncondPrefixes: guided ? [layout.uncondTextPrefix, layout.uncondImagePrefix] : [],
          guide: guided ? (c, u) => guideImageToImage(c, u[0]!, u[1]!, cfg, cfgImg) : undefined,
          cells: new Int32Array(out.gridH * out.gridW).fill(MASKED),
          gridH: out.gridH,
          gridW: out.gridW,
          sampling,
        },
        o,
      ),
    );
    return this.finish(r.codes, out.gridH, out.gridW, r.promptIds, r.codeStart, r.stepMs);
  }

  /** Turns a MaskSpec into token cells of the grid (1 = regenerate). */
  private async cellsFor(
    spec: MaskSpec | undefined,
    g: GridImage,
    mode: PaintMode,
    dilate: number,
  ): Promise<CellMask> {
    const s = this.vqScale;
    const spec_ = spec ?? {
      kind: 'ratio',
      hRatio: DEFAULTS.paint.maskHRatio,
      wRatio: DEFAULTS.paint.maskWRatio,
    };
    let m: CellMask;
    switch (spec_.kind) {
      case 'ratio':
        m = paintCellMask(g.sourceWidth, g.sourceHeight, {
          maskHRatio: spec_.hRatio,
          maskWRatio: spec_.wRatio,
          mode,
          scale: s,
          encodedWidth: g.width,
          encodedHeight: g.height,
          dilate,
        });
        return m;
      case 'png': {
        const px = await readMask(spec_.path);
        checkMaskSize(px, g.sourceWidth, g.sourceHeight, `mask ${spec_.path}`);
        const scaled =
          px.width === g.width && px.height === g.height
            ? px
            : { width: g.width, height: g.height, data: resampleMask(px, g.width, g.height) };
        m = pixelMaskToCells(scaled, g.gridH, g.gridW, dilate);
        break;
      }
      case 'rects':
        m = rectsToCellMask(spec_.rects, {
          width: g.width,
          height: g.height,
          gridW: g.gridW,
          gridH: g.gridH,
          dilate,
        });
        break;
      case 'cells': {
        if (spec_.cells.length !== g.gridH * g.gridW) {
          throw new DimooError(
            `mask cells: ${spec_.cells.length} flags for a ${g.gridW}x${g.gridH} token grid`,
            E,
          );
        }
        const cells = Uint8Array.from(spec_.cells, (v) => (v ? 1 : 0));
        m = dilate
          ? dilateCells({ gridH: g.gridH, gridW: g.gridW, cells }, dilate)
          : { gridH: g.gridH, gridW: g.gridW, cells };
        break;
      }
      default:
        throw new DimooError(
          `unknown mask kind ${JSON.stringify((spec_ as { kind: unknown }).kind)}`,
          E,
        );
    }
    // A user mask already says what to regenerate; only the centred rectangle is inverted for outpainting.
    return m;
  }

  private async paintJob(
    task: PaintTask,
    p: PaintParams | RetouchParams,
    mode: PaintMode,
    o: RunOptions,
  ): Promise<ImageResult> {
    const prompt = checkPrompt('prompt', p.prompt, !TASKS[task].promptOptional);
    const cfg = checkNumber('cfgScale', p.cfgScale ?? DEFAULTS.paint.cfgScale, 0, 100);
    const dilate = checkInt('dilate', p.dilate ?? 0, 0, 64);
    const sampling = resolveSampling(p, DEFAULTS.paint);
    if (TASKS[task].mask === 'required' && !p.mask)
      throw new DimooError(`${task} needs a mask (regions to regenerate)`, E);
    const g = await this.toGrid(p.image, 'image', 'none');
    const mask = await this.cellsFor(p.mask, g, mode, dilate);
    const cells = Int32Array.from(g.codes, (c, i) => (mask.cells[i] ? MASKED : c));
    if (!mask.cells.some((v) => v))
      throw new DimooError('the mask selects no token cell: nothing to regenerate', E);
    return this.textToImageJob(task, prompt, cfg, cells, g.gridH, g.gridW, sampling, o);
  }

  inpaint(p: PaintParams, o: RunOptions = {}): Promise<ImageResult> {
    return this.paintJob('inpaint', p, 'inpainting', o);
  }

  outpaint(p: PaintParams, o: RunOptions = {}): Promise<ImageResult> {
    return this.paintJob('outpaint', p, 'outpainting', o);
  }

  /** Interactive retouching: only the marked cells are resampled; all others keep their codes exactly. */
  retouch(p: RetouchParams, o: RunOptions = {}): Promise<ImageResult> {
    return this.paintJob('retouch', p, 'inpainting', o);
  }

  async understand(p: UnderstandParams, o: RunOptions = {}): Promise<UnderstandResult> {
    const question = checkPrompt('question', p.question);
    const d = this.defaults.mmu;
    const genLength = checkInt('genLength', p.genLength ?? d.genLength, 1, LIMITS.maxGenLength);
    const blockLength = checkInt(
      'blockLength',
      p.blockLength ?? Math.min(d.blockLength, genLength),
      1,
      genLength,
    );
    const steps = checkInt(
      'steps',
      p.steps ?? Math.min(d.steps, genLength),
      1,
      LIMITS.maxGenLength,
    );
    checkBlockLayout(genLength, blockLength, steps);
    const temperature = checkNumber(
      'temperature',
      p.temperature ?? DEFAULTS.mmu.temperature,
      0,
      100,
    );
    const cfgScale = checkNumber('cfgScale', p.cfgScale ?? DEFAULTS.mmu.cfgScale, 0, 100);
    const remasking = p.remasking ?? 'low_confidence';
    if (remasking !== 'low_confidence' && remasking !== 'random')
      throw new DimooError(`remasking must be low_confidence or random`, E);
    const seed = checkInt('seed', p.seed ?? DEFAULTS.seed, 0, Number.MAX_SAFE_INTEGER);
    const cache = resolveTextCache(p, { temperature, cfgScale });
    const inputs = understandingImages(p);
    // One image gets the checkpoint's crop budget (inference_mmu.py's 1024 by default); each of several
    // the smaller one the original's multi-image evaluation uses (never more than the checkpoint's).
    const budget: FitMode =
      inputs.length > 1 ? Math.min(d.cropBudget, DEFAULTS.mmu.multiImageCropBudget) : d.cropBudget;
    const images = [];
    for (let i = 0; i < inputs.length; i++) {
      const g = await this.toGrid(inputs[i], p.images ? `images[${i}]` : 'image', budget);
      images.push({ codes: Array.from(g.codes), gridH: g.gridH, gridW: g.gridW });
    }
    const promptIds = await this.encode(understandingPrompt(question));
    const layout = buildUnderstanding(
      { promptIds, images, genLength, layout: p.scriptLayout ? 'script' : 'single' },
      this.special,
    );
    const r = await this.blameNonFinite(
      runTextJob(
        this.model,
        {
          ...cache,
          sampler: {
            sequence: layout.sequence,
            codeStart: layout.codeStart,
            genLength,
            blockLength,
            steps,
            temperature,
            cfgScale,
            remasking,
            maskId: this.special.mask,
            earlyStop: p.earlyStop ?? true,
            stopTokenIds: [this.special.eoa, this.special.eos],
            rng: temperature > 0 || remasking === 'random' ? new Prng(seed) : undefined,
          },
          decode: o.onProgress
            ? (ids) => this.tokenizer.decode(ids, { skipSpecialTokens: true })
            : undefined,
        },
        o,
      ),
    );
    const ids = r.sampler.answerIds();
    return {
      text: await this.tokenizer.decode(ids, { skipSpecialTokens: true }),
      ids,
      promptIds: layout.sequence,
      codeStart: layout.codeStart,
      stepMs: r.stepMs,
    };
  }

  /** NaN/Inf logits: say which weight holds them (scanned only now, on failure). */
  private blameNonFinite<T>(run: Promise<T>): Promise<T> {
    return run.catch((e: unknown) => {
      if (e instanceof NonFiniteError) {
        throw new DimooError(e.message + blameWeights(this.checkpoint.weights.values()), e.code);
      }
      throw e;
    });
  }

  async dispose(): Promise<void> {
    await this.model.dispose();
    if (this.vqPromise) await (await this.vqPromise).dispose();
  }
}

/** The images of an understanding request: `image` (one), `images` (any number, in order) or neither (text only). */
function understandingImages(p: UnderstandParams): ImageInput[] {
  if (p.image !== undefined && p.images !== undefined)
    throw new DimooError('give image or images, not both', E);
  if (p.images === undefined) return p.image === undefined ? [] : [p.image];
  if (!Array.isArray(p.images))
    throw new DimooError(
      'images must be an array of images (empty or absent for a text-only question)',
      E,
    );
  return p.images;
}

/** Nearest-neighbour rescale of a pixel mask onto the encoded image size (only used when the image was resized). */
function resampleMask(
  m: { width: number; height: number; data: Float32Array },
  w: number,
  h: number,
): Float32Array {
  const out = new Float32Array(w * h);
  for (let y = 0; y < h; y++) {
    const sy = Math.min(m.height - 1, Math.floor(((y + 0.5) * m.height) / h));
    for (let x = 0; x < w; x++) {
      const sx = Math.min(m.width - 1, Math.floor(((x + 0.5) * m.width) / w));
      out[y * w + x] = m.data[sy * m.width + sx]!;
    }
  }
  return out;
}
