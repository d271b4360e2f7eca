/**
 * An encoder that outputs each cell's thumbnail exactly, as VQModel weights.
 *
 * With the thumbnail codebook (vq-dictionary.ts) the right code of a cell is
 * the row nearest its thumbnail: block means, a linear function of the
 * pixels. The learnt encoder only approximates it, and a small error snaps a
 * cell to a look-alike row: the shipped VQ-VAE gave 41% of the data set's
 * cells (40% of plain background cells) another code than their thumbnail's,
 * noise the transformer then had to model. VQModel's encoder can compute the
 * thumbnail exactly, so these weights are constructed, not learnt:
 *
 * - conv_in copies the pixels, scaled by a tiny `s`;
 * - every resnet is the identity (conv2 zero; the 1x1 shortcut copies);
 * - the first log2(cell / T) downsamplers average 2x2 pixels, the remaining
 *   log2(T) move each 2x2 block into channels (space to depth), so the last
 *   level holds the 3*T*T thumbnail values of its cell;
 * - conv_norm_out: the values are so small (variance ~s^2, far below eps)
 *   that GroupNorm only subtracts the group mean and multiplies by
 *   1/sqrt(eps); its gain undoes that scale and its bias (+20) puts every
 *   channel where SiLU is the identity to float32 precision;
 * - conv_out subtracts a zero channel of the same group (which carries the
 *   same mean and bias) and puts the values in the thumbnail's order;
 *   quant_conv is the identity.
 */
import { VQ_NORM_EPS, expectedVqTensors, type VqConfig } from '../checkpoint/vq-config.js';

/** Weights keyed by diffusers name: every encoder.* tensor and quant_conv. */
export type EncoderWeights = Map<string, { shape: number[]; data: Float32Array }>;

/** Bias that puts every channel where float32 SiLU(x) == x. */
const SILU_LINEAR_BIAS = 20;

interface Signal {
  ch: number;
  c: number;
  by: number;
  bx: number;
}

function log2Exact(x: number, what: string): number {
  const l = Math.log2(x);
  if (!Number.isInteger(l) || l < 0) throw new Error(`${what} (${x}) is not a power of two`);
  return l;
}

/** The exact thumbnail encoder for a VQ config and thumbnail size T (see the header). */
export function exactThumbnailEncoder(c: VqConfig, T: number): EncoderWeights {
  const boc = c.blockOutChannels;
  const n = boc.length;
  const cell = 2 ** (n - 1);
  if (!Number.isInteger(cell / T))
    throw new Error(`thumbnail size ${T} does not divide the ${cell}-pixel cell`);
  const avg = log2Exact(cell / T, 'cell / thumbnail size');
  const D = c.inChannels * T * T;
  if (c.vqEmbedDim !== D || c.latentChannels < D)
    throw new Error(
      `an exact ${T}x${T} thumbnail encoder needs vq_embed_dim ${D} (and latent_channels >= ${D}); the config has ${c.vqEmbedDim} / ${c.latentChannels}`,
    );
  const s = 1e-3 * Math.sqrt(VQ_NORM_EPS);

  const out: EncoderWeights = new Map();
  for (const t of expectedVqTensors(c)) {
    if (!t.name.startsWith('encoder.') && !t.name.startsWith('quant_conv.')) continue;
    const size = t.shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(size);
    // Norms start as plain normalisations; everything else zero unless set below.
    if (/norm[^.]*\.weight$/.test(t.name)) data.fill(1);
    out.set(t.name, { shape: [...t.shape], data });
  }
  const w = (name: string): { shape: number[]; data: Float32Array } => {
    const t = out.get(name);
    if (!t) throw new Error(`exact encoder: the config has no tensor ${name}`);
    return t;
  };
  /** Set conv weight [cout, cin, kh, kw] at (o, i, y, x). */
  const setConv = (name: string, o: number, i: number, y: number, x: number, v: number): void => {
    const t = w(name);
    const [, cin, kh, kw] = t.shape as [number, number, number, number];
    t.data[((o * cin + i) * kh + y) * kw + x] = v;
  };
  const centre = (name: string): [number, number] => {
    const t = w(name);
    return [(t.shape[2]! - 1) / 2, (t.shape[3]! - 1) / 2];
  };
  const need = (m: number, ch: number, where: string): void => {
    if (m > ch) throw new Error(`exact encoder: ${where} has ${ch} channels, needs ${m}`);
  };

  let sig: Signal[] = [];
  need(c.inChannels, boc[0]!, 'encoder.conv_in');
  const [cy, cx] = centre('encoder.conv_in.weight');
  for (let ch = 0; ch < c.inChannels; ch++) {
    setConv('encoder.conv_in.weight', ch, ch, cy, cx, s);
    sig.push({ ch, c: ch, by: 0, bx: 0 });
  }
  const identityShortcut = (prefix: string, cout: number): void => {
    need(sig.length, cout, `${prefix}.conv_shortcut`);
    for (const q of sig) setConv(`${prefix}.conv_shortcut.weight`, q.ch, q.ch, 0, 0, 1);
  };
  let s2d = 0;
  for (let i = 0; i < n; i++) {
    const cin = i === 0 ? boc[0]! : boc[i - 1]!;
    for (let j = 0; j < c.layersPerBlock; j++) {
      const from = j === 0 ? cin : boc[i]!;
      if (from !== boc[i]) identityShortcut(`encoder.down_blocks.${i}.resnets.${j}`, boc[i]!);
    }
    if (i === n - 1) break;
    const name = `encoder.down_blocks.${i}.downsamplers.0.conv.weight`;
    if (i < avg) {
      for (const q of sig)
        for (let dy = 0; dy < 2; dy++)
          for (let dx = 0; dx < 2; dx++) setConv(name, q.ch, q.ch, dy, dx, 0.25);
    } else {
      need(sig.length * 4, boc[i]!, `encoder.down_blocks.${i}.downsamplers.0`);
      const next: Signal[] = [];
      for (const q of sig)
        for (let dy = 0; dy < 2; dy++)
          for (let dx = 0; dx < 2; dx++) {
            const ch = q.ch * 4 + dy * 2 + dx;
            setConv(name, ch, q.ch, dy, dx, 1);
            next.push({ ch, c: q.c, by: q.by + dy * 2 ** s2d, bx: q.bx + dx * 2 ** s2d });
          }
      sig = next;
      s2d++;
    }
  }

  // GroupNorm: gain 1/s * sqrt(eps) (the normalisation divides by ~sqrt(eps)),
  // bias into SiLU's linear range; each signal is read against a zero channel of its group.
  const C = boc[n - 1]!;
  const G = c.normNumGroups;
  const per = C / G;
  const gain = w('encoder.conv_norm_out.weight').data;
  const bias = w('encoder.conv_norm_out.bias').data;
  gain.fill(Math.sqrt(VQ_NORM_EPS) / s);
  bias.fill(SILU_LINEAR_BIAS);
  const used = new Set(sig.map((q) => q.ch));
  const refOf = (ch: number): number => {
    const g0 = Math.floor(ch / per) * per;
    for (let k = g0; k < g0 + per; k++) if (!used.has(k)) return k;
    throw new Error(
      `exact encoder: norm group ${g0 / per} of encoder.conv_norm_out has no free channel to read against`,
    );
  };
  const [oy, ox] = centre('encoder.conv_out.weight');
  for (const q of sig) {
    const j = (q.c * T + q.by) * T + q.bx;
    setConv('encoder.conv_out.weight', j, q.ch, oy, ox, 1);
    setConv('encoder.conv_out.weight', j, refOf(q.ch), oy, ox, -1);
  }
  for (let j = 0; j < D; j++) setConv('quant_conv.weight', j, j, 0, 0, 1);
  return out;
}
