/**
 * Hugging Face ids through the standard Hub cache, on a cache this test lays
 * out itself exactly as huggingface_hub does (content-addressed blobs/,
 * refs/<branch> holding a commit, snapshots/<commit>/ of relative symlinks).
 * No network: HF_HUB_OFFLINE is set wherever a download could be attempted.
 */
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Dimoo } from '../src/pipelines/dimoo.js';
import { WorkerDimoo } from '../src/runtime/worker-dimoo.js';
import type { LoadProgress } from '../src/pipelines/types.js';
import { cachedSnapshot, isHubId, resolveModelDir } from '../src/checkpoint/hub.js';
import { goldenCheckpointDir } from './helpers/golden.js';
import { tinyGenerateArgs } from './helpers/cli.js';

const REPO = 'test-org/dimoo-tiny';
const SHA = 'a'.repeat(40);
let tmp: string;
let hfHome: string;
const saved: Record<string, string | undefined> = {};
const ENV = [
  'HF_HOME',
  'HF_HUB_CACHE',
  'HUGGINGFACE_HUB_CACHE',
  'HF_HUB_OFFLINE',
  'XDG_CACHE_HOME',
];

/** Writes `src` (a checkpoint folder) into `cache` as snapshot `sha` of `repo`, every file a link into blobs/. */
function layCache(
  cache: string,
  repo: string,
  sha: string,
  src: string,
  refs: string[] = ['main'],
): string {
  const storage = path.join(cache, ['models', ...repo.split('/')].join('--'));
  const snap = path.join(storage, 'snapshots', sha);
  const walk = (dir: string, rel: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        walk(path.join(dir, e.name), r);
        continue;
      }
      const bytes = fs.readFileSync(path.join(dir, e.name));
      const blob = path.join(storage, 'blobs', createHash('sha256').update(bytes).digest('hex'));
      fs.mkdirSync(path.dirname(blob), { recursive: true });
      fs.writeFileSync(blob, bytes);
      const link = path.join(snap, r);
      fs.mkdirSync(path.dirname(link), { recursive: true });
      fs.symlinkSync(path.relative(path.dirname(link), blob), link);
    }
  };
  walk(src, '');
  fs.mkdirSync(path.join(storage, 'refs'), { recursive: true });
  for (const ref of refs) fs.writeFileSync(path.join(storage, 'refs', ref), sha);
  return snap;
}

before(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-hub-'));
  hfHome = path.join(tmp, 'hf');
  for (const k of ENV) saved[k] = process.env[k];
});

afterEach(() => {
  for (const k of ENV) {
    if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  }
});

after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function useEnv(vars: Record<string, string | undefined>): void {
  for (const k of ENV) delete process.env[k];
  for (const [k, v] of Object.entries(vars)) if (v !== undefined) process.env[k] = v;
}

test('a snapshot folder of links into blobs/ loads and generates as the plain folder does', async () => {
  const snap = layCache(path.join(tmp, 'direct'), REPO, SHA, goldenCheckpointDir());
  assert.ok(fs.lstatSync(path.join(snap, 'model-00001-of-00002.safetensors')).isSymbolicLink());
  const params = {
    prompt: 'a red fox',
    width: 64,
    height: 32,
    timesteps: 3,
    seed: 3,
    temperature: 0,
  };
  const plain = await Dimoo.load(goldenCheckpointDir(), { threads: 1 });
  const want = await plain.generate(params);
  await plain.dispose();
  const linked = await Dimoo.load(snap, { threads: 1 });
  const got = await linked.generate(params);
  assert.deepEqual(got.codes, want.codes);
  assert.deepEqual(got.image?.data, want.image?.data);
  assert.equal(linked.info().name, 'dimoo-tiny');
  await linked.dispose();
});

test('Dimoo.load(owner/name) resolves through HF_HOME without network, with loading progress', async () => {
  const snap = layCache(path.join(hfHome, 'hub'), REPO, SHA, goldenCheckpointDir());
  useEnv({ HF_HOME: hfHome, HF_HUB_OFFLINE: '1' });
  assert.ok(isHubId(REPO));
  const events: LoadProgress[] = [];
  const m = await Dimoo.load(REPO, { threads: 1, onProgress: (e) => events.push(e) });
  assert.equal(m.checkpoint.dir, snap);
  assert.deepEqual(
    events.map((e) => e.stage),
    ['files', 'session'],
  );
  assert.equal(events[0]!.done, m.checkpoint.files.length);
  await m.dispose();
});

test('HF_HUB_CACHE wins over HF_HOME; revisions by branch name and by commit', async () => {
  const cache = path.join(tmp, 'hubcache');
  const sha2 = 'b'.repeat(40);
  layCache(cache, REPO, sha2, goldenCheckpointDir(), ['v2']);
  useEnv({ HF_HOME: path.join(tmp, 'nothing-here'), HF_HUB_CACHE: cache, HF_HUB_OFFLINE: '1' });
  const want = path.join(cache, 'models--test-org--dimoo-tiny', 'snapshots', sha2);
  assert.equal(await resolveModelDir(REPO, { revision: 'v2' }), want);
  assert.equal(await resolveModelDir(REPO, { revision: sha2 }), want);
  // main was never written: offline, that is an error naming what was looked for.
  await assert.rejects(resolveModelDir(REPO), (e: Error) => {
    assert.match(
      e.message,
      /test-org\/dimoo-tiny \(revision main\) is not in the Hugging Face cache/,
    );
    assert.ok(
      e.message.includes(path.join(cache, 'models--test-org--dimoo-tiny', 'refs', 'main')),
      e.message,
    );
    assert.match(e.message, /HF_HUB_OFFLINE/);
    return true;
  });
});

test('a snapshot missing a weight shard is not used', () => {
  const cache = path.join(tmp, 'partial');
  const snap = layCache(cache, REPO, SHA, goldenCheckpointDir());
  assert.equal(cachedSnapshot(cache, REPO), snap);
  fs.rmSync(path.join(snap, 'model-00002-of-00002.safetensors'));
  assert.equal(cachedSnapshot(cache, REPO), undefined);
});

test('a local folder always wins over an id of the same spelling', async () => {
  const local = path.join(tmp, 'local-org', 'model');
  fs.mkdirSync(local, { recursive: true });
  const rel = path.relative(process.cwd(), local);
  // An absolute path is never an id; a relative one that exists is a folder.
  assert.equal(isHubId(local), false);
  if (!rel.startsWith('..')) assert.equal(isHubId(rel), false);
  assert.equal(isHubId('Alpha-VLLM/Lumina-DiMOO'), true);
  assert.equal(await resolveModelDir(local), local);
});

test('WorkerDimoo.load(owner/name) forwards loading progress from the worker', async () => {
  layCache(path.join(tmp, 'w', 'hub'), REPO, SHA, goldenCheckpointDir());
  useEnv({ HF_HOME: path.join(tmp, 'w'), HF_HUB_OFFLINE: '1' });
  const stages: string[] = [];
  const m = await WorkerDimoo.load(REPO, { threads: 1, onProgress: (e) => stages.push(e.stage) });
  assert.equal(m.info().name, 'dimoo-tiny');
  assert.deepEqual(stages, ['files', 'session']);
  await m.dispose();
});

test('CLI: --model owner/name from the cache, loading lines on stderr; offline miss exits non-zero naming the id', () => {
  const home = path.join(tmp, 'cli');
  layCache(path.join(home, 'hub'), REPO, SHA, goldenCheckpointDir());
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HF_HOME: home,
    HF_HUB_OFFLINE: '1',
    DIMOO_DEBUG: '',
  };
  delete env['HF_HUB_CACHE'];
  const out = path.join(tmp, 'cli.png');
  const cli = (args: string[]) =>
    spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
      env,
      encoding: 'utf8',
      timeout: 300_000,
    });
  const r = cli([...tinyGenerateArgs(REPO, 'x', out), '--json', '--progress']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /mapped \d+ files of .*snapshots/);
  assert.match(r.stderr, /session ready/);
  assert.ok(fs.existsSync(out));
  JSON.parse(r.stdout);
  const miss = cli([
    'generate',
    '--model',
    'test-org/not-there',
    '--prompt',
    'x',
    '--out',
    out,
    '--json',
  ]);
  assert.notEqual(miss.status, 0);
  assert.match(
    miss.stderr,
    /test-org\/not-there \(revision main\) is not in the Hugging Face cache/,
  );
});

test('dimoo download: a cached snapshot is printed without network; offline and missing is a clear error', () => {
  const home = path.join(tmp, 'dl');
  const snap = layCache(path.join(home, 'hub'), REPO, SHA, goldenCheckpointDir());
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HF_HOME: home,
    HF_HUB_OFFLINE: '1',
    DIMOO_DEBUG: '',
  };
  delete env['HF_HUB_CACHE'];
  const cli = (args: string[]) =>
    spawnSync(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], {
      env,
      encoding: 'utf8',
      timeout: 120_000,
    });
  const r = cli(['download', REPO, '--json']);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), { id: REPO, revision: 'main', dir: snap });
  const miss = cli(['download', REPO, '--revision', 'v9']);
  assert.notEqual(miss.status, 0);
  assert.match(miss.stderr, /revision v9\) is not in the Hugging Face cache.*refs.v9/);
});

test('fine-tuning reads a snapshot of links into blobs/ as it reads the plain folder', async () => {
  const { createTrainEngine } = await import('../src/training/engine.js');
  const { goldenBatch } = await import('./helpers/train-golden.js');
  const { readGoldenJson } = await import('./helpers/golden.js');
  const snap = layCache(path.join(tmp, 'train'), REPO, SHA, goldenCheckpointDir());
  const batch = goldenBatch(readGoldenJson('train_t2i_i2i_padded.json') as never);
  const loss = async (model: string): Promise<number> => {
    const e = await createTrainEngine({ model, threads: 1 });
    try {
      return (await e.accumulate(batch, 1)).lossSum;
    } finally {
      await e.dispose();
    }
  };
  assert.equal(await loss(snap), await loss(goldenCheckpointDir()));
});
