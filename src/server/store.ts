/**
 * Result images kept in memory for `response_format: "url"` and job results.
 * Names are 128-bit random ids, so a URL is its own capability (as OpenAI's
 * image URLs are): it can be fetched without the API key, and cannot be
 * guessed. Bounded by total bytes and age; the oldest go first.
 */
import { randomBytes } from 'node:crypto';

interface Entry {
  data: Buffer;
  type: string;
  expires: number;
}

export const FILE_NAME_RE = /^[0-9a-f]{32}\.(png)$/;

export class BlobStore {
  private readonly entries = new Map<string, Entry>();
  private bytes = 0;

  constructor(
    private readonly maxBytes: number,
    private readonly ttlMs: number,
  ) {}

  /** Stores a PNG; returns its file name (`<id>.png`). */
  put(data: Buffer, type = 'image/png'): string {
    this.sweep();
    const name = `${randomBytes(16).toString('hex')}.png`;
    this.entries.set(name, { data, type, expires: Date.now() + this.ttlMs });
    this.bytes += data.length;
    // Map iteration is insertion order: evict oldest first.
    for (const [k, e] of this.entries) {
      if (this.bytes <= this.maxBytes || k === name) break;
      this.entries.delete(k);
      this.bytes -= e.data.length;
    }
    return name;
  }

  get(name: string): Entry | undefined {
    if (!FILE_NAME_RE.test(name)) return undefined;
    const e = this.entries.get(name);
    if (!e || e.expires < Date.now()) return undefined;
    return e;
  }

  /** Gets and forgets an entry: for results that are sent inline and never fetched by URL. */
  take(name: string): Entry | undefined {
    const e = this.get(name);
    if (e) {
      this.entries.delete(name);
      this.bytes -= e.data.length;
    }
    return e;
  }

  get size(): { files: number; bytes: number } {
    return { files: this.entries.size, bytes: this.bytes };
  }

  private sweep(): void {
    const now = Date.now();
    for (const [k, e] of this.entries) {
      if (e.expires >= now) break;
      this.entries.delete(k);
      this.bytes -= e.data.length;
    }
  }
}
