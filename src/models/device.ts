/**
 * The ONNX Runtime backend: execution devices, session options per device,
 * session creation, a WebGPU probe, and errors that say what is missing when
 * WebGPU cannot start (webgpu-setup.ts diagnoses the machine).
 *
 * `cpu` is ORT's CPU provider. `webgpu` is the WebGPU (Dawn) provider that
 * onnxruntime-node bundles, with CPU as the fallback for nodes it has no
 * kernel for (ORT decides per node at session creation; the bf16 embedding
 * Gather, for instance, stays on the CPU and only the gathered rows move).
 * On Linux Dawn runs on Vulkan: it needs the Vulkan loader (libvulkan.so.1)
 * and a driver (an ICD): NVIDIA's, AMD's/Intel's Mesa drivers, or Mesa's
 * software rasterizer lavapipe (Mesa >= 25; Debian bookworm's Mesa 22 is too
 * old for Dawn).
 */
import * as fs from 'node:fs';
import * as ort from 'onnxruntime-node';

// The one module that imports onnxruntime-node: sessions and tensors reach the
// rest of the code through these names.
export { Tensor } from 'onnxruntime-node';
export type { InferenceSession } from 'onnxruntime-node';
import { DimooError } from '../errors.js';
import { f16BitsToF32, f32ToF16Scalar } from '../checkpoint/dtypes.js';
import { GraphBuilder } from '../graph/onnx/builder.js';
import { describeWebGpuSetup } from './webgpu-setup.js';

/**
 * ORT's start-up telemetry (on by default on Linux) matches regular expressions
 * against /proc/self/cmdline with a recursive matcher: a long command line (a
 * 20 000-character `--prompt`) overflows the stack and the process dies with
 * SIGSEGV (from ~7 000 prompt tokens on a worker thread's 4 MB stack). Turned
 * off before ORT creates its environment (at the first session). A worker
 * thread's `process.env` is a copy, so `WorkerDimoo` does the same on the
 * spawning thread, where it reaches the real environment.
 */
/**
 * Whether this CPU's integer GEMM (MLAS uint8 x int8) adds pairs of products in
 * saturating int16: x86-64 without VNNI (AVX2's vpmaddubsw). Then 8-bit
 * activations overflow (2 x 255 x 127 > 32767; measured on an AVX2-only EPYC:
 * logits relative L2 0.23) and 7-bit ones do not. VNNI (avx512_vnni, avx_vnni)
 * and ARM's dot products accumulate in int32. Unknown x86 CPUs (no
 * /proc/cpuinfo) count as saturating. DIMOO_INT8_ACTIVATION_BITS=7|8 overrides.
 */
export function int8GemmSaturates(): boolean {
  const env = process.env.DIMOO_INT8_ACTIVATION_BITS;
  if (env === '7' || env === '8') return env === '7';
  if (process.arch !== 'x64' && process.arch !== 'ia32') return false;
  try {
    return !/\b(avx512_vnni|avx_vnni)\b/.test(fs.readFileSync('/proc/cpuinfo', 'utf8'));
  } catch {
    return true;
  }
}

export function disableOrtTelemetry(): void {
  process.env['ORT_DISABLE_TELEMETRY'] ??= '1';
}
disableOrtTelemetry();

export type Device = 'cpu' | 'webgpu';

export interface SessionSpec {
  device: Device;
  /** Intra-op threads of the CPU provider (default: ORT's choice, all cores). */
  threads?: number;
  /** Folder that external-data locations are resolved against. */
  externalDataFolder?: string;
  /** ORT's CPU memory arena (default: on, ORT's default). */
  cpuMemArena?: boolean;
  /**
   * Let kernels repack constant weights at load (default: on). Off for quantized
   * checkpoints: MatMulNBits then reads its blocks straight from the memory-mapped
   * file (load in ~0.1 s, no second copy) at about the same speed.
   */
  prepack?: boolean;
  /**
   * ORT's memory patterns (default: on). Off for the transformer on CPU: its
   * shapes change from call to call (cond/uncond lengths, partial passes), and
   * ORT then keeps one planned block per shape set (measured: +0.6 GB peak for
   * the 1b preset at 512x512) for no speed gain.
   */
  memPattern?: boolean;
}

/** Session options for a device; the one place that knows per-device settings. */
export function sessionOptions(spec: SessionSpec): ort.InferenceSession.SessionOptions {
  const executionProviders: ort.InferenceSession.SessionOptions['executionProviders'] =
    spec.device === 'webgpu' ? [{ name: 'webgpu' }, 'cpu'] : ['cpu'];
  return {
    graphOptimizationLevel: 'all',
    executionProviders,
    ...(spec.threads ? { intraOpNumThreads: spec.threads } : {}),
    interOpNumThreads: 1,
    executionMode: 'sequential',
    // Per-node timings for finding where a run's time goes: ORT writes
    // PREFIX_<date>.json when the session is released.
    ...(process.env.DIMOO_ORT_PROFILE
      ? { enableProfiling: true, profileFilePrefix: process.env.DIMOO_ORT_PROFILE }
      : {}),
    ...(spec.cpuMemArena !== undefined ? { enableCpuMemArena: spec.cpuMemArena } : {}),
    ...(spec.memPattern !== undefined ? { enableMemPattern: spec.memPattern } : {}),
    // External data is resolved inside this folder (ORT refuses paths that leave it).
    ...(spec.externalDataFolder || spec.prepack === false
      ? {
          extra: {
            session: {
              ...(spec.externalDataFolder
                ? { model_external_initializers_file_folder_path: spec.externalDataFolder }
                : {}),
              ...(spec.prepack === false ? { disable_prepacking: '1' } : {}),
            },
          },
        }
      : {}),
  };
}

/** True when an ORT error message says the WebGPU provider found no usable adapter/device. */
function isWebGpuStartError(message: string): boolean {
  return /adapter|webgpu_context|RequestDevice|wgpu::|Dawn|vulkan/i.test(message);
}

/**
 * Creates a session on `spec.device`. ORT errors become E_RUNTIME DimooErrors
 * `${what}: ${ORT's message}` (what: e.g. "DIR: ONNX Runtime could not load the transformer");
 * a WebGPU provider that cannot start gives E_WEBGPU with a diagnosis of the
 * Vulkan setup (loader, drivers) instead of Dawn's bare message.
 */
export async function createSession(
  bytes: Uint8Array,
  spec: SessionSpec,
  what: string,
): Promise<ort.InferenceSession> {
  try {
    return await ort.InferenceSession.create(bytes, sessionOptions(spec));
  } catch (e) {
    const msg = (e as Error).message ?? String(e);
    if (spec.device === 'webgpu' && isWebGpuStartError(msg)) throw webGpuUnavailable(msg);
    throw new DimooError(`${what}: ${msg}`, 'E_RUNTIME');
  }
}

// ---- WebGPU availability -------------------------------------------------

export interface WebGpuStatus {
  available: boolean;
  /** The adapter runs float16 shaders (WebGPU feature shader-f16). */
  shaderF16: boolean;
  /** Why WebGPU is not available (with what is missing), when it is not. */
  reason?: string;
}

let probeResult: Promise<WebGpuStatus> | undefined;

/** Tiny graph y = x * x + x on `dtype` [4], to check that kernels compile and compute. */
function probeGraph(dtype: 'float32' | 'float16'): Uint8Array {
  const g = new GraphBuilder(`dimoo_webgpu_probe_${dtype}`);
  const x = g.input('x', dtype, [4]);
  g.output(g.add(g.mul(x, x), x), 'y', dtype, [4]);
  return g.toBytes('WebGPU probe');
}

async function runProbe(dtype: 'float32' | 'float16'): Promise<void> {
  // No CPU fallback: the session fails unless the WebGPU provider takes every node.
  const options: ort.InferenceSession.SessionOptions = {
    executionProviders: [{ name: 'webgpu' }],
    graphOptimizationLevel: 'disabled',
    extra: { session: { disable_cpu_ep_fallback: '1' } },
  };
  const session = await ort.InferenceSession.create(probeGraph(dtype), options);
  try {
    const xs = [1, 2, -3, 0.5];
    const want = xs.map((v) => v * v + v);
    const feed =
      dtype === 'float32'
        ? new ort.Tensor('float32', Float32Array.from(xs), [4])
        : new ort.Tensor('float16', Uint16Array.from(xs, f32ToF16Scalar), [4]);
    const out = await session.run({ x: feed });
    const y = out.y!;
    const got =
      dtype === 'float32'
        ? Array.from(y.data as Float32Array)
        : Array.from(y.data as Uint16Array, (h) => f16BitsToF32(h));
    if (got.some((v, i) => Math.abs(v - want[i]!) > 1e-3)) {
      throw new Error(
        `WebGPU ${dtype} probe computed ${got.join(', ')} instead of ${want.join(', ')}`,
      );
    }
  } finally {
    await session.release();
  }
}

/**
 * Whether ORT's WebGPU provider can run here, and whether it has float16
 * shaders. Runs two tiny graphs once per process (the provider's Dawn device is
 * process-wide); never throws.
 */
export function probeWebGpu(): Promise<WebGpuStatus> {
  probeResult ??= (async (): Promise<WebGpuStatus> => {
    try {
      await runProbe('float32');
    } catch (e) {
      const msg = (e as Error).message ?? String(e);
      return { available: false, shaderF16: false, reason: webGpuUnavailable(msg).message };
    }
    let shaderF16 = true;
    try {
      await runProbe('float16');
    } catch {
      shaderF16 = false;
    }
    return { available: true, shaderF16 };
  })();
  return probeResult;
}

/** Throws E_WEBGPU (with the diagnosis) unless the WebGPU provider can run here. */
export async function requireWebGpu(): Promise<WebGpuStatus> {
  const s = await probeWebGpu();
  if (!s.available) throw new DimooError(s.reason ?? 'WebGPU is not available', 'E_WEBGPU');
  return s;
}

/** Checks that float16 weights can run on `device` (WebGPU with shader-f16); throws a DimooError otherwise. */
export async function requireFp16(device: Device, precision = 'fp16'): Promise<void> {
  if (device !== 'webgpu') {
    throw new DimooError(
      `precision ${precision} needs device webgpu (ORT's CPU provider has no float16 matmul)`,
      'E_PARAM',
    );
  }
  const s = await requireWebGpu();
  if (!s.shaderF16) {
    throw new DimooError(
      `precision ${precision}: this WebGPU adapter lacks the shader-f16 feature; use fp32 (the default)`,
      'E_WEBGPU',
    );
  }
}

/** The E_WEBGPU error for an ORT/Dawn start failure, with what is missing. */
export function webGpuUnavailable(ortMessage: string): DimooError {
  const firstLine = ortMessage
    .split('\n')[0]!
    .replace(/^.*?(Failed to|No supported)/, '$1')
    .trim();
  const hint = describeWebGpuSetup();
  return new DimooError(
    `WebGPU is not available: ONNX Runtime's WebGPU provider could not start (${firstLine}). ${hint}`,
    'E_WEBGPU',
  );
}
