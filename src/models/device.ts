/**
 * Execution devices: ONNX Runtime session options per device, a WebGPU probe,
 * and errors that say what is missing when WebGPU cannot start.
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
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { DimooError } from '../errors.js';
import { GraphBuilder } from './onnx/builder.js';

/**
 * ORT's start-up telemetry (on by default on Linux) matches regular expressions
 * against /proc/self/cmdline with a recursive matcher: a long command line (a
 * 20 000-character `--prompt`) overflows the stack and the process dies with
 * SIGSEGV (from ~7 000 prompt tokens on a worker thread's 4 MB stack). Turned
 * off before ORT creates its environment (at the first session). A worker
 * thread's `process.env` is a copy, so `WorkerDimoo` does the same on the
 * spawning thread, where it reaches the real environment.
 */
export function disableOrtTelemetry(): void {
  process.env['ORT_DISABLE_TELEMETRY'] ??= '1';
}
disableOrtTelemetry();

export type Device = 'cpu' | 'webgpu';
export const DEVICES: readonly Device[] = ['cpu', 'webgpu'];

export function isDevice(x: unknown): x is Device {
  return x === 'cpu' || x === 'webgpu';
}

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
    ...(spec.cpuMemArena !== undefined ? { enableCpuMemArena: spec.cpuMemArena } : {}),
    ...(spec.memPattern !== undefined ? { enableMemPattern: spec.memPattern } : {}),
    // External data is resolved inside this folder (ORT refuses paths that leave it).
    ...(spec.externalDataFolder || spec.prepack === false
      ? {
          extra: {
            session: {
              ...(spec.externalDataFolder ? { model_external_initializers_file_folder_path: spec.externalDataFolder } : {}),
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

/** float32 -> IEEE half bits for small exact values used by the probe. */
function toHalfBits(v: number): number {
  const f = new Float32Array([v]);
  const u = new Uint32Array(f.buffer)[0]!;
  const sign = (u >>> 16) & 0x8000;
  const exp = ((u >>> 23) & 0xff) - 127 + 15;
  const mant = (u >>> 13) & 0x3ff;
  if (v === 0) return sign;
  return sign | (exp << 10) | mant;
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
        : new ort.Tensor('float16', Uint16Array.from(xs, toHalfBits), [4]);
    const out = await session.run({ x: feed });
    const y = out.y!;
    const got =
      dtype === 'float32'
        ? Array.from(y.data as Float32Array)
        : Array.from(y.data as Uint16Array, (h) => halfToFloat(h));
    if (got.some((v, i) => Math.abs(v - want[i]!) > 1e-3)) {
      throw new Error(
        `WebGPU ${dtype} probe computed ${got.join(', ')} instead of ${want.join(', ')}`,
      );
    }
  } finally {
    await session.release();
  }
}

function halfToFloat(h: number | bigint): number {
  const b = Number(h);
  const s = b & 0x8000 ? -1 : 1;
  const e = (b >> 10) & 0x1f;
  const m = b & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
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

// ---- what Dawn needs on this machine ----------------------------------------

const LIB_DIRS = [
  '/usr/lib/x86_64-linux-gnu',
  '/usr/lib/aarch64-linux-gnu',
  '/lib/x86_64-linux-gnu',
  '/lib/aarch64-linux-gnu',
  '/usr/lib64',
  '/usr/lib',
  '/usr/local/lib',
  '/lib64',
  '/lib',
];

function ldConfDirs(): string[] {
  const out: string[] = [];
  try {
    for (const f of fs.readdirSync('/etc/ld.so.conf.d')) {
      if (!f.endsWith('.conf')) continue;
      for (const line of fs.readFileSync(path.join('/etc/ld.so.conf.d', f), 'utf8').split('\n')) {
        const t = line.trim();
        if (t.startsWith('/')) out.push(t);
      }
    }
  } catch {
    /* no ld.so.conf.d */
  }
  return out;
}

/** Where libvulkan.so.1 is, or undefined when the loader is not installed. */
export function findVulkanLoader(): string | undefined {
  const dirs = [
    ...(process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean),
    ...ldConfDirs(),
    ...LIB_DIRS,
  ];
  for (const d of dirs) {
    const p = path.join(d, 'libvulkan.so.1');
    if (fs.existsSync(p)) return p;
  }
  return undefined;
}

export interface VulkanIcd {
  /** The ICD manifest (.json). */
  manifest: string;
  /** The driver library it names. */
  library?: string;
}

function listJson(p: string): string[] {
  try {
    const st = fs.statSync(p);
    if (st.isFile()) return [p];
    return fs
      .readdirSync(p)
      .filter((f) => f.endsWith('.json'))
      .sort()
      .map((f) => path.join(p, f));
  } catch {
    return [];
  }
}

/** The Vulkan drivers (ICD manifests) the loader would consider, in its search order. */
export function findVulkanIcds(env: NodeJS.ProcessEnv = process.env): VulkanIcd[] {
  const override = env.VK_DRIVER_FILES || env.VK_ICD_FILENAMES;
  let manifests: string[];
  if (override) {
    manifests = override.split(':').filter(Boolean).flatMap(listJson);
  } else {
    const home = os.homedir();
    const configDirs = [
      env.XDG_CONFIG_HOME || path.join(home, '.config'),
      ...(env.XDG_CONFIG_DIRS || '/etc/xdg').split(':'),
      '/etc',
    ];
    const dataDirs = [
      env.XDG_DATA_HOME || path.join(home, '.local/share'),
      ...(env.XDG_DATA_DIRS || '/usr/local/share:/usr/share').split(':'),
    ];
    manifests = [...configDirs, ...dataDirs]
      .filter(Boolean)
      .flatMap((d) => listJson(path.join(d, 'vulkan', 'icd.d')));
  }
  if (env.VK_ADD_DRIVER_FILES)
    manifests.push(...env.VK_ADD_DRIVER_FILES.split(':').filter(Boolean).flatMap(listJson));
  return [...new Set(manifests)].map((manifest) => {
    try {
      const j = JSON.parse(fs.readFileSync(manifest, 'utf8')) as {
        ICD?: { library_path?: string };
      };
      return { manifest, library: j.ICD?.library_path };
    } catch {
      return { manifest };
    }
  });
}

/** Installed Debian package version, if dpkg knows the package. */
function debVersion(pkg: string): string | undefined {
  try {
    const status = fs.readFileSync('/var/lib/dpkg/status', 'utf8');
    for (const block of status.split('\n\n')) {
      if (!block.startsWith(`Package: ${pkg}\n`)) continue;
      if (!/^Status: install ok installed$/m.test(block)) continue;
      return /^Version: (.+)$/m.exec(block)?.[1];
    }
  } catch {
    /* not Debian */
  }
  return undefined;
}

/** One or two sentences on what Dawn/Vulkan is missing here (Linux), or a generic hint elsewhere. */
export function describeWebGpuSetup(env: NodeJS.ProcessEnv = process.env): string {
  if (process.platform !== 'linux') {
    return process.platform === 'darwin'
      ? 'On macOS the provider uses Metal; check that this Mac has a Metal GPU.'
      : 'On Windows the provider uses Direct3D 12; check the GPU driver.';
  }
  const loader = findVulkanLoader();
  if (!loader) {
    return (
      'The Vulkan loader libvulkan.so.1 is not installed (Debian/Ubuntu: apt-get install libvulkan1), ' +
      "and a Vulkan driver is needed too: the GPU vendor's, or Mesa's software lavapipe " +
      '(mesa-vulkan-drivers >= 25; on Debian bookworm from bookworm-backports). Use --device cpu otherwise.'
    );
  }
  const icds = findVulkanIcds(env);
  const override = env.VK_DRIVER_FILES || env.VK_ICD_FILENAMES;
  if (icds.length === 0) {
    return (
      `The Vulkan loader is there (${loader}) but no Vulkan driver (ICD) was found` +
      (override
        ? ` at VK_DRIVER_FILES/VK_ICD_FILENAMES=${override}`
        : ' in /usr/share/vulkan/icd.d or /etc/vulkan/icd.d') +
      ": install the GPU vendor's driver (NVIDIA: point VK_DRIVER_FILES at its nvidia_icd.json) or Mesa's " +
      'mesa-vulkan-drivers >= 25 (software lavapipe; on Debian bookworm: apt-get install -t bookworm-backports mesa-vulkan-drivers).'
    );
  }
  const names = icds.map((i) => path.basename(i.manifest)).join(', ');
  const mesa = debVersion('mesa-vulkan-drivers');
  const mesaMajor = mesa ? Number(/^(?:\d+:)?(\d+)/.exec(mesa)?.[1]) : undefined;
  if (
    mesaMajor !== undefined &&
    mesaMajor < 25 &&
    icds.every((i) =>
      /lvp|intel|radeon|virtio|gfxstream|nouveau|freedreno|panfrost|asahi|dzn|broadcom|powervr/i.test(
        path.basename(i.manifest),
      ),
    )
  ) {
    return (
      `Vulkan drivers found (${names}) are Mesa ${mesa}, too old for Dawn: install Mesa >= 25 ` +
      '(Debian bookworm: add bookworm-backports and apt-get install -t bookworm-backports mesa-vulkan-drivers), or a GPU vendor driver.'
    );
  }
  const missingLibs = icds.filter(
    (i) => i.library && path.isAbsolute(i.library) && !fs.existsSync(i.library),
  );
  const extra = missingLibs.length
    ? ` (driver libraries missing: ${missingLibs.map((i) => i.library).join(', ')})`
    : '';
  return (
    `Vulkan loader ${loader} and drivers ${names}${extra} are installed, but none gave Dawn a usable adapter: ` +
    'the driver may not match the GPU or kernel module, or be too old (Mesa lavapipe needs >= 25). ' +
    '`vulkaninfo --summary` shows what Vulkan sees; VK_LOADER_DEBUG=all shows why drivers are skipped.'
  );
}
