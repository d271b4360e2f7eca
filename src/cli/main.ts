/**
 * Entry point of the `dimoo` executable: wires the process (streams, Ctrl-C,
 * exit code) to runCli. Nothing here is needed by tests that run in-process.
 */
import * as os from 'node:os';
import type { CliContext } from './context.js';
import { EXIT_ERROR, reportError } from './errors.js';
import { loadDimoo } from './model.js';
import { runCli, wantsJson } from './program.js';

const controller = new AbortController();
let interrupts = 0;
// First Ctrl-C (or SIGTERM) cancels between steps (outputs are written atomically,
// so nothing is left half-written; `serve` stops accepting and cancels its jobs);
// a second one quits at once.
const onSignal = (sig: NodeJS.Signals): void => {
  interrupts++;
  if (interrupts === 1) {
    process.stderr.write(
      `\n${sig === 'SIGINT' ? 'cancelling' : `${sig}: stopping`}... (Ctrl-C again to quit now)\n`,
    );
    controller.abort();
    return;
  }
  // process.exit() would first terminate the model's worker thread inside an ORT
  // call, which aborts the process ("terminate called after throwing Napi::Error",
  // exit 134). Dying by the signal itself skips that and is what shells expect
  // (status 128 + signal: 130 for Ctrl-C).
  process.removeAllListeners('SIGINT');
  process.removeAllListeners('SIGTERM');
  process.kill(process.pid, sig);
};
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);

const ctx: CliContext = {
  stdout: process.stdout,
  stderr: process.stderr,
  loadModel: loadDimoo,
  signal: controller.signal,
  env: process.env,
  home: os.homedir(),
};

// Last-resort guards: whatever escapes still ends as one line, not a stack trace.
const fatal = (e: unknown): void => {
  process.exit(reportError(e, ctx, { json: wantsJson(process.argv.slice(2)) }) || EXIT_ERROR);
};
process.on('uncaughtException', fatal);
process.on('unhandledRejection', fatal);
// `dimoo ... | head` closes stdout early; that is not an error worth a message.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(0);
  fatal(e);
});

const code = await runCli(process.argv.slice(2), ctx);
// Exit explicitly (after stdout drains): ONNX Runtime threads may otherwise keep the process alive.
process.stdout.write('', () => process.exit(code));
