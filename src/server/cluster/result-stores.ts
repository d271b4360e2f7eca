/**
 * Result PNGs shared by every process of a cluster: in Redis with a TTL (the
 * default), or as files in a folder all processes mount (`--results DIR`),
 * written to a temporary name and renamed so a reader never sees half a file.
 */
import { mkdir, readdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import {
  FILE_NAME_RE,
  newFileName,
  typeOfName,
  type ResultStore,
  type StoredFile,
} from '../store.js';
import { keys } from './keys.js';

export class RedisResultStore implements ResultStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly ttlMs: number,
  ) {}

  async put(data: Buffer, type = 'image/png'): Promise<string> {
    const name = newFileName(type);
    await this.redis.set(keys.file(this.prefix, name), data, 'PX', this.ttlMs);
    return name;
  }

  async get(name: string): Promise<StoredFile | undefined> {
    if (!FILE_NAME_RE.test(name)) return undefined;
    const data = await this.redis.getBuffer(keys.file(this.prefix, name));
    return data ? { data, type: typeOfName(name) } : undefined;
  }

  async take(name: string): Promise<StoredFile | undefined> {
    if (!FILE_NAME_RE.test(name)) return undefined;
    // GETDEL (Redis 6.2+): read and forget in one step.
    const data = await this.redis.getdelBuffer(keys.file(this.prefix, name));
    return data ? { data, type: typeOfName(name) } : undefined;
  }
}

export class DirResultStore implements ResultStore {
  private lastSweep = 0;

  constructor(
    private readonly dir: string,
    private readonly ttlMs: number,
  ) {}

  async put(data: Buffer, type = 'image/png'): Promise<string> {
    await mkdir(this.dir, { recursive: true });
    const name = newFileName(type);
    const tmp = join(this.dir, `.${name}.${process.pid}.tmp`);
    await writeFile(tmp, data);
    await rename(tmp, join(this.dir, name));
    void this.sweep().catch(() => undefined);
    return name;
  }

  async get(name: string): Promise<StoredFile | undefined> {
    if (!FILE_NAME_RE.test(name)) return undefined;
    const path = join(this.dir, name);
    try {
      const st = await stat(path);
      if (Date.now() - st.mtimeMs > this.ttlMs) return undefined;
      return { data: await readFile(path), type: typeOfName(name) };
    } catch {
      return undefined;
    }
  }

  async take(name: string): Promise<StoredFile | undefined> {
    const f = await this.get(name);
    if (f) await unlink(join(this.dir, name)).catch(() => undefined);
    return f;
  }

  /** Deletes expired results, at most once a minute. */
  private async sweep(): Promise<void> {
    const now = Date.now();
    if (now - this.lastSweep < 60_000) return;
    this.lastSweep = now;
    for (const f of await readdir(this.dir)) {
      if (!FILE_NAME_RE.test(f)) continue;
      const p = join(this.dir, f);
      const st = await stat(p).catch(() => null);
      if (st && now - st.mtimeMs > this.ttlMs) await unlink(p).catch(() => undefined);
    }
  }
}
