/**
 * Entry point of the `dimoo` executable: wires the process (streams, Ctrl-C,
 * exit code) to runCli. Nothing here is needed by tests that run in-process.
 */
import * as os from 'node:os';
import type { CliContext } from './context.js';
import { EXIT_CANCELLED, EXIT_ERROR, reportError } from './errors.js';
import { loadDimoo } from './model.js';
import { runCli } from './program.js';

const controller = new AbortController();
let interrupts = 0;
// First Ctrl-C cancels between steps (outputs are written atomically, so nothing
// is left half-written); a second one quits at once.
process.on('SIGINT', () => {
  interrupts++;
  if (interrupts === 1) {
    process.stderr.write('\ncancelling... (Ctrl-C again to quit now)\n');
    controller.abort();
  } else {
    process.exit(EXIT_CANCELLED);
  }
});

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
  process.exit(reportError(e, ctx) || EXIT_ERROR);
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
