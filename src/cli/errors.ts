/**
 * How the CLI ends: user errors print "error: <message>", unexpected ones a
 * single line plus a hint (stack only with DIMOO_DEBUG=1), Ctrl-C exits 130.
 */
import { DimooError, isDimooError } from '../errors.js';
import { isSystemError, systemCause } from '../util/fs-errors.js';
import type { CliContext } from './context.js';

/** Exit code of a run cancelled with Ctrl-C (128 + SIGINT), as shells report it. */
export const EXIT_CANCELLED = 130;
export const EXIT_ERROR = 1;

export class CancelledError extends DimooError {
  constructor() {
    super('cancelled', 'E_CANCELLED');
  }
}

export function throwIfCancelled(signal: AbortSignal): void {
  if (signal.aborted) throw new CancelledError();
}

/** An abort surfaces from the library as whatever error it chose; the signal is the truth. */
export function asCancellation(e: unknown, signal: AbortSignal): unknown {
  return signal.aborted ? new CancelledError() : e;
}

function debugEnabled(env: NodeJS.ProcessEnv): boolean {
  const v = env.DIMOO_DEBUG;
  return v !== undefined && v !== '' && v !== '0' && v.toLowerCase() !== 'false';
}

/** The first line of a message: one error, one line. */
function firstLine(s: string): string {
  const line = s.split('\n', 1)[0] ?? '';
  return line.trim() === '' ? '(no message)' : line;
}

/** Prints the error and returns the exit code. */
export function reportError(e: unknown, ctx: Pick<CliContext, 'stderr' | 'env'>): number {
  const debug = debugEnabled(ctx.env);
  if (e instanceof CancelledError) {
    ctx.stderr.write('error: cancelled\n');
    return EXIT_CANCELLED;
  }
  if (isDimooError(e)) {
    ctx.stderr.write(`error: ${firstLine(e.message)}\n`);
    if (debug && e.stack) ctx.stderr.write(e.stack + '\n');
    return EXIT_ERROR;
  }
  // A file-system failure is the environment's, not a bug: name the file and the cause.
  if (isSystemError(e) && e.path) {
    ctx.stderr.write(`error: ${e.path}: ${systemCause(e)}\n`);
    if (debug && e.stack) ctx.stderr.write(e.stack + '\n');
    return EXIT_ERROR;
  }
  const err = e instanceof Error ? e : new Error(String(e));
  const code = (err as NodeJS.ErrnoException).code;
  const name = err.name && err.name !== 'Error' ? `${err.name}: ` : '';
  ctx.stderr.write(`error: ${name}${firstLine(err.message)}${code ? ` (${code})` : ''}\n`);
  if (debug) ctx.stderr.write((err.stack ?? String(err)) + '\n');
  else ctx.stderr.write('run with DIMOO_DEBUG=1 for details\n');
  return EXIT_ERROR;
}
