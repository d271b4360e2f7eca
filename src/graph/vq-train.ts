/**
 * The VQ-VAE training graph: the same network as graph/vq.ts (diffusers'
 * VQModel layout, derived from any VqConfig), on a batch, with its loss and
 * the gradient of that loss for every weight, built on the autodiff Tape.
 *
 *   pixels [B, C, H, W] in [0, 1] -> encoder -> quant_conv -> z
 *   quantiser: nearest codebook row per cell (the inference graph's distance
 *     formula, so the codes are the ones `dimoo encode` would pick), straight
 *     through: the decoder sees z + stopgrad(e - z), whose value is e and whose
 *     gradient goes to z;
 *   decoder (from post_quant_conv) -> reconstruction (before the [0, 1] clip).
 *   A gate input (VQ_TRAIN_IO.quantGate) turns the quantiser off for a warm-up.
 *
 *   loss = mean((recon - x)^2) + l1 * mean(|recon - x|)
 *        + mean((e - stopgrad(z))^2)            (codebook loss: moves the codes)
 *        + beta * mean((z - stopgrad(e))^2)     (commitment loss: keeps z near its code)
 *
 * This is the original VQ-VAE objective (van den Oord et al.); the trainer
 * may instead move the codebook by EMA (it then gets no gradient). Weights are graph inputs named exactly as the
 * diffusers checkpoint names them, so a trained set is saved as-is.
 */
import { GraphBuilder, type Value } from './onnx/builder.js';
import { Tape, type TVal } from './autodiff.js';
import {
  expectedVqTensors,
  VQ_NORM_EPS,
  type VqConfig,
  type VqTensorSpec,
} from '../checkpoint/vq-config.js';

export const VQ_TRAIN_IO = {
  pixels: 'pixels',
  /**
   * float32 []: 1 quantises (the VQ-VAE), 0 passes z to the decoder unquantised
   * and drops the commitment term (an autoencoder warm-up); the codes are
   * still picked and output either way.
   */
  quantGate: 'quant_gate',
  loss: 'loss',
  mse: 'recon_mse',
  l1: 'recon_l1',
  codebook: 'codebook_loss',
  commit: 'commit_loss',
  /** int64 [B * h * w]: code per cell, image-major then row-major. */
  indices: 'indices',
  /** float32 [B * h * w, vq_embed_dim]: the encoder's z per cell (before quantisation). */
  latents: 'latents',
  /** float32 [B, out_channels, H, W]: the decoder's output before the clip. */
  recon: 'recon',
  grad: (name: string): string => `grad.${name}`,
} as const;

export interface VqTrainGraphOptions {
  batch: number;
  height: number;
  width: number;
  /** Commitment weight (VQ-VAE's beta; 0.25 there). */
  beta: number;
  /** Weight of an extra L1 reconstruction term (0 = MSE only). */
  l1?: number;
  /** Which weights get gradients (default all); the others are inputs the backward pass stops at. */
  trainable?: (name: string) => boolean;
  /**
   * Thumbnail targets (a fixed thumbnail codebook, shapes/vq-dictionary.ts):
   * each cell's target latent is its T x T block means (D must be
   * in_channels * T * T), the encoder learns it by regression (weight
   * `encoderWeight`, default 1; reported as the commitment term) and the
   * decoder learns to redraw the picture from the targets themselves, which
   * are the codes a right encoder picks. The codebook then gets no gradient.
   */
  thumbnail?: number;
  encoderWeight?: number;
}

export interface VqTrainGraph {
  bytes: Uint8Array;
  /** Every weight of the config, in input order. */
  params: VqTensorSpec[];
  /** The names among them with a gradient output. */
  trainable: Set<string>;
}

class TrainLayers {
  constructor(
    readonly t: Tape,
    readonly c: VqConfig,
    private readonly w: Map<string, TVal>,
  ) {}

  p(name: string): TVal {
    const v = this.w.get(name);
    if (!v) throw new Error(`internal: VQ training graph has no weight ${name}`);
    return v;
  }

  conv(
    x: TVal,
    prefix: string,
    opts: { stride?: number; pads?: [number, number, number, number] } = {},
  ): TVal {
    return this.t.conv2d(x, this.p(`${prefix}.weight`), this.p(`${prefix}.bias`), opts);
  }

  groupNorm(x: TVal, prefix: string): TVal {
    const t = this.t;
    const n = t.groupNormalize(x, this.c.normNumGroups, VQ_NORM_EPS);
    const chan = (name: string): TVal => t.reshape(this.p(name), [-1, 1, 1], [x.shape[1]!, 1, 1]);
    return t.add(t.mul(n, chan(`${prefix}.weight`)), chan(`${prefix}.bias`));
  }

  resnet(x: TVal, prefix: string, cin: number, cout: number): TVal {
    const t = this.t;
    let h = t.silu(this.groupNorm(x, `${prefix}.norm1`));
    h = this.conv(h, `${prefix}.conv1`);
    h = t.silu(this.groupNorm(h, `${prefix}.norm2`));
    h = this.conv(h, `${prefix}.conv2`);
    const skip = cin !== cout ? this.conv(x, `${prefix}.conv_shortcut`) : x;
    return t.add(skip, h);
  }

  /** Single-head self-attention over the positions, as graph/vq.ts (batched). */
  attention(x: TVal, prefix: string, ch: number): TVal {
    const t = this.t;
    const [B, , H, W] = x.shape as number[];
    const n = H! * W!;
    const h = this.groupNorm(x, `${prefix}.group_norm`);
    const tokens = t.reshape(t.transpose(t.reshape(h, [B!, ch, n]), [0, 2, 1]), [B! * n, ch]);
    const proj = (name: string, v: TVal): TVal =>
      t.linear(v, this.p(`${prefix}.${name}.weight`), this.p(`${prefix}.${name}.bias`));
    const q = t.reshape(proj('to_q', tokens), [B!, n, ch]);
    const k = t.reshape(proj('to_k', tokens), [B!, n, ch]);
    const v = t.reshape(proj('to_v', tokens), [B!, n, ch]);
    const scores = t.mul(t.matmul(q, t.transpose(k, [0, 2, 1])), t.scalar(1 / Math.sqrt(ch)));
    const attn = t.reshape(t.matmul(t.softmax(scores, -1), v), [B! * n, ch]);
    const out = t.reshape(proj('to_out.0', attn), [B!, n, ch]);
    const back = t.reshape(t.transpose(out, [0, 2, 1]), [B!, ch, H!, W!]);
    return t.add(back, x);
  }

  midBlock(x: TVal, prefix: string, ch: number): TVal {
    let h = this.resnet(x, `${prefix}.mid_block.resnets.0`, ch, ch);
    if (this.c.midBlockAddAttention) h = this.attention(h, `${prefix}.mid_block.attentions.0`, ch);
    return this.resnet(h, `${prefix}.mid_block.resnets.1`, ch, ch);
  }
}

/** Nearest codebook row per row of zf [N, D] with graph/vq.ts's arithmetic (so ties and rounding agree). */
function nearestCode(g: GraphBuilder, zf: Value, e: Value): Value {
  const zn = g.reduceSum(g.mul(zf, zf), [1], true);
  const zOnes = g.add(g.mul(zn, g.scalarF32(0)), g.scalarF32(1));
  const x1 = g.concat([g.mul(zf, g.scalarF32(-2)), zn, zOnes], 1);
  const en = g.reduceSum(g.mul(e, e), [1], true);
  const eOnes = g.add(g.mul(en, g.scalarF32(0)), g.scalarF32(1));
  const x2 = g.concat([e, eOnes, en], 1);
  const dist = g.sqrt(g.clip(g.gemmTransB(x1, x2), 1e-30, Infinity));
  return g.argMin(dist, 1, false);
}

export function buildVqTrainGraph(c: VqConfig, opts: VqTrainGraphOptions): VqTrainGraph {
  const { batch: B, height: H, width: W } = opts;
  const s = c.scaleFactor;
  if (!Number.isSafeInteger(B) || B < 1)
    throw new Error(`VQ training graph: batch must be >= 1, got ${B}`);
  if (H % s !== 0 || W % s !== 0 || H < s || W < s)
    throw new Error(
      `VQ training graph: ${W}x${H} is not a positive multiple of the scale factor ${s}`,
    );
  const g = new GraphBuilder('dimoo_vq_train');
  const t = new Tape(g, 'float32');
  const params = expectedVqTensors(c);
  // A thumbnail codebook is fixed: nothing in the loss reaches it.
  const fixedCodebook = (n: string): boolean =>
    opts.thumbnail !== undefined && n === 'quantize.embedding.weight';
  const trainable = new Set(
    params.map((p) => p.name).filter((n) => !fixedCodebook(n) && (opts.trainable?.(n) ?? true)),
  );
  if (trainable.size === 0) throw new Error('VQ training graph: no trainable weight');
  const w = new Map(
    params.map((p) => [p.name, t.input(p.name, 'float32', p.shape, trainable.has(p.name))]),
  );
  const L = new TrainLayers(t, c, w);
  const boc = c.blockOutChannels;
  const n = boc.length;
  const D = c.vqEmbedDim;
  const h0 = H / s;
  const w0 = W / s;
  const cells = B * h0 * w0;

  const x = t.input(VQ_TRAIN_IO.pixels, 'float32', [B, c.inChannels, H, W]);
  let h = L.conv(x, 'encoder.conv_in');
  for (let i = 0; i < n; i++) {
    const cin = i === 0 ? boc[0]! : boc[i - 1]!;
    const cout = boc[i]!;
    for (let j = 0; j < c.layersPerBlock; j++)
      h = L.resnet(h, `encoder.down_blocks.${i}.resnets.${j}`, j === 0 ? cin : cout, cout);
    if (i < n - 1)
      h = L.conv(h, `encoder.down_blocks.${i}.downsamplers.0.conv`, {
        stride: 2,
        pads: [0, 0, 1, 1],
      });
  }
  h = L.midBlock(h, 'encoder', boc[n - 1]!);
  h = t.silu(L.groupNorm(h, 'encoder.conv_norm_out'));
  h = L.conv(h, 'encoder.conv_out');
  const z = L.conv(h, 'quant_conv'); // [B, D, h0, w0]

  // Quantiser.
  const zf = t.reshape(t.transpose(z, [0, 2, 3, 1]), [cells, D]);
  const codebook = L.p('quantize.embedding.weight');
  const idx = nearestCode(g, g.identity(zf), g.identity(codebook));
  const gate = t.input(VQ_TRAIN_IO.quantGate, 'float32', []);
  let d: TVal;
  let codebookLoss: TVal;
  let commitLoss: TVal;
  let quantLoss: TVal;
  const T = opts.thumbnail;
  if (T !== undefined) {
    const b = s / T;
    if (!Number.isInteger(b) || D !== c.inChannels * T * T)
      throw new Error(
        `VQ training graph: ${T}x${T} thumbnails need a ${s}-pixel cell divisible by ${T} and vq_embed_dim ${c.inChannels * T * T} (got ${D})`,
      );
    // Block means per cell, ordered (channel, block row, block column).
    const blocks = t.reduceMean(t.reshape(x, [B, c.inChannels, h0, T, b, w0, T, b]), [4, 7], false);
    const thumb = t.reshape(t.transpose(blocks, [0, 2, 4, 1, 3, 5]), [cells, D]);
    commitLoss = t.reduceMean(t.pow(t.sub(zf, thumb), 2), [0, 1], false);
    codebookLoss = t.scalar(0);
    quantLoss = t.mul(commitLoss, t.scalar(opts.encoderWeight ?? 1));
    d = t.transpose(t.reshape(thumb, [B, h0, w0, D]), [0, 3, 1, 2]);
  } else {
    const q = t.gather(codebook, idx, [cells]); // [cells, D], gradient into the codebook rows
    const zs = t.stopGradient(zf);
    const qs = t.stopGradient(q);
    codebookLoss = t.reduceMean(t.pow(t.sub(q, zs), 2), [0, 1], false);
    commitLoss = t.reduceMean(t.pow(t.sub(zf, qs), 2), [0, 1], false);
    const zq = t.add(zf, t.mul(t.stopGradient(t.sub(qs, zs)), gate)); // gate 1: value q, gradient to z
    quantLoss = t.add(codebookLoss, t.mul(t.mul(commitLoss, gate), t.scalar(opts.beta)));
    d = t.transpose(t.reshape(zq, [B, h0, w0, D]), [0, 3, 1, 2]);
  }

  d = L.conv(d, 'post_quant_conv');
  d = L.conv(d, 'decoder.conv_in');
  d = L.midBlock(d, 'decoder', boc[n - 1]!);
  const rev = boc.slice().reverse();
  for (let i = 0; i < n; i++) {
    const cin = i === 0 ? rev[0]! : rev[i - 1]!;
    const cout = rev[i]!;
    for (let j = 0; j <= c.layersPerBlock; j++)
      d = L.resnet(d, `decoder.up_blocks.${i}.resnets.${j}`, j === 0 ? cin : cout, cout);
    if (i < n - 1) d = L.conv(t.upsample2x(d), `decoder.up_blocks.${i}.upsamplers.0.conv`);
  }
  d = t.silu(L.groupNorm(d, 'decoder.conv_norm_out'));
  const recon = L.conv(d, 'decoder.conv_out');

  const all = [0, 1, 2, 3];
  const diff = t.sub(recon, x);
  const mse = t.reduceMean(t.pow(diff, 2), all, false);
  let loss = t.add(mse, quantLoss);
  const l1w = opts.l1 ?? 0;
  let l1: TVal | null = null;
  if (l1w > 0) {
    // |d| as sqrt(d^2 + tiny): differentiable everywhere, within 1e-6 of |d|.
    l1 = t.reduceMean(t.sqrt(t.add(t.pow(diff, 2), t.scalar(1e-12))), all, false);
    loss = t.add(loss, t.mul(l1, t.scalar(l1w)));
  }

  const trained = params.filter((p) => trainable.has(p.name));
  const grads = t.gradients(
    loss,
    trained.map((p) => w.get(p.name)!),
  );
  g.output(loss, VQ_TRAIN_IO.loss, 'float32', []);
  g.output(mse, VQ_TRAIN_IO.mse, 'float32', []);
  g.output(l1 ?? g.scalarF32(0), VQ_TRAIN_IO.l1, 'float32', []);
  g.output(codebookLoss, VQ_TRAIN_IO.codebook, 'float32', []);
  g.output(commitLoss, VQ_TRAIN_IO.commit, 'float32', []);
  g.output(idx, VQ_TRAIN_IO.indices, 'int64', [cells]);
  g.output(g.identity(zf), VQ_TRAIN_IO.latents, 'float32', [cells, D]);
  g.output(recon, VQ_TRAIN_IO.recon, 'float32', [B, c.outChannels, H, W]);
  trained.forEach((p, i) => {
    const gr = grads[i];
    if (!gr) throw new Error(`internal: the VQ loss does not depend on ${p.name}`);
    g.output(gr, VQ_TRAIN_IO.grad(p.name), 'float32', p.shape);
  });
  return { bytes: g.toBytes('Lumina-DiMOO VQ-VAE training step'), params, trainable };
}
