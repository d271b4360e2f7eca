/** `dimoo download OWNER/NAME`: fetch a checkpoint into the Hugging Face cache and print its folder. */
import type { Command } from 'commander';
import { resolveModelDir, isHubId } from '../../checkpoint/hub.js';
import { DimooError } from '../../errors.js';
import type { CliContext } from '../context.js';
import { loadProgress } from '../model.js';
import { writeJson } from '../output.js';
import type { ProgressMode } from '../progress.js';

interface DownloadFlags {
  revision?: string;
  json?: boolean;
  progress?: ProgressMode;
}

export function registerDownload(program: Command, ctx: CliContext): void {
  program
    .command('download')
    .description(
      'download a checkpoint from the Hugging Face Hub into its cache (HF_HOME, HF_HUB_CACHE; HF_TOKEN)',
    )
    .argument('<id>', 'Hugging Face id, e.g. Alpha-VLLM/Lumina-DiMOO')
    .option('--revision <rev>', 'branch, tag or commit (default main)')
    .option('--json', 'print {"dir": ...} on stdout')
    .option('--progress', 'show a progress bar on stderr even when it is not a terminal')
    .option('--no-progress', 'never show a progress bar')
    .action(async (id: string, f: DownloadFlags) => {
      if (!isHubId(id))
        throw new DimooError(
          `${id}: not a Hugging Face id (owner/name), or a local path that exists`,
          'E_PARAM',
        );
      const shown = loadProgress(ctx, f.progress);
      let dir: string;
      try {
        dir = await resolveModelDir(id, {
          ...(f.revision ? { revision: f.revision } : {}),
          onProgress: (p) =>
            shown.onProgress({ stage: 'download', done: p.done, total: p.total, detail: p.file }),
        });
      } finally {
        shown.stop();
      }
      if (f.json) writeJson(ctx.stdout, { id, revision: f.revision ?? 'main', dir });
      else writeLine(ctx.stdout, dir);
    });
}

function writeLine(stream: NodeJS.WritableStream, line: string): void {
  stream.write(line + '\n');
}
