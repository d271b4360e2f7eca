/**
 * LoRA adapters in PEFT's layout (`adapter_config.json` +
 * `adapter_model.safetensors`, keys `base_model.model.<module>.lora_A.weight`
 * / `.lora_B.weight`), as `dimoo train --lora` writes them and the Python
 * ecosystem reads them. An adapted linear computes
 * y = x W^T + scale * (x A^T) B^T, scale = user scale * lora_alpha / r
 * (lora_alpha / sqrt(r) with use_rslora).
 *
 *   parseLoraRef("DIR[:SCALE]")              { dir, scale }
 *   loadLoraAdapters(refs, config)           Map<checkpoint weight name, LoraBranch[]>
 *   mergeLoraWeight(w, [N, K], branches)     W + sum of scale * B A (float32, a new array)
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DimooError } from '../errors.js';
import { expectedTensors } from './layout.js';
import type { LladaConfig } from './config.js';
import { readTensorFloat32, SafetensorsFile } from './safetensors.js';

export interface LoraRef {
  dir: string;
  /** Multiplies the adapter's own alpha / r (default 1). */
  scale?: number;
}

export interface LoraBranch {
  /** [r, K] row-major. */
  a: Float32Array;
  /** [N, r] row-major. */
  b: Float32Array;
  r: number;
  scale: number;
  /** Adapter folder, for messages. */
  source: string;
}

export const ADAPTER_CONFIG = 'adapter_config.json';
export const ADAPTER_WEIGHTS = 'adapter_model.safetensors';
const E = 'E_LORA';
const KEY = /^base_model\.model\.(.+)\.lora_([AB])(?:\.[A-Za-z0-9_-]+)?\.weight$/;

/** "DIR" or "DIR:SCALE" (the part after the last colon must be a number). */
export function parseLoraRef(raw: string): LoraRef {
  const i = raw.lastIndexOf(':');
  if (i > 0) {
    const tail = raw.slice(i + 1);
    if (/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(tail)) {
      const scale = Number(tail);
      if (!Number.isFinite(scale))
        throw new DimooError(`--lora ${raw}: scale must be a finite number`, 'E_PARAM');
      return { dir: raw.slice(0, i), scale };
    }
  }
  if (raw === '') throw new DimooError('--lora needs an adapter folder', 'E_PARAM');
  return { dir: raw };
}

function readConfig(dir: string): { r: number; alpha: number; rslora: boolean } {
  const file = path.join(dir, ADAPTER_CONFIG);
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const why = err.code === 'ENOENT' ? 'no such file (not a PEFT adapter folder?)' : err.message;
    throw new DimooError(`${file}: ${why}`, E);
  }
  const c = raw as Record<string, unknown>;
  const fail = (msg: string): never => {
    throw new DimooError(`${file}: ${msg}`, E);
  };
  if (typeof c !== 'object' || c === null) fail('expected a JSON object');
  if (c.peft_type !== undefined && c.peft_type !== 'LORA')
    fail(`peft_type is ${JSON.stringify(c.peft_type)}, only LORA is supported`);
  if (!Number.isSafeInteger(c.r) || (c.r as number) < 1)
    fail(`"r" must be a positive integer, got ${JSON.stringify(c.r)}`);
  const alpha = c.lora_alpha ?? c.r;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha))
    fail(`"lora_alpha" must be a number, got ${JSON.stringify(alpha)}`);
  if (c.use_dora === true) fail('DoRA adapters (use_dora) are not supported');
  if (c.fan_in_fan_out === true)
    fail('fan_in_fan_out adapters (Conv1D layouts) do not fit these linears');
  if (c.bias !== undefined && c.bias !== 'none')
    fail(`bias "${String(c.bias)}" is not supported (only "none")`);
  return { r: c.r as number, alpha: alpha as number, rslora: c.use_rslora === true };
}

/** The linears an adapter may target: every [out, in] weight of the blocks. */
function adaptableLinears(config: LladaConfig): Map<string, [number, number]> {
  const out = new Map<string, [number, number]>();
  for (const t of expectedTensors(config)) {
    if (t.shape.length === 2 && t.name.includes('.blocks.'))
      out.set(t.name, [t.shape[0]!, t.shape[1]!]);
  }
  return out;
}

/** Reads and checks the adapters against the model config. */
export function loadLoraAdapters(
  refs: readonly LoraRef[],
  config: LladaConfig,
): Map<string, LoraBranch[]> {
  const linears = adaptableLinears(config);
  const out = new Map<string, LoraBranch[]>();
  for (const ref of refs) {
    const dir = path.resolve(ref.dir);
    const userScale = ref.scale ?? 1;
    const cfg = readConfig(dir);
    const scale = (userScale * cfg.alpha) / (cfg.rslora ? Math.sqrt(cfg.r) : cfg.r);
    const file = path.join(dir, ADAPTER_WEIGHTS);
    if (!fs.existsSync(file)) throw new DimooError(`${file}: no such file`, E);
    const st = SafetensorsFile.open(file);
    const pairs = new Map<
      string,
      { a?: Float32Array; b?: Float32Array; aShape?: number[]; bShape?: number[] }
    >();
    for (const info of st.tensors.values()) {
      const m = KEY.exec(info.name);
      if (!m)
        throw new DimooError(
          `${file}: tensor "${info.name}" is not a PEFT LoRA key (base_model.model.<module>.lora_A/B.weight)`,
          E,
        );
      const weight = `${m[1]}.weight`;
      if (!linears.has(weight)) {
        throw new DimooError(
          `${file}: tensor "${info.name}" adapts ${weight}, which is not a linear of the blocks of this model`,
          E,
        );
      }
      const p = pairs.get(weight) ?? {};
      if (m[2] === 'A') {
        p.a = readTensorFloat32(info);
        p.aShape = info.shape;
      } else {
        p.b = readTensorFloat32(info);
        p.bShape = info.shape;
      }
      pairs.set(weight, p);
    }
    if (pairs.size === 0) throw new DimooError(`${file}: no LoRA tensors`, E);
    for (const [weight, p] of pairs) {
      const [n, k] = linears.get(weight)!;
      if (!p.a || !p.b)
        throw new DimooError(
          `${file}: ${weight} has lora_${p.a ? 'A' : 'B'} but no lora_${p.a ? 'B' : 'A'}`,
          E,
        );
      const r = cfg.r;
      const okA = p.aShape!.length === 2 && p.aShape![0] === r && p.aShape![1] === k;
      const okB = p.bShape!.length === 2 && p.bShape![0] === n && p.bShape![1] === r;
      if (!okA || !okB) {
        throw new DimooError(
          `${file}: ${weight} adapters are A [${p.aShape}] and B [${p.bShape}]; r = ${r} and the weight [${n}, ${k}] need A [${r}, ${k}] and B [${n}, ${r}]`,
          E,
        );
      }
      const list = out.get(weight) ?? [];
      list.push({ a: p.a, b: p.b, r, scale, source: dir });
      out.set(weight, list);
    }
  }
  return out;
}

/** W [N, K] + sum over branches of scale * B [N, r] A [r, K], in float32 (float64 sums). */
export function mergeLoraWeight(
  w: Float32Array,
  shape: readonly number[],
  branches: readonly LoraBranch[],
): Float32Array {
  const [n, k] = shape as [number, number];
  const out = new Float32Array(w);
  const row = new Float64Array(k);
  for (let i = 0; i < n; i++) {
    row.fill(0);
    for (const br of branches) {
      for (let j = 0; j < br.r; j++) {
        const c = br.scale * br.b[i * br.r + j]!;
        if (c === 0) continue;
        const off = j * k;
        for (let x = 0; x < k; x++) row[x] = row[x]! + c * br.a[off + x]!;
      }
    }
    for (let x = 0; x < k; x++) out[i * k + x] = w[i * k + x]! + row[x]!;
  }
  return out;
}
