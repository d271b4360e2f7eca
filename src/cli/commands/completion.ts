/** `dimoo completion bash|zsh|fish`: print a shell completion script (cli/completion.ts). */
import type { Command } from 'commander';
import { completionScript, SHELLS, type Shell } from '../completion.js';
import type { CliContext } from '../context.js';
import { choiceOpt } from '../options.js';

export function registerCompletion(program: Command, ctx: CliContext): void {
  program
    .command('completion')
    .description('print a shell completion script: source <(dimoo completion bash)')
    .argument('<shell>', SHELLS.join(', '), choiceOpt('shell', SHELLS))
    .action((shell: Shell) => {
      ctx.stdout.write(completionScript(program, shell));
    });
}
