/**
 * Runs one bench task in this process and prints its result as one line
 * `BENCH_RESULT {json}` (or `BENCH_ERROR message`). Started by bench.ts, one
 * process per configuration, so peak RSS and load time are that
 * configuration's alone.
 */
import { TASKS, type TaskName } from './tasks.js';

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? '{}') as { task: TaskName; args: unknown };
  const fn = TASKS[spec.task] as (a: unknown) => Promise<unknown>;
  if (!fn) throw new Error(`unknown bench task ${String(spec.task)}`);
  const r = await fn(spec.args);
  process.stdout.write(`BENCH_RESULT ${JSON.stringify(r)}\n`);
}

main().catch((e: unknown) => {
  process.stdout.write(`BENCH_ERROR ${(e as Error)?.message ?? String(e)}\n`);
  process.exitCode = 1;
});
