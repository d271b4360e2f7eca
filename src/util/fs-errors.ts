/**
 * File-system failures said in words: which file, and what the system said
 * (read-only file system, no space, a folder where a file was expected),
 * instead of a bare errno that reads like a bug in this program.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DimooError } from '../errors.js';

const CAUSES: Readonly<Record<string, string>> = {
  EROFS: 'read-only file system',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  ENOSPC: 'no space left on the device',
  EDQUOT: 'disk quota exceeded',
  ENOENT: 'no such file or folder',
  ENOTDIR: 'a part of the path is not a folder',
  EISDIR: 'it is a folder',
  EEXIST: 'it already exists',
  EMFILE: 'too many open files',
  ENAMETOOLONG: 'name too long',
  EIO: 'input/output error',
};

/** A Node system error (has an errno `code` such as 'EROFS'). */
export function isSystemError(e: unknown): e is NodeJS.ErrnoException & { code: string } {
  return (
    e instanceof Error &&
    typeof (e as NodeJS.ErrnoException).code === 'string' &&
    /^E[A-Z0-9]+$/.test((e as NodeJS.ErrnoException).code!) &&
    typeof (e as NodeJS.ErrnoException).syscall === 'string'
  );
}

/** "read-only file system (EROFS)" for a system error, else its message. */
export function systemCause(e: unknown): string {
  if (isSystemError(e)) {
    const words = CAUSES[e.code];
    return words ? `${words} (${e.code})` : `${e.code}, ${e.syscall} failed`;
  }
  return e instanceof Error ? e.message : String(e);
}

/** A system error as a DimooError naming `file` (default: the error's own path). */
export function wrapSystemError(e: unknown, file?: string, what = 'cannot write'): unknown {
  if (!isSystemError(e)) return e;
  const where = file ?? e.path ?? '(unknown file)';
  return new DimooError(`${where}: ${what} (${systemCause(e)})`, 'E_IO');
}

/**
 * Creates a folder and its missing parents, one level at a time. Node's
 * `mkdirSync(dir, { recursive: true })` spins forever under a parent that
 * cannot hold folders (seen with /proc/x); this fails with the cause instead.
 */
export function makeDirs(dir: string): void {
  const abs = path.resolve(dir);
  const missing: string[] = [];
  for (let p = abs; ; p = path.dirname(p)) {
    let st: fs.Stats | undefined;
    try {
      st = fs.statSync(p);
    } catch (e) {
      if (!isSystemError(e) || e.code !== 'ENOENT')
        throw wrapSystemError(e, p, 'cannot create folder');
    }
    if (st) {
      if (!st.isDirectory())
        throw new DimooError(`${p}: cannot create folder ${abs} (${p} is not a folder)`, 'E_IO');
      break;
    }
    missing.push(p);
    if (path.dirname(p) === p) break;
  }
  for (const p of missing.reverse()) {
    try {
      fs.mkdirSync(p);
    } catch (e) {
      if (isSystemError(e) && e.code === 'EEXIST' && fs.statSync(p).isDirectory()) continue;
      throw new DimooError(`${p}: cannot create folder (${systemCause(e)})`, 'E_IO');
    }
  }
}
