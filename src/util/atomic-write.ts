/**
 * Atomic file writes: write a temp file in the destination's directory, then
 * rename over the target, so readers never see a half-written file (rename is
 * atomic only within one filesystem, hence the same directory).
 */
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { DimooError } from '../errors.js';
import { isSystemError, wrapSystemError } from './fs-errors.js';

/** A temp file that cannot be created: its name means nothing to the user; the target and its folder do. */
function openFailure(e: unknown, target: string): unknown {
  if (isSystemError(e) && (e.code === 'ENOENT' || e.code === 'ENOTDIR'))
    return new DimooError(
      `${path.dirname(target)}: no such folder (cannot write ${path.basename(target)} there)`,
      'E_IO',
    );
  return wrapSystemError(e, target);
}

export function tempPathFor(target: string): string {
  const dir = path.dirname(target);
  const base = path.basename(target);
  return path.join(dir, `.${base}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
}

export interface AtomicOptions {
  /** fsync before rename so a crash cannot leave an empty file under the final name. */
  fsync?: boolean;
  mode?: number;
}

/** Write data to fd completely (writeSync may write less than asked). */
export function writeAllSync(fd: number, data: Uint8Array): void {
  let off = 0;
  while (off < data.byteLength) {
    off += fs.writeSync(fd, data, off, data.byteLength - off);
  }
}

/**
 * Opens a temp file, lets `fill` write through the fd, then renames it onto
 * `target`. On any error the temp file is removed and the error rethrown.
 */
export function atomicWriteWithFd(
  target: string,
  fill: (fd: number) => void,
  opts: AtomicOptions = {},
): void {
  const tmp = tempPathFor(target);
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, 'w', opts.mode ?? 0o644);
  } catch (e) {
    throw openFailure(e, target);
  }
  try {
    fill(fd);
    if (opts.fsync ?? true) fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, target);
  } catch (e) {
    if (fd !== undefined) {
      try {
        fs.closeSync(fd);
      } catch {
        /* already failing; the original error matters more */
      }
    }
    fs.rmSync(tmp, { force: true });
    throw wrapSystemError(e, target);
  }
}

export function atomicWriteFileSync(
  target: string,
  data: string | Uint8Array,
  opts: AtomicOptions = {},
): void {
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  atomicWriteWithFd(target, (fd) => writeAllSync(fd, bytes), opts);
}

export async function atomicWriteFile(
  target: string,
  data: string | Uint8Array,
  opts: AtomicOptions = {},
): Promise<void> {
  const tmp = tempPathFor(target);
  const fh = await fsp.open(tmp, 'w', opts.mode ?? 0o644).catch((e: unknown) => {
    throw openFailure(e, target);
  });
  let closed = false;
  try {
    await fh.writeFile(data);
    if (opts.fsync ?? true) await fh.sync();
    await fh.close();
    closed = true;
    await fsp.rename(tmp, target);
  } catch (e) {
    if (!closed) await fh.close().catch(() => undefined);
    await fsp.rm(tmp, { force: true });
    throw wrapSystemError(e, target);
  }
}
