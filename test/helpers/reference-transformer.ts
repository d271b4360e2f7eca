/**
 * A deliberately naive float64 LLaDA forward in plain TypeScript, written
 * straight from the architecture description (no ONNX), used to check the
 * graph on shapes the golden checkpoint does not cover (grouped K/V heads,
 * other theta/eps). Only for tiny models.
 */
import type { Checkpoint } from '../../src/checkpoint/layout.js';
import { readTensorFloat32 } from '../../src/checkpoint/safetensors.js';

export function referenceForward(ckpt: Checkpoint, ids: number[]): Float64Array {
  const c = ckpt.config;
  const w = (name: string) => readTensorFloat32(ckpt.weights.get(`model.transformer.${name}`)!);
  const d = c.dModel;
  const hd = c.headDim;
  const L = ids.length;
  const rep = c.nHeads / c.nKvHeads;
  const wte = w('wte.weight');
  let x: Float64Array[] = ids.map((id) => Float64Array.from(wte.subarray(id * d, (id + 1) * d)));
  const norm = (v: Float64Array, weight: Float32Array) => {
    let ms = 0;
    for (const a of v) ms += a * a;
    const r = 1 / Math.sqrt(ms / v.length + c.rmsNormEps);
    return v.map((a, i) => a * r * weight[i]!);
  };
  const lin = (v: Float64Array, W: Float32Array, out: number) => {
    const y = new Float64Array(out);
    for (let o = 0; o < out; o++) {
      let s = 0;
      for (let i = 0; i < v.length; i++) s += v[i]! * W[o * v.length + i]!;
      y[o] = s;
    }
    return y;
  };
  const rope = (v: Float64Array, pos: number, head: number) => {
    const half = hd / 2;
    const out = new Float64Array(hd);
    for (let j = 0; j < half; j++) {
      const inv = 1 / Math.pow(c.ropeTheta, (2 * j) / hd);
      const a = pos * inv;
      const x1 = v[head * hd + j]!;
      const x2 = v[head * hd + half + j]!;
      out[j] = x1 * Math.cos(a) - x2 * Math.sin(a);
      out[half + j] = x2 * Math.cos(a) + x1 * Math.sin(a);
    }
    return out;
  };
  for (let l = 0; l < c.nLayers; l++) {
    const b = `blocks.${l}.`;
    const h = x.map((v) => norm(v, w(b + 'attn_norm.weight')));
    const q = h.map((v) => lin(v, w(b + 'q_proj.weight'), d));
    const k = h.map((v) => lin(v, w(b + 'k_proj.weight'), c.nKvHeads * hd));
    const vv = h.map((v) => lin(v, w(b + 'v_proj.weight'), c.nKvHeads * hd));
    const att = x.map(() => new Float64Array(d));
    for (let head = 0; head < c.nHeads; head++) {
      const kvh = Math.floor(head / rep);
      const ks = k.map((kv, p) => rope(kv, p, kvh));
      for (let i = 0; i < L; i++) {
        const qi = rope(q[i]!, i, head);
        const s = ks.map((kj) => qi.reduce((acc, a, t) => acc + a * kj[t]!, 0) / Math.sqrt(hd));
        const m = Math.max(...s);
        const e = s.map((a) => Math.exp(a - m));
        const z = e.reduce((a, bb) => a + bb, 0);
        for (let j = 0; j < L; j++)
          for (let t = 0; t < hd; t++) att[i]![head * hd + t]! += (e[j]! / z) * vv[j]![kvh * hd + t]!;
      }
    }
    const hRes = x.map((v, i) => v.map((a, t) => a + lin(att[i]!, w(b + 'attn_out.weight'), d)[t]!));
    x = hRes.map((v) => {
      const f = norm(v, w(b + 'ff_norm.weight'));
      const gate = lin(f, w(b + 'ff_proj.weight'), c.mlpHiddenSize);
      const up = lin(f, w(b + 'up_proj.weight'), c.mlpHiddenSize);
      const act = gate.map((gg, i) => (gg / (1 + Math.exp(-gg))) * up[i]!);
      const o = lin(act, w(b + 'ff_out.weight'), d);
      return v.map((a, t) => a + o[t]!);
    });
  }
  const head = w(c.weightTying ? 'wte.weight' : 'ff_out.weight');
  const out = new Float64Array(L * c.embeddingSize);
  x.forEach((v, i) => out.set(lin(norm(v, w('ln_f.weight')), head, c.embeddingSize), i * c.embeddingSize));
  return out;
}
