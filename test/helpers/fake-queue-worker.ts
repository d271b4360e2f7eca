/**
 * `dimoo worker` with the fake model (no weights) on a worker thread, for
 * queue tests that need many fast jobs: the real command, only the loader
 * differs. Usage: DIMOO_FAKE_WORKER=1 node fake-queue-worker.js STEP_MS -- <worker flags>
 * (without the variable it does nothing: the test runner loads every file under test/).
 */
import { Command } from 'commander';
import { WorkerDimoo } from '../../src/runtime/worker-dimoo.js';
import { registerWorkerCommand } from '../../src/cli/commands/worker.js';

const EXT = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
const FAKE = new URL(`./fake-dimoo${EXT}`, import.meta.url);

if (process.env['DIMOO_FAKE_WORKER'] === '1') main();

function main(): void {
  const stepMs = Number(process.argv[2]);
  const program = new Command('dimoo').exitOverride();
  const ac = new AbortController();
  process.once('SIGINT', () => ac.abort());
  registerWorkerCommand(program, {
    stdout: process.stdout,
    stderr: process.stderr,
    signal: ac.signal,
    loadModel: (dir) =>
      WorkerDimoo.load(dir, { moduleUrl: FAKE, exportName: 'FakeDimoo', extra: { stepMs } }),
  });
  program
    .parseAsync(['node', 'dimoo', 'worker', ...process.argv.slice(4)])
    .then(() => process.exit(0))
    .catch((e: unknown) => {
      process.stderr.write(`fake worker: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(1);
    });
}
