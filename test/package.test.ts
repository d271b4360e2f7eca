/**
 * The package as a user gets it: `npm pack`, install the tarball into a fresh
 * project outside this repository (offline: every dependency comes from the
 * local npm cache, which `npm ci` filled), then run the installed `dimoo`
 * binary, a tiny generation and the library's entry points from there.
 *
 * Offline resolution needs exact versions (npm cannot resolve ranges without
 * registry metadata), so the temporary project gets a lockfile made of this
 * repository's lockfile entries for the runtime dependencies.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { goldenCheckpointDir } from './helpers/golden.js';
import { tinyGenerateArgs } from './helpers/cli.js';

interface LockEntry {
  dev?: boolean;
  [k: string]: unknown;
}

const repo = process.cwd();
let tmp: string;
let project: string;
let tarball: string;

const env = { ...process.env, ONNXRUNTIME_NODE_INSTALL: 'skip', DIMOO_DEBUG: '' };

function run(cmd: string, args: string[], cwd: string) {
  const r = spawnSync(cmd, args, {
    cwd,
    env,
    encoding: 'utf8',
    timeout: 300_000,
    maxBuffer: 64 << 20,
  });
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '', error: r.error };
}

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-pack-'));
  // `npm test` has just built dist/; --ignore-scripts skips the prepack rebuild.
  const packed = run(
    'npm',
    ['pack', '--ignore-scripts', '--json', '--pack-destination', tmp],
    repo,
  );
  assert.equal(packed.code, 0, `npm pack failed:\n${packed.stderr}`);
  const info = JSON.parse(packed.stdout) as { filename: string; files: { path: string }[] }[];
  tarball = path.join(tmp, info[0]!.filename);

  const pkg = JSON.parse(fs.readFileSync(path.join(repo, 'package.json'), 'utf8')) as {
    version: string;
    license: string;
    dependencies: Record<string, string>;
    bin: Record<string, string>;
    engines: Record<string, string>;
  };
  const lock = JSON.parse(fs.readFileSync(path.join(repo, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, LockEntry>;
  };
  project = path.join(tmp, 'app');
  fs.mkdirSync(project);
  const spec = `file:../${path.basename(tarball)}`;
  const packages: Record<string, unknown> = {
    '': { name: 'app', version: '1.0.0', dependencies: { dimoo: spec } },
    'node_modules/dimoo': {
      version: pkg.version,
      resolved: spec,
      license: pkg.license,
      dependencies: pkg.dependencies,
      bin: Object.fromEntries(Object.entries(pkg.bin).map(([k, v]) => [k, v.replace(/^\.\//, '')])),
      engines: pkg.engines,
    },
  };
  // With `resolved` spelled out, npm finds each tarball in its cache by integrity and asks
  // for no registry metadata (which `npm ci` may not have cached).
  const registry = 'https://registry.npmjs.org/';
  for (const [key, entry] of Object.entries(lock.packages)) {
    if (key === '' || entry.dev || key.startsWith('node_modules/dimoo/')) continue;
    const name = key.slice(key.lastIndexOf('node_modules/') + 'node_modules/'.length);
    const version = entry['version'] as string;
    const resolved =
      entry['resolved'] ?? `${registry}${name}/-/${name.split('/').pop()}-${version}.tgz`;
    packages[key] = { ...entry, resolved };
  }
  fs.writeFileSync(
    path.join(project, 'package.json'),
    JSON.stringify({ name: 'app', version: '1.0.0', private: true, dependencies: { dimoo: spec } }),
  );
  fs.writeFileSync(
    path.join(project, 'package-lock.json'),
    JSON.stringify({ name: 'app', version: '1.0.0', lockfileVersion: 3, requires: true, packages }),
  );
  const installed = run(
    'npm',
    ['ci', '--offline', '--no-audit', '--no-fund', '--ignore-scripts'],
    project,
  );
  assert.equal(
    installed.code,
    0,
    `offline install of the packed tarball failed (is the npm cache filled by \`npm ci\`?):\n${installed.stderr}`,
  );
});

after(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

test('the tarball holds the build, the binary, the page and the LICENSE, not tests or CI files', () => {
  const list = run('tar', ['-tzf', tarball], tmp).stdout.split('\n');
  for (const f of [
    'package/dist/src/index.js',
    'package/dist/src/index.d.ts',
    'package/dist/src/server/index.js',
    'package/dist/src/runtime/worker-entry.js',
    'package/bin/dimoo.js',
    'package/src/web/static/index.html',
    'package/LICENSE',
    'package/README.md',
  ]) {
    assert.ok(list.includes(f), `${f} missing from the tarball`);
  }
  for (const f of list) {
    assert.ok(
      !/^package\/(test|bench|dist\/test|dist\/bench|\.ci)\//.test(f),
      `${f} should not be published`,
    );
  }
  const license = fs.readFileSync(path.join(project, 'node_modules/dimoo/LICENSE'), 'utf8');
  assert.match(license, /Apache License\s+Version 2\.0/);
});

test('npx dimoo --help runs from the installed package', () => {
  const r = run('npx', ['--offline', '--no-install', 'dimoo', '--help'], project);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /generate/);
  assert.match(r.stdout, /serve/);
});

test('a tiny generation with the installed binary writes a PNG', () => {
  const out = path.join(project, 'out.png');
  const r = run(
    'npx',
    [
      '--offline',
      '--no-install',
      'dimoo',
      ...tinyGenerateArgs(goldenCheckpointDir(), 'a red fox', out),
      '--json',
    ],
    project,
  );
  assert.equal(r.code, 0, r.stderr);
  const png = fs.readFileSync(out);
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  assert.equal(JSON.parse(r.stdout).width, 32);
});

test("import('dimoo'), import('dimoo/server') and require('dimoo') expose the documented entry points", () => {
  const esm = run(
    process.execPath,
    [
      '--input-type=module',
      '-e',
      `const m = await import('dimoo'); const s = await import('dimoo/server');
       console.log(JSON.stringify({ Dimoo: typeof m.Dimoo?.load, WorkerDimoo: typeof m.WorkerDimoo?.load,
         createServer: typeof s.createServer, startServer: typeof s.startServer }));`,
    ],
    project,
  );
  assert.equal(esm.code, 0, esm.stderr);
  assert.deepEqual(JSON.parse(esm.stdout), {
    Dimoo: 'function',
    WorkerDimoo: 'function',
    createServer: 'function',
    startServer: 'function',
  });
  // require() of an ES module works from Node 20.19, the lowest version `engines` allows.
  const cjs = run(
    process.execPath,
    ['--no-warnings', '-e', `console.log(typeof require('dimoo').WorkerDimoo)`],
    project,
  );
  assert.equal(cjs.code, 0, cjs.stderr);
  assert.equal(cjs.stdout.trim(), 'function');
});

test('WorkerDimoo from the installed package loads the model on a worker thread', () => {
  const script = path.join(project, 'worker.mjs');
  fs.writeFileSync(
    script,
    `import { WorkerDimoo } from 'dimoo';
     const m = await WorkerDimoo.load(${JSON.stringify(goldenCheckpointDir())}, { threads: 1 });
     const res = await m.generate({ prompt: 'a fox', width: 32, height: 32, timesteps: 2, seed: 1 });
     console.log(JSON.stringify({ w: res.width, n: res.codes.length }));
     await m.dispose();`,
  );
  const r = run(process.execPath, [script], project);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { w: 32, n: 4 });
});
