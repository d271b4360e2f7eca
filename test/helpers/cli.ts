/**
 * The shipped executable, run as a user runs it: `bin/dimoo.js` on the built
 * `dist/` (what npm installs), not the TypeScript sources through a loader.
 */
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import * as path from 'node:path';

/** bin/dimoo.js of this checkout (tests run from the repository root, after `npm run build`). */
export const DIMOO_BIN = path.resolve('bin/dimoo.js');

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `dimoo ARGS` to completion (DIMOO_DEBUG cleared, so errors are the one-line form users see). */
export function runDimoo(
  args: string[],
  opts: { env?: Record<string, string>; timeoutMs?: number } = {},
): CliRun {
  const r = spawnSync(process.execPath, [DIMOO_BIN, ...args], {
    encoding: 'utf8',
    env: { ...process.env, DIMOO_DEBUG: '', ...opts.env },
    timeout: opts.timeoutMs ?? 300_000,
    maxBuffer: 64 << 20,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Starts `dimoo ARGS` as a child process (for tests that signal it or read it as it runs). */
export function spawnDimoo(args: string[], opts: SpawnOptions = {}): ChildProcess {
  return spawn(process.execPath, [DIMOO_BIN, ...args], {
    ...opts,
    env: { ...process.env, DIMOO_DEBUG: '', ...opts.env },
  });
}

/** `generate` argv for the quickest real run: 32x32, 2 MaskGIT steps, 1 thread, written to `out`. */
export function tinyGenerateArgs(model: string, prompt: string, out: string): string[] {
  return [
    'generate',
    '--model',
    model,
    '--prompt',
    prompt,
    '--width',
    '32',
    '--height',
    '32',
    '--timesteps',
    '2',
    '--threads',
    '1',
    '--out',
    out,
  ];
}
