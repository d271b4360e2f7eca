/**
 * The VQ-VAE image tokenizer on ONNX Runtime: RGB pixels <-> codebook indices.
 *
 * Pixels go in and out through `processor` (image/processor.ts, diffusers'
 * VaeImageProcessor(do_normalize=False) for PIL input: sizes not divisible by
 * the scale factor are first resized down to the nearest multiple with PIL's
 * Lanczos, then values become u8 / 255 in float32). Decoding ends like
 * decode_vq_to_image: clip to [0, 1] in the graph, then x255 in float32,
 * round half to even.
 *
 * Sessions are built on first use (an encode-only run never builds the decoder).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DimooError } from '../errors.js';
import type { RgbImage } from '../image/image.js';
import { ImageProcessor } from '../image/processor.js';
import { createSession, Tensor, type InferenceSession, type Device } from './device.js';
import { blameWeights, firstNonFinite } from '../checkpoint/nonfinite.js';
import { SafetensorsFile, type TensorInfo } from '../checkpoint/safetensors.js';
import {
  checkVqWeights,
  loadVqConfig,
  VQ_WEIGHTS_FILE,
  type VqConfig,
} from '../checkpoint/vq-config.js';
import {
  buildVqDecoderGraph,
  buildVqEncoderGraph,
  VQ_DECODER_IO,
  VQ_ENCODER_IO,
  type VqWeightLookup,
} from '../graph/vq.js';

export interface VqLoadOptions {
  /** Intra-op threads (default: ORT's choice). */
  threads?: number;
  /** Execution device (default cpu). */
  device?: Device;
}

export interface CodeGrid {
  gridH: number;
  gridW: number;
  /** Row-major codebook indices. */
  codes: Int32Array;
}

export interface EncodeFloatResult extends CodeGrid {
  /** [vq_embed_dim, gridH, gridW] after quant_conv. */
  latents: Float32Array;
  /** [gridH * gridW, num_vq_embeddings] euclidean distances, when asked for. */
  distances?: Float32Array;
}

export interface Preprocessed {
  /** [3, height, width] in [0, 1]. */
  pixels: Float32Array;
  width: number;
  height: number;
}

export class VqModel {
  private encoderSession?: Promise<InferenceSession>;
  private encoderDistSession?: Promise<InferenceSession>;
  private decoderSession?: Promise<InferenceSession>;

  private constructor(
    readonly dir: string,
    readonly config: VqConfig,
    private readonly weight: VqWeightLookup,
    /** The checked weights, scanned only when a decode comes out non-finite. */
    private readonly tensors: ReadonlyMap<string, TensorInfo>,
    private readonly dataFolder: string,
    private readonly threads: number | undefined,
    readonly device: Device = 'cpu',
  ) {
    this.processor = new ImageProcessor(config.scaleFactor);
  }

  /** Pixels in and out of the token grid (sizes, crops, u8 <-> float). */
  readonly processor: ImageProcessor;

  /** Pixels per token side (16 for aMUSEd). */
  get scale(): number {
    return this.config.scaleFactor;
  }

  get codebookSize(): number {
    return this.config.numVqEmbeddings;
  }

  /** Reads vqvae/config.json and checks the weights against it; ORT sessions come later. */
  static async load(vqDir: string, opts: VqLoadOptions = {}): Promise<VqModel> {
    const dir = path.resolve(vqDir);
    const config = loadVqConfig(dir);
    const file = path.join(dir, VQ_WEIGHTS_FILE);
    if (!fs.existsSync(file)) {
      throw new DimooError(`${file}: VQ-VAE weights not found`, 'E_CHECKPOINT');
    }
    // ORT refuses external data outside its folder after resolving links (Hub caches link to blobs/),
    // so point it at the real file's own folder.
    const real = fs.realpathSync(file);
    const st = SafetensorsFile.open(real);
    const weights = checkVqWeights(config, st.tensors, file);
    const location = path.basename(real);
    const weight: VqWeightLookup = (name) => {
      const w = weights.get(name);
      if (!w) throw new Error(`internal: VQ weight ${name} was not checked`);
      return {
        dtype: w.dtype as 'F32' | 'F16' | 'BF16',
        shape: w.shape,
        location,
        byteOffset: w.byteOffset,
        byteLength: w.byteLength,
      };
    };
    return new VqModel(
      dir,
      config,
      weight,
      st.tensors,
      path.dirname(real),
      opts.threads,
      opts.device,
    );
  }

  private createSession(bytes: Uint8Array, what: string): Promise<InferenceSession> {
    return createSession(
      bytes,
      {
        device: this.device,
        threads: this.threads,
        externalDataFolder: this.dataFolder,
        // Activations reach GBs at 1024 px and the arena kept growing across runs (8.4 GB peak for a
        // 1024 px decode of the aMUSEd-size VQ, 3.9 GB without it, given back after each run).
        cpuMemArena: false,
      },
      `${this.dir}: ONNX Runtime could not load the VQ ${what}`,
    );
  }

  private encoder(distances: boolean): Promise<InferenceSession> {
    if (distances) {
      this.encoderDistSession ??= this.createSession(
        buildVqEncoderGraph(this.config, this.weight, { distances: true }),
        'encoder',
      );
      return this.encoderDistSession;
    }
    this.encoderSession ??= this.createSession(
      buildVqEncoderGraph(this.config, this.weight),
      'encoder',
    );
    return this.encoderSession;
  }

  private decoder(): Promise<InferenceSession> {
    this.decoderSession ??= this.createSession(
      buildVqDecoderGraph(this.config, this.weight),
      'decoder',
    );
    return this.decoderSession;
  }

  /** VaeImageProcessor.preprocess: sides floored to the scale factor (Lanczos) if needed, then u8/255. */
  preprocess(rgb: RgbImage): Preprocessed {
    const img = this.processor.fitToScale(rgb, 'image to encode');
    return { pixels: this.processor.toPixels(img), width: img.width, height: img.height };
  }

  /** Encoder on preprocessed pixels [3, height, width]; latents and optionally all distances. */
  async encodeFloat(
    pixels: Float32Array,
    width: number,
    height: number,
    opts: { distances?: boolean } = {},
  ): Promise<EncodeFloatResult> {
    const s = this.scale;
    const C = this.config.inChannels;
    if (width % s !== 0 || height % s !== 0 || width < s || height < s) {
      throw new DimooError(
        `encoder input ${width}x${height}: both sides must be positive multiples of ${s}`,
        'E_IMAGE',
      );
    }
    if (pixels.length !== C * width * height) {
      throw new DimooError(
        `encoder input: ${pixels.length} values for ${C}x${height}x${width}`,
        'E_IMAGE',
      );
    }
    const session = await this.encoder(opts.distances ?? false);
    const fetches: string[] = [VQ_ENCODER_IO.indices, VQ_ENCODER_IO.latents];
    if (opts.distances) fetches.push(VQ_ENCODER_IO.distances);
    const out = await session.run(
      { [VQ_ENCODER_IO.pixels]: new Tensor('float32', pixels, [1, C, height, width]) },
      fetches,
    );
    const idx = out[VQ_ENCODER_IO.indices]!.data as BigInt64Array;
    const codes = new Int32Array(idx.length);
    for (let i = 0; i < idx.length; i++) codes[i] = Number(idx[i]!);
    const res: EncodeFloatResult = {
      gridH: height / s,
      gridW: width / s,
      codes,
      latents: out[VQ_ENCODER_IO.latents]!.data as Float32Array,
    };
    if (opts.distances) res.distances = out[VQ_ENCODER_IO.distances]!.data as Float32Array;
    return res;
  }

  /** RGB image -> token grid (after the VaeImageProcessor resize when the size is not a multiple of 16). */
  async encode(rgb: RgbImage): Promise<CodeGrid> {
    if (this.config.inChannels !== 3) {
      throw new DimooError(
        `vqvae/config.json: in_channels is ${this.config.inChannels}; RGB encoding needs 3`,
        'E_CONFIG',
      );
    }
    const p = this.preprocess(rgb);
    const r = await this.encodeFloat(p.pixels, p.width, p.height);
    return { gridH: r.gridH, gridW: r.gridW, codes: r.codes };
  }

  private checkCodes(codes: ArrayLike<number>, gridH: number, gridW: number): BigInt64Array {
    if (!Number.isSafeInteger(gridH) || !Number.isSafeInteger(gridW) || gridH < 1 || gridW < 1) {
      throw new DimooError(
        `image token grid ${gridW}x${gridH}: both sides must be positive integers`,
        'E_PARAM',
      );
    }
    if (codes.length !== gridH * gridW) {
      throw new DimooError(
        `image tokens: ${codes.length} codes do not fill a ${gridW}x${gridH} grid (${gridH * gridW})`,
        'E_PARAM',
      );
    }
    const K = this.config.numVqEmbeddings;
    const out = new BigInt64Array(codes.length);
    for (let i = 0; i < codes.length; i++) {
      const c = codes[i]!;
      if (!Number.isInteger(c) || c < 0 || c >= K) {
        throw new DimooError(
          `image tokens: code ${c} at position ${i} is outside the codebook [0, ${K})`,
          'E_PARAM',
        );
      }
      out[i] = BigInt(c);
    }
    return out;
  }

  /** Decoder output, clipped to [0, 1]: [out_channels, 16*gridH, 16*gridW]. */
  async decodeFloat(codes: ArrayLike<number>, gridH: number, gridW: number): Promise<Preprocessed> {
    const ids = this.checkCodes(codes, gridH, gridW);
    const session = await this.decoder();
    const out = await session.run({
      [VQ_DECODER_IO.codes]: new Tensor('int64', ids, [gridH, gridW]),
    });
    return {
      pixels: out[VQ_DECODER_IO.image]!.data as Float32Array,
      width: gridW * this.scale,
      height: gridH * this.scale,
    };
  }

  /** Token grid -> 8-bit RGB, as decode_vq_to_image. */
  async decode(
    codes: ArrayLike<number>,
    gridH: number,
    gridW: number,
  ): Promise<{ data: Uint8Array; width: number; height: number; channels: 3 }> {
    if (this.config.outChannels !== 3) {
      throw new DimooError(
        `vqvae/config.json: out_channels is ${this.config.outChannels}; RGB decoding needs 3`,
        'E_CONFIG',
      );
    }
    const f = await this.decodeFloat(codes, gridH, gridW);
    // Clipping to 8 bits would turn NaN into black pixels and exit 0: refuse instead.
    if (firstNonFinite(f.pixels) >= 0) {
      throw new DimooError(
        `VQ-VAE decoder produced NaN/Inf pixels${blameWeights(this.tensors.values())}`,
        'E_NONFINITE',
      );
    }
    return {
      data: this.processor.toRgb8(f.pixels, f.width, f.height),
      width: f.width,
      height: f.height,
      channels: 3,
    };
  }

  async dispose(): Promise<void> {
    for (const s of [this.encoderSession, this.encoderDistSession, this.decoderSession]) {
      if (s) await (await s).release();
    }
    this.encoderSession = this.encoderDistSession = this.decoderSession = undefined;
  }
}
