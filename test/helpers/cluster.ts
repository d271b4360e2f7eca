/* eslint-disable @typescript-eslint/no-explicit-any -- response JSON is checked field by field */
/**
 * Processes and HTTP helpers for the queue tests: `dimoo worker` and
 * `dimoo serve` as child processes whose output lines can be awaited, and
 * SSE streams read event by event.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const EXT = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
// Compiled: dist/test/helpers/ -> the repo root is three folders up.
const ROOT = fileURLToPath(new URL(EXT === '.ts' ? '../../' : '../../../', import.meta.url));
const FAKE_WORKER = fileURLToPath(new URL(`./fake-queue-worker${EXT}`, import.meta.url));
export const DIMOO_BIN = `${ROOT}bin/dimoo.js`;

/** Short queue timings so a dead worker's job is reclaimed within seconds. */
export const FAST_QUEUE = ['--lock-ms', '2000', '--stalled-ms', '1000', '--heartbeat-ms', '250'];

export class Proc {
  readonly lines: string[] = [];
  readonly exited: Promise<number | null>;
  /** Resolves once the process has exited and its stdout/stderr are fully read. */
  readonly closed: Promise<void>;
  private waiters: { pred: (l: string) => boolean; resolve: (l: string) => void }[] = [];

  constructor(readonly proc: ChildProcess) {
    let buf = '';
    const onData = (d: Buffer): void => {
      buf += d.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        this.lines.push(line);
        for (const w of [...this.waiters])
          if (w.pred(line)) {
            this.waiters.splice(this.waiters.indexOf(w), 1);
            w.resolve(line);
          }
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    this.exited = new Promise((r) => proc.once('exit', (code) => r(code)));
    this.closed = new Promise((r) => proc.once('close', () => r()));
  }

  /**
   * Calls `cb` with the first line (already printed or to come) that matches,
   * synchronously as it is read; returns a function that stops watching.
   */
  onFirstLine(pred: (l: string) => boolean, cb: (l: string) => void): () => void {
    const have = this.lines.find(pred);
    if (have !== undefined) {
      cb(have);
      return () => {};
    }
    const w = { pred, resolve: cb };
    this.waiters.push(w);
    return () => {
      this.waiters = this.waiters.filter((x) => x !== w);
    };
  }

  /** Resolves with the first line (already printed or to come) that matches. */
  waitLine(pred: (l: string) => boolean, what = 'a line', ms = 120_000): Promise<string> {
    const have = this.lines.find(pred);
    if (have !== undefined) return Promise.resolve(have);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        reject(
          new Error(`timed out waiting for ${what}; output:\n${this.lines.slice(-30).join('\n')}`),
        );
      }, ms);
      const done = (l: string): void => {
        clearTimeout(t);
        resolve(l);
      };
      this.waiters.push({ pred, resolve: done });
      void this.exited.then((code) => {
        if (this.waiters.some((w) => w.resolve === done)) {
          clearTimeout(t);
          reject(
            new Error(
              `process exited (${code}) before ${what}:\n${this.lines.slice(-30).join('\n')}`,
            ),
          );
        }
      });
    });
  }

  /** JSON log records (the worker's lines). */
  records(): any[] {
    const out = [];
    for (const l of this.lines) {
      if (!l.startsWith('{')) continue;
      try {
        out.push(JSON.parse(l));
      } catch {
        // not a log record
      }
    }
    return out;
  }

  async kill(sig: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(sig);
    return this.exited;
  }
}

/** A `dimoo worker` on the fake model (each step holds its thread `stepMs`). */
export async function fakeWorker(
  redisUrl: string,
  stepMs: number,
  extra: string[] = [],
): Promise<Proc> {
  const p = new Proc(
    spawn(
      process.execPath,
      [
        FAKE_WORKER,
        String(stepMs),
        '--',
        '--queue',
        redisUrl,
        '--model',
        'fake-dir',
        ...FAST_QUEUE,
        ...extra,
      ],
      { env: { ...process.env, DIMOO_FAKE_WORKER: '1' }, stdio: ['ignore', 'pipe', 'pipe'] },
    ),
  );
  await p.waitLine((l) => l.includes('"worker ready"'), 'the worker to be ready');
  return p;
}

/** The real `dimoo` executable. */
export function dimoo(args: string[]): Proc {
  return new Proc(
    spawn(process.execPath, [DIMOO_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], cwd: ROOT }),
  );
}

export async function json(res: Response): Promise<any> {
  const text = await res.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`not JSON (${res.status}): ${text.slice(0, 300)}`);
  }
}

export function post(base: string, path: string, body: unknown): Promise<Response> {
  return fetch(base + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
}

export interface SseEvent {
  event: string;
  data: any;
}

/** Reads an SSE stream event by event until it ends; `onEvent` sees each as it arrives. */
export async function readSse(res: Response, onEvent?: (e: SseEvent) => void): Promise<SseEvent[]> {
  if (!/text\/event-stream/.test(res.headers.get('content-type') ?? ''))
    throw new Error(`not an event stream (${res.status}): ${await res.text()}`);
  const out: SseEvent[] = [];
  const dec = new TextDecoder();
  let buf = '';
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buf += dec.decode(chunk, { stream: true });
    let i: number;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (!block.trim() || block.startsWith(':')) continue;
      let event = 'message';
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) event = line.slice(7);
        else if (line.startsWith('data: ')) data.push(line.slice(6));
      }
      const raw = data.join('\n');
      let parsed: unknown = raw;
      try {
        parsed = JSON.parse(raw);
      } catch {
        // [DONE] and the like
      }
      const e = { event, data: parsed };
      out.push(e);
      onEvent?.(e);
    }
  }
  return out;
}

/** Polls `pred` until true: for states only visible by asking (a process's HTTP answers). */
export async function until(
  pred: () => Promise<boolean>,
  what: string,
  ms = 60_000,
): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await pred().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}
