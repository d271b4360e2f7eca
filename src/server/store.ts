/**
 * Result images kept in memory for `response_format: "url"` and job results.
 * Names are 128-bit random ids, so a URL is its own capability (as OpenAI's
 * image URLs are): it can be fetched without the API key, and cannot be
 * guessed. Bounded by total bytes and age; the oldest go first.
 */
import { randomBytes } from 'node:crypto';

export interface StoredFile {
  data: Buffer;
  type: string;
}

interface Entry extends StoredFile {
  expires: number;
}

export const FILE_NAME_RE = /^[0-9a-f]{32}\.(png|jpeg|webp)$/;

/** Where result images go: this process's memory, Redis, or a folder shared by a cluster. */
export interface ResultStore {
  /** Stores an image (PNG unless told); resolves to its file name (`<32 hex>.png`, `.jpeg`, `.webp`). */
  put(data: Buffer, type?: string): Promise<string>;
  get(name: string): Promise<StoredFile | undefined>;
  /** Gets and forgets a file: for results sent inline and never fetched by URL. */
  take(name: string): Promise<StoredFile | undefined>;
}

const TYPES: Record<string, string> = { png: 'image/png', jpeg: 'image/jpeg', webp: 'image/webp' };

/** A new random file name for an image of `type` (image/png, image/jpeg or image/webp). */
export function newFileName(type = 'image/png'): string {
  const ext = type.slice('image/'.length);
  if (!TYPES[ext]) throw new Error(`result store: unsupported type ${type}`);
  return `${randomBytes(16).toString('hex')}.${ext}`;
}

/** The content type a stored file's name says. */
export function typeOfName(name: string): string {
  return TYPES[name.slice(name.lastIndexOf('.') + 1)] ?? 'application/octet-stream';
}

export class BlobStore implements ResultStore {
  private readonly entries = new Map<string, Entry>();
  private bytes = 0;

  constructor(
    private readonly maxBytes: number,
    private readonly ttlMs: number,
  ) {}

  async put(data: Buffer, type = 'image/png'): Promise<string> {
    return this.putSync(data, type);
  }

  async get(name: string): Promise<StoredFile | undefined> {
    return this.getSync(name);
  }

  async take(name: string): Promise<StoredFile | undefined> {
    return this.takeSync(name);
  }

  /** Stores an image (PNG unless told); returns its file name (`<id>.png`, `.jpeg`, `.webp`). */
  putSync(data: Buffer, type = 'image/png'): string {
    this.sweep();
    const name = newFileName(type);
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

  getSync(name: string): Entry | undefined {
    if (!FILE_NAME_RE.test(name)) return undefined;
    const e = this.entries.get(name);
    if (!e || e.expires < Date.now()) return undefined;
    return e;
  }

  /** Gets and forgets an entry: for results that are sent inline and never fetched by URL. */
  takeSync(name: string): Entry | undefined {
    const e = this.getSync(name);
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
