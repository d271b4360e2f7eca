/**
 * What Dawn (ORT's WebGPU provider) needs on this machine: the Vulkan loader,
 * a driver (ICD) and, for Mesa, version 25 or newer. Only read when WebGPU
 * fails to start, to say what is missing.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

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
