/** `dimoo decode`: a token grid file -> an image, through the checkpoint's VQ-VAE. */
import type { Command } from 'commander';
import { addModelOptions, type ModelCommandFlags } from '../common.js';
import type { CliContext } from '../context.js';
import { requireVq, withModel } from '../model.js';
import { checkImageOutPath, formatMs, writeJson, writeRgbImage } from '../output.js';
import { readTokenGridFile } from '../token-grid.js';

interface DecodeFlags extends ModelCommandFlags {
  imageTokens: string;
  out: string;
}

export function registerDecode(program: Command, ctx: CliContext): void {
  const cmd = program
    .command('decode')
    .description('a token grid {"height","width","codes"} to an image')
    .requiredOption('--image-tokens <file.json>', 'the token grid')
    .requiredOption('--out <file>', 'output image (.png, .jpg, .webp)');
  addModelOptions(cmd);
  cmd.action(async (f: DecodeFlags) => {
    const grid = readTokenGridFile(f.imageTokens);
    checkImageOutPath('--out', f.out);
    await withModel(ctx, f, async (api) => {
      requireVq(api, 'to decode token grids');
      const t0 = performance.now();
      const img = await api.decodeTokens(grid);
      await writeRgbImage(f.out, img);
      const ms = performance.now() - t0;
      if (f.json)
        writeJson(ctx.stdout, { out: f.out, width: img.width, height: img.height, totalMs: ms });
      else ctx.stdout.write(`wrote ${f.out} (${img.width}x${img.height}, ${formatMs(ms)})\n`);
    });
  });
}
