/**
 * VQ-VAE training on ONNX Runtime (CPU): the training graph of graph/vq-train.ts
 * (forward, VQ-VAE loss, gradients), one AdamW step over all weights as one flat
 * vector (training/optimizer.ts), dead codes re-seeded from recent encoder
 * outputs, a resumable state, held-out PSNR through the ordinary inference
 * VqModel, and the result written as a diffusers VQ folder
 * (config.json + diffusion_pytorch_model.safetensors).
 *
 * The data is injected (`image(i)`: the i-th training picture, a pure function
 * of i; `evalImages`: the held-out pictures), so this module knows nothing of
 * where pictures come from; the shapes world supplies them (shapes/vq-data.ts).
 *
 * Schedule: linear warm-up, then cosine decay to 10% of the peak learning rate
 * over the run's progress, the larger of steps done / --steps and time trained /
 * --minutes (so a time-boxed run still ends on a low learning rate).
 *
 * State (`<state>/vq-train-state.safetensors`, written atomically): weights,
 * Adam moments, code usage since the last re-seed, and in its metadata the
 * step, time trained, pictures drawn and the settings; resuming continues the
 * same data stream and schedule.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { DimooError } from '../errors.js';
import type { RgbImage } from '../image/image.js';
import { createSession } from '../models/device.js';
import { VqModel } from '../models/vq-model.js';
import { Prng } from '../samplers/prng.js';
import {
  numel,
  SafetensorsFile,
  readTensorFloat32,
  writeSafetensors,
} from '../checkpoint/safetensors.js';
import {
  checkVqWeights,
  loadVqConfig,
  parseVqConfig,
  VQ_CONFIG_FILE,
  VQ_NORM_EPS,
  VQ_WEIGHTS_FILE,
  type VqConfig,
  type VqTensorSpec,
} from '../checkpoint/vq-config.js';
import { buildVqTrainGraph, VQ_TRAIN_IO } from '../graph/vq-train.js';
import { adamwScalars, adamwStep } from './optimizer.js';
import { atomicWriteFileSync } from '../util/atomic-write.js';
import { makeDirs } from '../util/fs-errors.js';

const E = 'E_TRAIN';
export const VQ_STATE_FILE = 'vq-train-state.safetensors';

export interface VqTrainOptions {
  /** diffusers VQModel config JSON of the network to train. */
  config: Record<string, unknown>;
  /** Final VQ folder. */
  out: string;
  /** State folder (saved every `saveEveryMinutes`, and at the end). */
  state: string;
  /** Stop after this many optimiser steps (total, resumed runs included). */
  steps?: number;
  /** Stop after this many minutes of training (total, resumed runs included). */
  minutes?: number;
  batchSize: number;
  lr: number;
  seed: number;
  threads?: number;
  /** Continue from the state folder when it holds a state (else start fresh). */
  resume: boolean;
  /** Start from these weights (a diffusers VQ folder of the same config) instead of random ones. */
  init?: string;
  /**
   * Train only the decoder side (post_quant_conv and decoder.*): the encoder,
   * quant_conv and codebook stay fixed, so every token grid they made stays valid.
   */
  decoderOnly?: boolean;
  /** The i-th training picture (pure function of i). */
  image: (index: number) => RgbImage;
  /** Held-out pictures for the PSNR measurement. */
  evalImages: readonly RgbImage[];
  /** Commitment weight (default 0.25). */
  beta?: number;
  /**
   * Move the codebook by exponential moving averages of the encoder outputs
   * assigned to each code (VQ-VAE's EMA variant, decay e.g. 0.99) instead of by
   * its gradient: a code then sits at the mean of its cluster after a few
   * steps, where Adam moves it by ~lr per step. 0 or absent: gradient.
   */
  codebookEma?: number;
  /**
   * The first this many steps train a plain autoencoder (the decoder sees the
   * encoder's output unquantised, no commitment term) while the codes still
   * follow the outputs (EMA, re-seeding), so encoder and decoder agree on a
   * representation (colour included) before quantisation starts (default 0).
   */
  aeWarmupSteps?: number;
  /**
   * Soft-norm reparametrisation (0 or absent: off). The weights that write the
   * tensors every GroupNorm reads (conv_in, the resnets' conv1/conv2) start
   * and move at this scale, and the norms' gains at sqrt(eps) / scale, so the
   * normalised variances start far below GroupNorm's eps: each norm then acts as
   * a fixed gain, not a per-picture one, and learns like an unnormalised network
   * (see softNormScales). The saved weights are the plain VQModel's.
   */
  softNorm?: number;
  /**
   * A fixed codebook of cell thumbnails (shapes/vq-dictionary.ts) instead of a
   * learnt one: its rows are written into the codebook, which then never
   * moves (no gradient, EMA or re-seeding); the encoder regresses each cell's
   * T x T thumbnail and the decoder learns to draw from the thumbnails
   * (VqTrainGraphOptions.thumbnail). `codebook` is [K, in_channels * T * T].
   * `encoder`: given weights for every encoder.* and quant_conv tensor (e.g.
   * the exact thumbnail encoder, shapes/exact-encoder.ts), kept frozen; then
   * only the decoder trains and the encoder's regression term is dropped.
   */
  thumbnails?: {
    codebook: Float32Array;
    T: number;
    encoderWeight?: number;
    encoder?: ReadonlyMap<string, { data: Float32Array }>;
  };
  /** L1 reconstruction weight on top of the MSE (default 0). */
  l1?: number;
  warmupSteps?: number;
  /** Re-seed codes unused for this many steps (default 100). */
  reseedEvery?: number;
  evalEveryMinutes?: number;
  saveEveryMinutes?: number;
  logEverySteps?: number;
  clipGrad?: number;
  signal?: AbortSignal;
  log?: (event: VqTrainEvent) => void;
}

export type VqTrainEvent =
  | {
      event: 'start';
      step: number;
      params: number;
      resumed: boolean;
      config: Record<string, unknown>;
      batchSize: number;
      lr: number;
    }
  | {
      event: 'step';
      step: number;
      minutes: number;
      lr: number;
      loss: number;
      mse: number;
      /** PSNR of this batch's reconstruction (before the clip), dB. */
      trainPsnr: number;
      codebook: number;
      commit: number;
      gradNorm: number;
      /** Distinct codes used since the last re-seed. */
      usedCodes: number;
      msPerStep: number;
    }
  | { event: 'reseed'; step: number; dead: number }
  | { event: 'eval'; step: number; minutes: number; psnr: number; images: number }
  | { event: 'save'; step: number; file: string }
  | {
      event: 'done';
      step: number;
      minutes: number;
      psnr: number;
      out: string;
      stopped: 'steps' | 'minutes' | 'signal';
    };

export interface VqTrainResult {
  steps: number;
  minutes: number;
  psnr: number;
  out: string;
}

interface State {
  step: number;
  trainedMs: number;
  imagesDrawn: number;
  params: Float32Array;
  m: Float32Array;
  v: Float32Array;
  usage: Float32Array;
  /** EMA codebook: decayed assignment counts [K] and sums of assigned outputs [K, D]. */
  emaCount: Float32Array;
  emaSum: Float32Array;
}

/** PyTorch-like initialisation: conv/linear U(+-1/sqrt(fan_in)), norms (1, 0), codebook U(+-1/K). */
export function initVqParams(
  specs: readonly VqTensorSpec[],
  c: VqConfig,
  seed: number,
): Float32Array {
  const total = specs.reduce((s, p) => s + numel(p.shape), 0);
  const out = new Float32Array(total);
  const rng = new Prng(seed, 0x76710001);
  const shapeOf = new Map(specs.map((s) => [s.name, s.shape]));
  let off = 0;
  for (const s of specs) {
    const n = numel(s.shape);
    const isNorm = /(norm\d?|norm_out|group_norm)\.(weight|bias)$/.test(s.name);
    let bound: number;
    if (isNorm) {
      out.fill(s.name.endsWith('.weight') ? 1 : 0, off, off + n);
      off += n;
      continue;
    } else if (s.name === 'quantize.embedding.weight') {
      bound = 1 / c.numVqEmbeddings;
    } else {
      const w = s.name.endsWith('.bias')
        ? shapeOf.get(s.name.replace(/\.bias$/, '.weight'))!
        : s.shape;
      bound = 1 / Math.sqrt(numel(w.slice(1)));
    }
    for (let i = 0; i < n; i++) out[off + i] = (2 * rng.uniform() - 1) * bound;
    off += n;
  }
  return out;
}

const CODEBOOK = 'quantize.embedding.weight';

/**
 * Per-element scales of the soft-norm reparametrisation: weight = scale * v,
 * AdamW moves v (gradient scale * dL/dweight), so every weight learns at its
 * own scale. `scale` goes to the weights that write a normalised tensor, whose
 * values then stay ~scale (variance far below eps, so GroupNorm is nearly
 * (x - mean) / sqrt(eps): a fixed gain); sqrt(eps) / scale goes to the norms'
 * gains, which bring the signal back to unit size. Others: 1.
 */
export function softNormScales(specs: readonly VqTensorSpec[], scale: number): Float32Array {
  if (!(scale > 0 && scale <= 1))
    throw new DimooError(`soft-norm scale must be in (0, 1], got ${scale}`, 'E_PARAM');
  const total = specs.reduce((s, p) => s + numel(p.shape), 0);
  const out = new Float32Array(total).fill(1);
  const gain = Math.sqrt(VQ_NORM_EPS) / scale;
  let off = 0;
  for (const p of specs) {
    const n = numel(p.shape);
    const writesNormed =
      /(^encoder|^decoder)\.conv_in\.(weight|bias)$/.test(p.name) ||
      /\.resnets\.\d+\.conv[12]\.(weight|bias)$/.test(p.name) ||
      /\.attentions\.\d+\.to_out\.0\.(weight|bias)$/.test(p.name) ||
      // Stream-to-stream convolutions keep their weights' scale, but their biases add to the stream.
      /\.(conv_shortcut|downsamplers\.0\.conv|upsamplers\.0\.conv)\.bias$/.test(p.name);
    const normGain = /(norm\d|norm_out|group_norm)\.weight$/.test(p.name);
    if (writesNormed) out.fill(scale, off, off + n);
    else if (normGain) out.fill(gain, off, off + n);
    off += n;
  }
  return out;
}

/**
 * One EMA codebook step: decay every code's count and sum, add this batch's
 * assignments, and put each code that has ever been assigned at sum / count
 * (the ratio needs no bias correction: both sides start at zero and decay alike).
 */
export function emaCodebookStep(
  s: Pick<State, 'params' | 'emaCount' | 'emaSum'>,
  idx: BigInt64Array,
  lat: Float32Array,
  decay: number,
  cbOff: number,
  K: number,
  D: number,
): void {
  const { emaCount: n, emaSum: sum } = s;
  for (let i = 0; i < n.length; i++) n[i]! *= decay;
  for (let i = 0; i < sum.length; i++) sum[i]! *= decay;
  const w = 1 - decay;
  for (let r = 0; r < idx.length; r++) {
    const k = Number(idx[r]!);
    n[k]! += w;
    for (let d = 0; d < D; d++) sum[k * D + d]! += w * lat[r * D + d]!;
  }
  for (let k = 0; k < K; k++) {
    if (!(n[k]! > 1e-12)) continue;
    for (let d = 0; d < D; d++) s.params[cbOff + k * D + d] = sum[k * D + d]! / n[k]!;
  }
}

/** Weights of the decoder side (what a decoder-only run trains). */
export function isDecoderWeight(name: string): boolean {
  return name.startsWith('decoder.') || name.startsWith('post_quant_conv.');
}

/** The weights of a diffusers VQ folder as one flat float32 vector in `specs` order (checked against the config). */
export function readVqParams(
  dir: string,
  specs: readonly VqTensorSpec[],
  c: VqConfig,
): Float32Array {
  const cfg = loadVqConfig(dir);
  if (
    JSON.stringify(cfg.blockOutChannels) !== JSON.stringify(c.blockOutChannels) ||
    cfg.numVqEmbeddings !== c.numVqEmbeddings ||
    cfg.vqEmbedDim !== c.vqEmbedDim ||
    cfg.layersPerBlock !== c.layersPerBlock ||
    cfg.latentChannels !== c.latentChannels ||
    cfg.normNumGroups !== c.normNumGroups ||
    cfg.midBlockAddAttention !== c.midBlockAddAttention
  )
    throw new DimooError(`${dir}: its VQ config differs from the one being trained`, 'E_PARAM');
  const st = SafetensorsFile.open(path.join(dir, VQ_WEIGHTS_FILE));
  const weights = checkVqWeights(cfg, st.tensors, st.path);
  const out = new Float32Array(specs.reduce((n, s) => n + numel(s.shape), 0));
  let off = 0;
  for (const s of specs) {
    // checkVqWeights resolved legacy names; read the stored tensor under the name it has.
    out.set(readTensorFloat32(st.tensors.get(weights.get(s.name)!.name)!), off);
    off += numel(s.shape);
  }
  return out;
}

/** Writes a diffusers VQ folder (weights first, then config; each file atomically). */
export function writeVqFolder(
  dir: string,
  configJson: Record<string, unknown>,
  specs: readonly VqTensorSpec[],
  params: Float32Array,
): void {
  makeDirs(dir);
  let off = 0;
  const entries = specs.map((s) => {
    const n = numel(s.shape);
    const data = params.subarray(off, off + n);
    off += n;
    return { name: s.name, dtype: 'F32' as const, shape: s.shape, data };
  });
  writeSafetensors(path.join(dir, VQ_WEIGHTS_FILE), entries, { format: 'pt' });
  atomicWriteFileSync(path.join(dir, VQ_CONFIG_FILE), JSON.stringify(configJson, null, 2) + '\n');
}

/** Mean PSNR (dB, 8-bit, capped at 100) of encode -> decode through the inference VqModel. */
export async function heldOutPsnr(
  vqDir: string,
  images: readonly RgbImage[],
  threads?: number,
): Promise<number> {
  const vq = await VqModel.load(vqDir, { threads });
  try {
    let sum = 0;
    for (const img of images) {
      const codes = await vq.encode(img);
      const dec = await vq.decode(codes.codes, codes.gridH, codes.gridW);
      if (dec.width !== img.width || dec.height !== img.height)
        throw new DimooError(
          `held-out PSNR: decoded ${dec.width}x${dec.height} for a ${img.width}x${img.height} picture`,
          E,
        );
      let se = 0;
      for (let i = 0; i < dec.data.length; i++) {
        const d = dec.data[i]! - img.data[i]!;
        se += d * d;
      }
      const mse = se / dec.data.length / (255 * 255);
      sum += mse > 0 ? Math.min(100, -10 * Math.log10(mse)) : 100;
    }
    return sum / images.length;
  } finally {
    await vq.dispose();
  }
}

function saveState(file: string, s: State, meta: Record<string, unknown>): void {
  writeSafetensors(
    file,
    [
      { name: 'params', dtype: 'F32', shape: [s.params.length], data: s.params },
      { name: 'adam_m', dtype: 'F32', shape: [s.m.length], data: s.m },
      { name: 'adam_v', dtype: 'F32', shape: [s.v.length], data: s.v },
      { name: 'code_usage', dtype: 'F32', shape: [s.usage.length], data: s.usage },
      { name: 'ema_count', dtype: 'F32', shape: [s.emaCount.length], data: s.emaCount },
      { name: 'ema_sum', dtype: 'F32', shape: [s.emaSum.length], data: s.emaSum },
    ],
    {
      dimoo_vq_train: JSON.stringify({
        ...meta,
        step: s.step,
        trainedMs: s.trainedMs,
        imagesDrawn: s.imagesDrawn,
      }),
    },
  );
}

function loadState(
  file: string,
  total: number,
  K: number,
  D: number,
  configJson: Record<string, unknown>,
): State {
  const st = SafetensorsFile.open(file);
  const raw = st.metadata?.['dimoo_vq_train'];
  if (!raw)
    throw new DimooError(`${file}: not a VQ training state (no dimoo_vq_train metadata)`, E);
  const meta = JSON.parse(raw) as {
    step: number;
    trainedMs: number;
    imagesDrawn: number;
    config: unknown;
  };
  if (JSON.stringify(meta.config) !== JSON.stringify(configJson))
    throw new DimooError(
      `${file}: the state was trained with another VQ config; use another --state folder`,
      E,
    );
  const get = (name: string, n: number): Float32Array => {
    const t = st.tensors.get(name);
    if (!t || numel(t.shape) !== n)
      throw new DimooError(
        `${file}: tensor "${name}" is missing or has the wrong size (want ${n})`,
        E,
      );
    return readTensorFloat32(t);
  };
  return {
    step: meta.step,
    trainedMs: meta.trainedMs,
    imagesDrawn: meta.imagesDrawn,
    params: get('params', total),
    m: get('adam_m', total),
    v: get('adam_v', total),
    usage: get('code_usage', K),
    // States from before the EMA codebook start its averages empty.
    emaCount: st.tensors.has('ema_count') ? get('ema_count', K) : new Float32Array(K),
    emaSum: st.tensors.has('ema_sum') ? get('ema_sum', K * D) : new Float32Array(K * D),
  };
}

function toPixels(
  img: RgbImage,
  into: Float32Array,
  offset: number,
  C: number,
  H: number,
  W: number,
): void {
  if (img.width !== W || img.height !== H)
    throw new DimooError(
      `training picture is ${img.width}x${img.height}, the run trains on ${W}x${H}`,
      E,
    );
  const n = H * W;
  const ch = img.data.length / n;
  for (let c = 0; c < C; c++) {
    const base = offset + c * n;
    for (let i = 0; i < n; i++) into[base + i] = img.data[i * ch + c]! / 255;
  }
}

export async function trainVq(o: VqTrainOptions): Promise<VqTrainResult> {
  if (o.steps === undefined && o.minutes === undefined)
    throw new DimooError('VQ training needs --steps or --minutes (or both)', 'E_PARAM');
  if (o.evalImages.length === 0)
    throw new DimooError('VQ training needs held-out pictures for the PSNR', 'E_PARAM');
  const c = parseVqConfig(o.config, 'VQ training config');
  const first = o.image(0);
  const H = first.height;
  const W = first.width;
  const B = o.batchSize;
  const beta = o.beta ?? 0.25;
  const warmup = o.warmupSteps ?? 100;
  const reseedEvery = o.reseedEvery ?? 100;
  const clip = o.clipGrad ?? 1;
  const log = o.log ?? (() => {});
  const decoderOnly = o.decoderOnly === true;
  const thumbs = o.thumbnails;
  // A decoder-only run keeps the codebook and decodes codes from its first
  // step; a thumbnail codebook is fixed and needs no warm-up.
  const fixedCodes = decoderOnly || thumbs !== undefined;
  const ema = fixedCodes ? 0 : (o.codebookEma ?? 0);
  const aeWarmup = fixedCodes ? 0 : (o.aeWarmupSteps ?? 0);
  const softNorm = o.softNorm ?? 0;
  if (!(ema >= 0 && ema < 1))
    throw new DimooError(`codebook EMA decay must be in [0, 1), got ${ema}`, 'E_PARAM');
  const exact = thumbs?.encoder ?? null;
  const trainableName = (name: string): boolean =>
    decoderOnly || exact
      ? isDecoderWeight(name)
      : !((ema > 0 || thumbs !== undefined) && name === CODEBOOK);
  const {
    bytes,
    params: specs,
    trainable,
  } = buildVqTrainGraph(c, {
    batch: B,
    height: H,
    width: W,
    beta,
    l1: o.l1 ?? 0,
    trainable: trainableName,
    // A frozen exact encoder needs no regression term.
    ...(thumbs && { thumbnail: thumbs.T, encoderWeight: exact ? 0 : (thumbs.encoderWeight ?? 1) }),
  });
  const offsets: number[] = [];
  let total = 0;
  for (const s of specs) {
    offsets.push(total);
    total += numel(s.shape);
  }
  const cbIndex = specs.findIndex((s) => s.name === CODEBOOK);
  const cbOff = offsets[cbIndex]!;
  const K = c.numVqEmbeddings;
  const D = c.vqEmbedDim;
  if (thumbs && thumbs.codebook.length !== K * D)
    throw new DimooError(
      `thumbnail codebook has ${thumbs.codebook.length} values, the config needs ${K} x ${D}`,
      'E_PARAM',
    );

  const scales = softNorm > 0 ? softNormScales(specs, softNorm) : null;

  makeDirs(o.state);
  const stateFile = path.join(o.state, VQ_STATE_FILE);
  let s: State;
  let resumed = false;
  if (fs.existsSync(stateFile)) {
    if (!o.resume)
      throw new DimooError(
        `${stateFile}: a training state is already there; pass --resume to continue it, or use an empty --state folder`,
        'E_PARAM',
      );
    s = loadState(stateFile, total, K, D, o.config);
    resumed = true;
  } else {
    s = {
      step: 0,
      trainedMs: 0,
      imagesDrawn: 0,
      params:
        o.init !== undefined ? readVqParams(o.init, specs, c) : initVqParams(specs, c, o.seed),
      m: new Float32Array(total),
      v: new Float32Array(total),
      usage: new Float32Array(K),
      emaCount: new Float32Array(K),
      emaSum: new Float32Array(K * D),
    };
    // Random weights start at their reparametrised scale; given ones are used as they are.
    if (scales && o.init === undefined) for (let i = 0; i < total; i++) s.params[i]! *= scales[i]!;
    if (thumbs) s.params.set(thumbs.codebook, cbOff);
    if (exact)
      specs.forEach((sp, i) => {
        if (isDecoderWeight(sp.name) || sp.name === CODEBOOK) return;
        const w = exact.get(sp.name);
        if (!w || w.data.length !== numel(sp.shape))
          throw new DimooError(
            `given encoder: no ${numel(sp.shape)}-value tensor ${sp.name}`,
            'E_PARAM',
          );
        s.params.set(w.data, offsets[i]);
      });
  }
  const meta = {
    config: o.config,
    batchSize: B,
    lr: o.lr,
    seed: o.seed,
    beta,
    l1: o.l1 ?? 0,
    decoderOnly,
    codebookEma: ema,
    aeWarmupSteps: aeWarmup,
    softNorm,
    thumbnails: thumbs?.T ?? 0,
    exactEncoder: exact !== null,
  };
  log({
    event: 'start',
    step: s.step,
    params: total,
    resumed,
    config: o.config,
    batchSize: B,
    lr: o.lr,
  });

  const spec = { device: 'cpu' as const, threads: o.threads };
  const train = await createSession(bytes, spec, 'VQ training graph');

  const budgetMs = o.minutes !== undefined ? o.minutes * 60_000 : Infinity;
  const progress = (): number =>
    Math.max(o.steps !== undefined ? s.step / o.steps : 0, s.trainedMs / budgetMs);
  const lrAt = (): number => {
    const w = Math.min(1, (s.step + 1) / warmup);
    const p = Math.min(1, progress());
    return o.lr * w * (0.1 + 0.9 * 0.5 * (1 + Math.cos(Math.PI * p)));
  };

  // Ring of recent encoder outputs, the pool dead codes are re-seeded from.
  const poolRows = Math.max(4096, 4 * B * (H / c.scaleFactor) * (W / c.scaleFactor));
  const pool = new Float32Array(poolRows * D);
  let poolFill = 0;
  let poolPos = 0;
  const reseedRng = new Prng(o.seed, 0x76710002, s.step);

  const pixels = new Float32Array(B * c.inChannels * H * W);
  const grad = new Float32Array(total);
  const evalDir = path.join(o.state, 'eval-vq');
  let lastSave = performance.now();
  let lastEval = s.trainedMs;
  let windowMs = 0;
  let windowSteps = 0;
  let stopped: 'steps' | 'minutes' | 'signal';

  const evaluate = async (): Promise<number> => {
    writeVqFolder(evalDir, o.config, specs, s.params);
    const p = await heldOutPsnr(evalDir, o.evalImages, o.threads);
    log({
      event: 'eval',
      step: s.step,
      minutes: s.trainedMs / 60_000,
      psnr: p,
      images: o.evalImages.length,
    });
    return p;
  };
  const save = (): void => {
    saveState(stateFile, s, meta);
    log({ event: 'save', step: s.step, file: stateFile });
  };

  try {
    for (;;) {
      if (o.steps !== undefined && s.step >= o.steps) {
        stopped = 'steps';
        break;
      }
      if (s.trainedMs >= budgetMs) {
        stopped = 'minutes';
        break;
      }
      if (o.signal?.aborted) {
        stopped = 'signal';
        break;
      }
      const t0 = performance.now();
      for (let b = 0; b < B; b++)
        toPixels(o.image(s.imagesDrawn + b), pixels, b * c.inChannels * H * W, c.inChannels, H, W);
      s.imagesDrawn += B;
      const feeds: Record<string, ort.Tensor> = {
        [VQ_TRAIN_IO.pixels]: new ort.Tensor('float32', pixels, [B, c.inChannels, H, W]),
        [VQ_TRAIN_IO.quantGate]: new ort.Tensor(
          'float32',
          Float32Array.of(s.step < aeWarmup ? 0 : 1),
          [],
        ),
      };
      specs.forEach((p, i) => {
        // A copy per tensor: the binding may not honour a view's offset.
        feeds[p.name] = new ort.Tensor(
          'float32',
          s.params.slice(offsets[i]!, offsets[i]! + numel(p.shape)),
          p.shape,
        );
      });
      const out = await train.run(feeds);
      const num = (k: string): number => (out[k]!.data as Float32Array)[0]!;
      const loss = num(VQ_TRAIN_IO.loss);
      if (!Number.isFinite(loss))
        throw new DimooError(
          `VQ training: the loss became ${loss} at step ${s.step + 1} (try a lower --lr)`,
          'E_NONFINITE',
        );
      let sq = 0;
      // Frozen weights keep a zero gradient and zero moments: AdamW then leaves them exactly.
      specs.forEach((p, i) => {
        if (!trainable.has(p.name)) return;
        const gr = out[VQ_TRAIN_IO.grad(p.name)]!.data as Float32Array;
        grad.set(gr, offsets[i]!);
      });
      // AdamW works on v = weight / scale: its gradient is scale * dL/dweight.
      if (scales) for (let i = 0; i < total; i++) grad[i]! *= scales[i]!;
      for (let i = 0; i < total; i++) sq += grad[i]! * grad[i]!;
      const gradNorm = Math.sqrt(sq);
      const idx = out[VQ_TRAIN_IO.indices]!.data as BigInt64Array;
      for (let i = 0; i < idx.length; i++) s.usage[Number(idx[i]!)]! += 1;
      const lat = out[VQ_TRAIN_IO.latents]!.data as Float32Array;
      for (let r = 0; r < lat.length / D; r++) {
        pool.set(lat.subarray(r * D, (r + 1) * D), poolPos * D);
        poolPos = (poolPos + 1) % poolRows;
        poolFill = Math.min(poolRows, poolFill + 1);
      }

      const lr = lrAt();
      s.step += 1;
      const t = s.step;
      const scalars = adamwScalars(
        { lr, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0 },
        t,
        Math.min(1, clip / (gradNorm + 1e-6)),
      );
      if (scales) for (let i = 0; i < total; i++) s.params[i] = s.params[i]! / scales[i]!;
      adamwStep(s.params, s.m, s.v, grad, scalars);
      if (scales) for (let i = 0; i < total; i++) s.params[i]! *= scales[i]!;
      if (ema > 0) emaCodebookStep(s, idx, lat, ema, cbOff, K, D);

      // Dead codes: early (the codebook starts tiny: these re-seeds are its data-driven
      // initialisation), then every reseedEvery steps.
      if (!fixedCodes && (t === 10 || t === 30 || t % reseedEvery === 0)) {
        let dead = 0;
        for (let k = 0; k < K; k++) {
          if (s.usage[k]! > 0 || poolFill === 0) continue;
          dead++;
          const r = Math.min(poolFill - 1, Math.floor(reseedRng.uniform() * poolFill));
          for (let d = 0; d < D; d++) {
            const j = cbOff + k * D + d;
            s.params[j] = pool[r * D + d]! + 1e-3 * (2 * reseedRng.uniform() - 1);
            s.m[j] = 0;
            s.v[j] = 0;
            // Keep the EMA's mean (sum / count) on the new code.
            s.emaSum[k * D + d] = s.params[j]! * s.emaCount[k]!;
          }
        }
        s.usage.fill(0);
        log({ event: 'reseed', step: t, dead });
      }

      const dt = performance.now() - t0;
      windowMs += dt;
      windowSteps++;
      if (t % (o.logEverySteps ?? 10) === 0 || t === 1) {
        const mse = num(VQ_TRAIN_IO.mse);
        let used = 0;
        for (let k = 0; k < K; k++) if (s.usage[k]! > 0) used++;
        log({
          event: 'step',
          step: t,
          minutes: s.trainedMs / 60_000,
          lr,
          loss,
          mse,
          trainPsnr: -10 * Math.log10(Math.max(mse, 1e-10)),
          codebook: num(VQ_TRAIN_IO.codebook),
          commit: num(VQ_TRAIN_IO.commit),
          gradNorm,
          usedCodes: used,
          msPerStep: windowMs / windowSteps,
        });
        windowMs = 0;
        windowSteps = 0;
      }
      if (performance.now() - lastSave > (o.saveEveryMinutes ?? 3) * 60_000) {
        save();
        lastSave = performance.now();
      }
      if (s.trainedMs + dt - lastEval > (o.evalEveryMinutes ?? 5) * 60_000) {
        await evaluate();
        lastEval = s.trainedMs + dt;
      }
      // Time trained counts saves and measurements too: --minutes bounds the wall clock.
      s.trainedMs += performance.now() - t0;
    }
  } finally {
    await train.release();
  }
  save();
  const psnr = await evaluate();
  writeVqFolder(o.out, o.config, specs, s.params);
  fs.rmSync(evalDir, { recursive: true, force: true });
  const minutes = s.trainedMs / 60_000;
  log({ event: 'done', step: s.step, minutes, psnr, out: path.resolve(o.out), stopped });
  return { steps: s.step, minutes, psnr, out: path.resolve(o.out) };
}
