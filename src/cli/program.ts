/**
 * The `dimoo` command tree. `runCli` parses and runs one command line and
 * returns the exit code instead of exiting, so tests can drive it in-process.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import type { CliContext } from './context.js';
import { reportError } from './errors.js';
import { registerDecode } from './commands/decode.js';
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

/** package.json sits 2 folders up from src/cli and 3 from dist/src/cli; look upwards. */
function packageVersion(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === 'dimoo' && pkg.version) return pkg.version;
    } catch {
      /* not here; keep climbing */
    }
    dir = path.dirname(dir);
  }
  return '0.0.0';
}

export function buildProgram(ctx: CliContext): Command {
  const program = new Command('dimoo');
  program
    .description('Lumina-DiMOO on ONNX Runtime: text-to-image, editing, inpainting, understanding')
    .version(packageVersion(), '-V, --version')
    // Settings below are inherited by the subcommands created with .command().
    .exitOverride()
    .configureOutput({
      writeOut: (s) => ctx.stdout.write(s),
      writeErr: (s) => ctx.stderr.write(s),
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
  registerServeCommand(program, ctx);
  registerQuantizeCommand(program, ctx);
  registerTrain(program, ctx);
  registerLora(program, ctx);
  registerShapes(program, ctx);
  return program;
}

/** Runs `argv` (without node and script) and returns the exit code. */
export async function runCli(argv: string[], ctx: CliContext): Promise<number> {
  const program = buildProgram(ctx);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (e) {
    // Commander has already printed its own one-line "error: ..." (or the help).
    if (e instanceof CommanderError) return e.exitCode;
    return reportError(e, ctx);
  }
}
