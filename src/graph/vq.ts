/**
 * The VQ-VAE encoder and decoder as ONNX graphs, following diffusers'
 * VQModel arithmetic:
 *
 *  encoder: pixels [1, C, H, W] (values in [0, 1], no [-1, 1] normalisation)
 *    -> conv_in -> down blocks (resnets, then pad (0,1,0,1) + stride-2 3x3 conv)
 *    -> mid block (resnet, [attention], resnet) -> GroupNorm -> SiLU -> conv_out
 *    -> quant_conv -> nearest codebook entry per cell.
 *  decoder: codes [h, w] -> codebook rows -> post_quant_conv -> conv_in -> mid block
 *    -> up blocks (layers_per_block + 1 resnets, then nearest 2x + 3x3 conv)
 *    -> GroupNorm -> SiLU -> conv_out -> clip to [0, 1].
 *
 * Every GroupNorm here has eps 1e-6 (hard-coded in diffusers' Encoder/Decoder).
 * Weights are external data read straight from the .safetensors file; F16/BF16
 * weights get a Cast (folded by ORT when the session loads).
 */
import { GraphBuilder, type DType, type Value } from './onnx/builder.js';
import { VQ_NORM_EPS, type VqConfig } from '../checkpoint/vq-config.js';

/** Where one weight's bytes are. */
export interface VqWeightSource {
  dtype: 'F32' | 'F16' | 'BF16';
  shape: number[];
  /** File name relative to the session's external-data folder. */
  location: string;
  byteOffset: number;
  byteLength: number;
}

export type VqWeightLookup = (name: string) => VqWeightSource;

export const VQ_ENCODER_IO = {
  pixels: 'pixels',
  indices: 'indices',
  latents: 'latents',
  distances: 'distances',
} as const;

export const VQ_DECODER_IO = {
  codes: 'codes',
  image: 'image',
} as const;

const ONNX_DTYPE: Record<VqWeightSource['dtype'], DType> = {
  F32: 'float32',
  F16: 'float16',
  BF16: 'bfloat16',
};

/** Shared layer helpers over one builder. */
class VqLayers {
  private readonly groupConsts = new Map<number, { ones: Value; zeros: Value }>();

  constructor(
    readonly g: GraphBuilder,
    readonly c: VqConfig,
    private readonly weight: VqWeightLookup,
  ) {}

  /** A weight as float32 (external data, cast when stored narrower). */
  w(name: string): Value {
    const src = this.weight(name);
    const v = this.g.external(name, ONNX_DTYPE[src.dtype], src.shape, {
      location: src.location,
      offset: src.byteOffset,
      length: src.byteLength,
    });
    return src.dtype === 'F32' ? v : this.g.cast(v, 'float32');
  }

  /** Same weight viewed as [C, 1, 1] for broadcasting over NCHW. */
  wChan(name: string): Value {
    const src = this.weight(name);
    return this.g.reshape(this.w(name), [src.shape[0]!, 1, 1]);
  }

  conv(x: Value, prefix: string, opts: { strides?: number[]; pads?: number[] } = {}): Value {
    const k = this.weight(`${prefix}.weight`).shape[2]!;
    const pad = (k - 1) / 2;
    return this.g.conv(x, this.w(`${prefix}.weight`), this.w(`${prefix}.bias`), {
      strides: opts.strides,
      pads: opts.pads ?? [pad, pad, pad, pad],
    });
  }

  /**
   * torch GroupNorm: statistics over (channels of the group) x H x W, biased variance,
   * then per-channel affine. Built as InstanceNormalization on [1, G, C/G*H*W].
   */
  groupNorm(x: Value, prefix: string): Value {
    const g = this.g;
    const G = this.c.normNumGroups;
    let k = this.groupConsts.get(G);
    if (!k) {
      k = {
        ones: g.constF32(new Float32Array(G).fill(1), [G]),
        zeros: g.constF32(new Float32Array(G), [G]),
      };
      this.groupConsts.set(G, k);
    }
    const grouped = g.reshape(x, [1, G, -1]);
    const normed = g.instanceNorm(grouped, k.ones, k.zeros, VQ_NORM_EPS);
    const back = g.reshape(normed, g.shape(x));
    return g.add(g.mul(back, this.wChan(`${prefix}.weight`)), this.wChan(`${prefix}.bias`));
  }

  silu(x: Value): Value {
    return this.g.mul(x, this.g.sigmoid(x));
  }

  /** diffusers ResnetBlock2D without time embedding, output_scale_factor 1. */
  resnet(x: Value, prefix: string, cin: number, cout: number): Value {
    let h = this.silu(this.groupNorm(x, `${prefix}.norm1`));
    h = this.conv(h, `${prefix}.conv1`);
    h = this.silu(this.groupNorm(h, `${prefix}.norm2`));
    h = this.conv(h, `${prefix}.conv2`);
    const skip = cin !== cout ? this.conv(x, `${prefix}.conv_shortcut`) : x;
    return this.g.add(skip, h);
  }

  /**
   * Single-head self-attention over the H*W positions with a GroupNorm in front and a
   * residual connection (diffusers Attention built for the mid block: heads = 1,
   * dim_head = C, scale 1/sqrt(C), rescale_output_factor 1).
   */
  attention(x: Value, prefix: string, ch: number): Value {
    const g = this.g;
    const h = this.groupNorm(x, `${prefix}.group_norm`);
    // [1, C, H, W] -> [H*W, C]
    const tokens = g.transpose(g.reshape(h, [ch, -1]), [1, 0]);
    const proj = (name: string, t: Value): Value =>
      g.gemmTransB(t, this.w(`${prefix}.${name}.weight`), this.w(`${prefix}.${name}.bias`));
    const q = proj('to_q', tokens);
    const k = proj('to_k', tokens);
    const v = proj('to_v', tokens);
    const scores = g.mul(g.gemmTransB(q, k), g.scalarF32(1 / Math.sqrt(ch)));
    const attn = g.matmul(g.softmax(scores, 1), v);
    const out = proj('to_out.0', attn);
    const back = g.reshape(g.transpose(out, [1, 0]), g.shape(x));
    return g.add(back, x);
  }

  midBlock(x: Value, prefix: string, ch: number): Value {
    let h = this.resnet(x, `${prefix}.mid_block.resnets.0`, ch, ch);
    if (this.c.midBlockAddAttention) h = this.attention(h, `${prefix}.mid_block.attentions.0`, ch);
    return this.resnet(h, `${prefix}.mid_block.resnets.1`, ch, ch);
  }
}

export interface VqEncoderGraphOptions {
  /** Also output the [cells, codebook] euclidean distance matrix (diagnostics and tests). */
  distances?: boolean;
}

/**
 * Inputs: `pixels` float32 [1, in_channels, H, W] (H, W multiples of the scale factor).
 * Outputs: `indices` int64 [h*w] (row-major cells), `latents` float32 [1, vq_embed_dim, h, w]
 * (after quant_conv, before quantisation), optionally `distances` float32 [h*w, num_vq_embeddings].
 */
export function buildVqEncoderGraph(
  c: VqConfig,
  weight: VqWeightLookup,
  opts: VqEncoderGraphOptions = {},
): Uint8Array {
  const g = new GraphBuilder('dimoo_vq_encoder');
  const L = new VqLayers(g, c, weight);
  const boc = c.blockOutChannels;
  const n = boc.length;
  const x = g.input(VQ_ENCODER_IO.pixels, 'float32', [1, c.inChannels, 'H', 'W']);

  let h = L.conv(x, 'encoder.conv_in');
  for (let i = 0; i < n; i++) {
    const cin = i === 0 ? boc[0]! : boc[i - 1]!;
    const cout = boc[i]!;
    for (let j = 0; j < c.layersPerBlock; j++) {
      h = L.resnet(h, `encoder.down_blocks.${i}.resnets.${j}`, j === 0 ? cin : cout, cout);
    }
    if (i < n - 1) {
      // Downsample2D with padding=0 pads right and bottom by one, then a stride-2 conv.
      h = L.conv(h, `encoder.down_blocks.${i}.downsamplers.0.conv`, {
        strides: [2, 2],
        pads: [0, 0, 1, 1],
      });
    }
  }
  h = L.midBlock(h, 'encoder', boc[n - 1]!);
  h = L.silu(L.groupNorm(h, 'encoder.conv_norm_out'));
  h = L.conv(h, 'encoder.conv_out');
  const z = L.conv(h, 'quant_conv');
  g.output(z, VQ_ENCODER_IO.latents, 'float32', [1, c.vqEmbedDim, 'h', 'w']);

  // Distances as torch.cdist computes them for more than 25 rows: one matmul of
  // [-2z, |z|^2, 1] with [e, 1, |e|^2], clamped at 1e-30, square-rooted; argmin
  // then takes the first of equal values, as torch.argmin does.
  const D = c.vqEmbedDim;
  const zf = g.reshape(g.transpose(z, [0, 2, 3, 1]), [-1, D]);
  const zn = g.reduceSum(g.mul(zf, zf), [1], true);
  const zOnes = g.add(g.mul(zn, g.scalarF32(0)), g.scalarF32(1));
  const x1 = g.concat([g.mul(zf, g.scalarF32(-2)), zn, zOnes], 1);
  const e = L.w('quantize.embedding.weight');
  const en = g.reduceSum(g.mul(e, e), [1], true);
  const eOnes = g.add(g.mul(en, g.scalarF32(0)), g.scalarF32(1));
  const x2 = g.concat([e, eOnes, en], 1);
  const d2 = g.gemmTransB(x1, x2);
  const dist = g.sqrt(g.clip(d2, 1e-30, Infinity));
  const idx = g.argMin(dist, 1, false);
  g.output(idx, VQ_ENCODER_IO.indices, 'int64', ['N']);
  if (opts.distances) g.output(dist, VQ_ENCODER_IO.distances, 'float32', ['N', c.numVqEmbeddings]);
  return g.toBytes('Lumina-DiMOO VQ-VAE encoder (diffusers VQModel)');
}

/**
 * Inputs: `codes` int64 [h, w] codebook indices.
 * Output: `image` float32 [1, out_channels, 16h, 16w] (scale factor for 5 blocks), clipped to [0, 1].
 */
export function buildVqDecoderGraph(c: VqConfig, weight: VqWeightLookup): Uint8Array {
  const g = new GraphBuilder('dimoo_vq_decoder');
  const L = new VqLayers(g, c, weight);
  const boc = c.blockOutChannels;
  const n = boc.length;
  const codes = g.input(VQ_DECODER_IO.codes, 'int64', ['h', 'w']);

  // get_codebook_entry: rows [h, w, D] -> [1, D, h, w]
  const rows = g.gather(L.w('quantize.embedding.weight'), codes, 0);
  const quant = g.unsqueeze(g.transpose(rows, [2, 0, 1]), [0]);
  let h = L.conv(quant, 'post_quant_conv');
  h = L.conv(h, 'decoder.conv_in');
  h = L.midBlock(h, 'decoder', boc[n - 1]!);
  const rev = boc.slice().reverse();
  for (let i = 0; i < n; i++) {
    const cin = i === 0 ? rev[0]! : rev[i - 1]!;
    const cout = rev[i]!;
    for (let j = 0; j <= c.layersPerBlock; j++) {
      h = L.resnet(h, `decoder.up_blocks.${i}.resnets.${j}`, j === 0 ? cin : cout, cout);
    }
    if (i < n - 1) {
      h = g.resizeNearest(h, [1, 1, 2, 2]);
      h = L.conv(h, `decoder.up_blocks.${i}.upsamplers.0.conv`);
    }
  }
  h = L.silu(L.groupNorm(h, 'decoder.conv_norm_out'));
  h = L.conv(h, 'decoder.conv_out');
  const img = g.clip(h, 0, 1);
  g.output(img, VQ_DECODER_IO.image, 'float32', [1, c.outChannels, 'H', 'W']);
  return g.toBytes('Lumina-DiMOO VQ-VAE decoder (diffusers VQModel)');
}
