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

/** What the user is told about a failure, before it is written as text or JSON. */
interface Described {
  message: string;
  code: string;
  exitCode: number;
  /** Printed after the message in text form (not in JSON). */
  hint?: string;
}

function describe(e: unknown, debug: boolean): Described & { stack?: string } {
  if (e instanceof CancelledError) return { message: 'cancelled', code: e.code, exitCode: EXIT_CANCELLED };
  if (isDimooError(e)) return { message: firstLine(e.message), code: e.code, exitCode: EXIT_ERROR, stack: e.stack };
  // A file-system failure is the environment's, not a bug: name the file and the cause.
  if (isSystemError(e) && e.path)
    return { message: `${e.path}: ${systemCause(e)}`, code: 'E_IO', exitCode: EXIT_ERROR, stack: e.stack };
  const err = e instanceof Error ? e : new Error(String(e));
  const code = (err as NodeJS.ErrnoException).code;
  const name = err.name && err.name !== 'Error' ? `${err.name}: ` : '';
  return {
    message: `${name}${firstLine(err.message)}${code ? ` (${code})` : ''}`,
    code: 'E_INTERNAL',
    exitCode: EXIT_ERROR,
    stack: err.stack ?? String(err),
    ...(debug ? {} : { hint: 'run with DIMOO_DEBUG=1 for details' }),
  };
}

export interface ReportOptions {
  /** `--json` was given: one `{"error": {...}}` line on stderr instead of text. */
  json?: boolean;
  /** Overrides the exit code (usage errors: 2). */
  exitCode?: number;
}

/** Writes one error in the chosen form; returns the exit code. */
export function writeError(
  ctx: Pick<CliContext, 'stderr'>,
  d: { message: string; code: string; exitCode: number; hint?: string },
  json: boolean,
): number {
  if (json) {
    const error = { message: d.message, code: d.code, exit_code: d.exitCode };
    ctx.stderr.write(JSON.stringify({ error }) + '\n');
  } else {
    ctx.stderr.write(`error: ${d.message}\n`);
    if (d.hint) ctx.stderr.write(d.hint + '\n');
  }
  return d.exitCode;
}

/** Prints the error and returns the exit code. */
export function reportError(
  e: unknown,
  ctx: Pick<CliContext, 'stderr' | 'env'>,
  opts: ReportOptions = {},
): number {
  const debug = debugEnabled(ctx.env);
  const d = describe(e, debug);
  if (opts.exitCode !== undefined) d.exitCode = opts.exitCode;
  const code = writeError(ctx, d, opts.json === true);
  if (debug && d.stack && !(e instanceof CancelledError)) ctx.stderr.write(d.stack + '\n');
  return code;
}
