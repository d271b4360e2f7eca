/**
 * Hugging Face ids (`Alpha-VLLM/Lumina-DiMOO`) resolved to a snapshot folder
 * of the standard Hub cache, shared with Python's huggingface_hub: the cache
 * root is HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub
 * (@huggingface/hub's `getHFHubCachePath`), laid out as
 * `models--OWNER--NAME/{blobs,refs/REV,snapshots/SHA/...}`.
 *
 * A snapshot already in the cache is used without any network access; the
 * Hub is asked only for what is missing, and never when HF_HUB_OFFLINE is set.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DimooError } from '../errors.js';

/** Files a checkpoint is read from; a Hub repo may hold more (pictures, PyTorch copies). */
function wanted(file: string): boolean {
  const parts = file.split('/');
  if (parts.length === 1) return /\.(json|safetensors)$/.test(file);
  return parts.length === 2 && parts[0] === 'vqvae' && /\.(json|safetensors)$/.test(parts[1]!);
}

export interface HubProgress {
  /** 'download': bytes of the files being fetched so far, out of `total`. */
  phase: 'download';
  file: string;
  done: number;
  total: number;
}

export interface HubOptions {
  /** Branch, tag or commit (default 'main'). */
  revision?: string;
  /** Access token for gated or private repos (default: env HF_TOKEN). */
  token?: string;
  /** Cache root (default: HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub). */
  cacheDir?: string;
  /** Never ask the Hub (default: env HF_HUB_OFFLINE). */
  offline?: boolean;
  /** Hub address (default: env HF_ENDPOINT, else the public Hub). */
  hubUrl?: string;
  onProgress?: (p: HubProgress) => void;
}

const REPO_ID = /^[A-Za-z0-9][\w.-]*\/[\w.-]*[A-Za-z0-9_]$/;
const COMMIT = /^[0-9a-f]{40}$/;

/** True for `owner/name` that is not an existing path (a local folder always wins). */
export function isHubId(spec: string): boolean {
  return REPO_ID.test(spec) && !spec.includes('..') && !fs.existsSync(spec);
}

function envFlag(name: string): boolean {
  const v = (process.env[name] ?? '').trim().toLowerCase();
  return v === '1' || v === 'true' || v === 'yes' || v === 'on';
}

export async function hubCacheRoot(): Promise<string> {
  const { getHFHubCachePath } = await import('@huggingface/hub');
  return getHFHubCachePath();
}

/** Folder of one repo in the cache (`models--owner--name`). */
export function repoCacheFolder(cacheDir: string, repo: string): string {
  return path.join(cacheDir, ['models', ...repo.split('/')].join('--'));
}

/** The snapshot folder a revision points to in the cache, if it is there. */
export function cachedSnapshot(
  cacheDir: string,
  repo: string,
  revision = 'main',
): string | undefined {
  const storage = repoCacheFolder(cacheDir, repo);
  let sha = revision;
  if (!COMMIT.test(revision)) {
    try {
      sha = fs.readFileSync(path.join(storage, 'refs', revision), 'utf8').trim();
    } catch {
      return undefined;
    }
  }
  const snap = path.join(storage, 'snapshots', sha);
  return isComplete(snap) ? snap : undefined;
}

/** A snapshot counts when config.json, the tokenizer and every weight file it names are there. */
function isComplete(snap: string): boolean {
  const has = (f: string): boolean => fs.existsSync(path.join(snap, f));
  if (!has('config.json') || !has('tokenizer.json')) return false;
  const index = path.join(snap, 'model.safetensors.index.json');
  if (fs.existsSync(index)) {
    try {
      const map =
        (JSON.parse(fs.readFileSync(index, 'utf8')) as { weight_map?: Record<string, string> })
          .weight_map ?? {};
      return Object.values(map).every((f) => has(f));
    } catch {
      return false;
    }
  }
  return has('model.safetensors') || has('dimoo-quant.json');
}

/**
 * Returns a local folder for `spec`: a path as it is, or a Hub id resolved
 * through the cache (downloading what is missing unless offline).
 */
export async function resolveModelDir(spec: string, opts: HubOptions = {}): Promise<string> {
  if (!isHubId(spec)) return spec;
  const revision = opts.revision ?? 'main';
  const cacheDir = opts.cacheDir ?? (await hubCacheRoot());
  const found = cachedSnapshot(cacheDir, spec, revision);
  if (found) return found;
  const storage = repoCacheFolder(cacheDir, spec);
  const looked = COMMIT.test(revision)
    ? path.join(storage, 'snapshots', revision)
    : `${path.join(storage, 'refs', revision)} -> ${path.join(storage, 'snapshots', '<commit>')}`;
  if (opts.offline ?? (envFlag('HF_HUB_OFFLINE') || envFlag('TRANSFORMERS_OFFLINE'))) {
    throw new DimooError(
      `${spec} (revision ${revision}) is not in the Hugging Face cache (looked for ${looked}, with config.json, ` +
        `tokenizer.json and every weight file) and HF_HUB_OFFLINE is set: download it where the Hub is reachable ` +
        `(e.g. \`dimoo download ${spec}\` or \`hf download ${spec}\`), or pass a local folder`,
      'E_CHECKPOINT',
    );
  }
  return download(spec, revision, cacheDir, looked, opts);
}

async function download(
  repo: string,
  revision: string,
  cacheDir: string,
  looked: string,
  opts: HubOptions,
): Promise<string> {
  const hub = await import('@huggingface/hub');
  const accessToken =
    opts.token ?? process.env['HF_TOKEN'] ?? process.env['HUGGING_FACE_HUB_TOKEN'];
  const hubUrl = opts.hubUrl ?? process.env['HF_ENDPOINT'];
  const common = {
    repo: { type: 'model' as const, name: repo },
    revision,
    ...(accessToken ? { accessToken } : {}),
    ...(hubUrl ? { hubUrl } : {}),
  };
  const fail = (e: unknown): never => {
    const msg = e instanceof Error ? e.message : String(e);
    throw new DimooError(
      `${repo} (revision ${revision}) is not in the Hugging Face cache (looked for ${looked}) and could not be ` +
        `downloaded: ${msg}${accessToken ? '' : ' (gated or private repos need HF_TOKEN)'}`,
      'E_CHECKPOINT',
    );
  };
  const files: { path: string; size: number }[] = [];
  try {
    for await (const f of hub.listFiles({ ...common, recursive: true })) {
      if (f.type === 'file' && wanted(f.path))
        files.push({ path: f.path, size: f.lfs?.size ?? f.size });
    }
  } catch (e) {
    fail(e);
  }
  if (!files.some((f) => f.path === 'config.json')) {
    throw new DimooError(
      `${repo} (revision ${revision}) on the Hub has no config.json: not a DiMOO checkpoint`,
      'E_CHECKPOINT',
    );
  }
  const total = files.reduce((s, f) => s + f.size, 0);
  let done = 0;
  let current = '';
  let fileEnd = 0;
  // The library has no progress hook; counting the bytes of its response bodies gives one.
  const counting: typeof fetch = async (input, init) => {
    const res = await fetch(input, init);
    // API calls (listings, path info) are not file bytes; everything else is (plain or Xet transfers).
    if (
      !res.body ||
      !opts.onProgress ||
      /\/api\//.test(String(input instanceof Request ? input.url : input))
    )
      return res;
    const reader = res.body.getReader();
    const body = new ReadableStream<Uint8Array>({
      async pull(ctl) {
        const { done: end, value } = await reader.read();
        if (end) return ctl.close();
        done = Math.min(done + value.byteLength, fileEnd);
        opts.onProgress?.({ phase: 'download', file: current, done, total });
        ctl.enqueue(value);
      },
      cancel: (r) => reader.cancel(r),
    });
    return new Response(body, {
      status: res.status,
      statusText: res.statusText,
      headers: res.headers,
    });
  };
  let config = '';
  // downloadFileToCacheDir announces each file with console.debug (stdout, where --json output goes).
  const debug = console.debug;
  console.debug = () => {};
  try {
    for (const f of files) {
      current = f.path;
      const before = done;
      fileEnd = before + f.size;
      try {
        const p = await hub.downloadFileToCacheDir({
          ...common,
          path: f.path,
          cacheDir,
          fetch: counting,
        });
        if (f.path === 'config.json') config = p;
      } catch (e) {
        fail(e);
      }
      // Files already in blobs/ are linked, not fetched: count them as done.
      done = before + f.size;
      opts.onProgress?.({ phase: 'download', file: f.path, done, total });
    }
  } finally {
    console.debug = debug;
  }
  return path.dirname(config);
}

/** `name` for a folder inside a cache snapshot (`…/models--owner--name/snapshots/<sha>`), else undefined. */
export function hubRepoName(dir: string): string | undefined {
  const parts = path.resolve(dir).split(path.sep);
  const i = parts.lastIndexOf('snapshots');
  if (i < 1 || i !== parts.length - 2) return undefined;
  const m = /^models--(.+)$/.exec(parts[i - 1]!);
  return m ? m[1]!.split('--').pop() : undefined;
}
