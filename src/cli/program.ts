/**
 * The `dimoo` command tree. `runCli` parses and runs one command line and
 * returns the exit code instead of exiting, so tests can drive it in-process.
 */
import { Command, CommanderError } from 'commander';
import type { CliContext } from './context.js';
import { reportError, writeError } from './errors.js';
import { packageVersion } from '../util/version.js';
import { isDimooError } from '../errors.js';
import { registerCompletion } from './commands/completion.js';
import { registerDecode } from './commands/decode.js';
import { registerDownload } from './commands/download.js';
import { registerDemo } from './commands/demo.js';
import { registerEdit } from './commands/edit.js';
import { registerEncode } from './commands/encode.js';
import { registerGenerate } from './commands/generate.js';
import { registerInitRandom } from './commands/init-random.js';
import { registerInspect } from './commands/inspect.js';
import { registerInpaint, registerOutpaint } from './commands/paint.js';
import { registerRetouch } from './commands/retouch.js';
import { registerShapes } from './commands/shapes.js';
import { registerUnderstand } from './commands/understand.js';
import { registerQuantizeCommand } from './commands/quantize.js';
import { registerTrain } from './commands/train.js';
import { registerLora } from './commands/lora.js';
import { registerServeCommand } from './commands/serve.js';
import { registerWorkerCommand } from './commands/worker.js';

export function buildProgram(ctx: CliContext, opts: { jsonErrors?: boolean } = {}): Command {
  const program = new Command('dimoo');
  program
    .description('Lumina-DiMOO on ONNX Runtime: text-to-image, editing, inpainting, understanding')
    .version(packageVersion(), '-V, --version')
    // Settings below are inherited by the subcommands created with .command().
    .exitOverride()
    .configureOutput({
      writeOut: (s) => ctx.stdout.write(s),
      writeErr: (s) => ctx.stderr.write(s),
      // With --json, runCli writes commander's errors as JSON instead.
      outputError: (s, write) => {
        if (!opts.jsonErrors) write(s);
      },
    })
    .showSuggestionAfterError(true)
    .allowExcessArguments(false);
  registerGenerate(program, ctx);
  registerEdit(program, ctx);
  registerInpaint(program, ctx);
  registerOutpaint(program, ctx);
  registerRetouch(program, ctx);
  registerUnderstand(program, ctx);
  registerEncode(program, ctx);
  registerDecode(program, ctx);
  registerInspect(program, ctx);
  registerInitRandom(program, ctx);
  registerDemo(program, ctx);
  registerDownload(program, ctx);
  registerServeCommand(program, ctx);
  registerWorkerCommand(program, ctx);
  registerQuantizeCommand(program, ctx);
  registerTrain(program, ctx);
  registerLora(program, ctx);
  registerShapes(program, ctx);
  registerCompletion(program, ctx);
  return program;
}

/** Exit code of a usage error (unknown flag, missing or bad value), as most Unix tools use. */
export const EXIT_USAGE = 2;

const IMAGE_COMMANDS = new Set(['generate', 'edit', 'inpaint', 'outpaint', 'retouch']);

/**
 * Spellings accepted besides ours, so commands copied from the original
 * scripts work: underscores for hyphens (`--cfg_scale`), `--checkpoint` for
 * `--model`, `--image_path` for `--image`, and `--steps`/`--timesteps` for
 * whichever of the two a command calls its sampling steps.
 */
export function normalizeArgv(argv: string[]): string[] {
  const command = argv.find((a) => !a.startsWith('-'));
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      out.push(...argv.slice(i));
      break;
    }
    const m = /^--([A-Za-z][\w-]*)(=.*)?$/.exec(a);
    if (!m) {
      out.push(a);
      continue;
    }
    let name = m[1]!.replace(/_/g, '-');
    if (name === 'checkpoint') name = 'model';
    else if (name === 'image-path') name = 'image';
    else if (name === 'steps' && command && IMAGE_COMMANDS.has(command)) name = 'timesteps';
    else if (name === 'timesteps' && command === 'understand') name = 'steps';
    out.push(`--${name}${m[2] ?? ''}`);
  }
  return out;
}

/** Whether the command line asks for JSON output (`--json` before any `--`). */
export function wantsJson(argv: readonly string[]): boolean {
  const end = argv.indexOf('--');
  return (end < 0 ? argv : argv.slice(0, end)).includes('--json');
}

/** Runs `argv` (without node and script) and returns the exit code. */
export async function runCli(argv: string[], ctx: CliContext): Promise<number> {
  const json = wantsJson(argv);
  const program = buildProgram(ctx, { jsonErrors: json });
  try {
    await program.parseAsync(normalizeArgv(argv), { from: 'user' });
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.exitCode === 0) return 0; // --help, --version
      // Commander has printed its own "error: ..." unless --json asked for JSON.
      if (!json) return EXIT_USAGE;
      const message = e.message.replace(/^error: /, '').trim();
      return writeError(ctx, { message, code: 'E_USAGE', exitCode: EXIT_USAGE }, true);
    }
    // A bad flag value or parameter is a usage error too.
    const usage = isDimooError(e) && e.code === 'E_PARAM';
    return reportError(e, ctx, { json, ...(usage ? { exitCode: EXIT_USAGE } : {}) });
  }
}
