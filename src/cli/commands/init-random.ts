/**
 * `dimoo init-random DIR --preset ...`: a random-weight checkpoint in the
 * official layout, for tests, benchmarks and the demo.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { DimooError } from '../../errors.js';
import {
  PRESETS,
  resolveSizes,
  writeRandomCheckpoint,
  type PresetName,
  type RandomCheckpointResult,
} from '../../tools/random-checkpoint.js';
import type { CliContext } from '../context.js';
import { choiceOpt, intOpt } from '../options.js';
import { formatBytes, formatCount, writeJson } from '../output.js';
import { createProgressBar, type ProgressMode } from '../progress.js';

export type VqChoice = 'tiny' | 'amused' | 'none';
const PRESET_NAMES = Object.keys(PRESETS) as PresetName[];

export interface InitRandomOptions {
  preset: PresetName;
  seed?: number;
  nKvHeads?: number;
  vq?: VqChoice;
  progress?: ProgressMode;
}

/** Small presets get the tiny VQ-VAE; the big ones the real aMUSEd sizes. */
export function defaultVqFor(preset: PresetName): VqChoice {
  return preset === 'tiny' || preset === 'small' ? 'tiny' : 'amused';
}

/** Shared with `dimoo demo`. */
export async function initRandom(
  ctx: CliContext,
  dir: string,
  o: InitRandomOptions,
): Promise<{ result: RandomCheckpointResult; vq: VqChoice }> {
  const sizes = resolveSizes(o.preset);
  if (o.nKvHeads !== undefined && sizes.nHeads % o.nKvHeads !== 0) {
    throw new DimooError(
      `--n-kv-heads ${o.nKvHeads} must divide the preset's n_heads (${sizes.nHeads})`,
      'E_PARAM',
    );
  }
  if (fs.existsSync(dir) && !fs.statSync(dir).isDirectory()) {
    throw new DimooError(`${dir} exists and is not a folder`, 'E_PARAM');
  }
  const vq = o.vq ?? defaultVqFor(o.preset);
  const bar = createProgressBar(ctx.stderr, o.progress);
  let started = false;
  try {
    const result = await writeRandomCheckpoint(dir, o.preset, {
      ...(o.seed !== undefined && { seed: o.seed }),
      ...(o.nKvHeads !== undefined && { overrides: { nKvHeads: o.nKvHeads } }),
      ...(vq !== 'none' && {
        writeVq: async (vqDir: string) => {
          const { writeRandomVq } = await import('../../tools/random-vq.js');
          writeRandomVq(vqDir, vq, o.seed !== undefined ? { seed: o.seed } : {});
        },
      }),
      onProgress: (done, total) => {
        // Weights are written in chunks; the bar counts MiB so the numbers stay readable.
        if (!started) {
          bar.start(Math.max(1, Math.round(total / 2 ** 20)), 'writing weights', 'MiB');
          started = true;
        }
        bar.update(Math.round(done / 2 ** 20), 'MiB');
      },
    });
    return { result, vq };
  } finally {
    bar.stop();
  }
}

export function registerInitRandom(program: Command, ctx: CliContext): void {
  program
    .command('init-random')
    .description(
      'write a random-weight checkpoint in the official layout (for tests and benchmarks)',
    )
    .argument('<dir>', 'output folder (created)')
    .requiredOption(
      '--preset <name>',
      `model size: ${PRESET_NAMES.join(', ')}`,
      choiceOpt('--preset', PRESET_NAMES),
    )
    .option('--seed <n>', 'weight seed (default 0)', intOpt('--seed', { min: 0 }))
    .option(
      '--n-kv-heads <n>',
      'K/V heads (fewer than n_heads = grouped K/V)',
      intOpt('--n-kv-heads', { min: 1 }),
    )
    .option(
      '--vq <preset>',
      'VQ-VAE: tiny, amused (real size) or none (default: tiny for tiny/small, amused otherwise)',
      choiceOpt('--vq', ['tiny', 'amused', 'none'] as const),
    )
    .option('--json', 'print a summary as JSON')
    .option('--progress', 'show a progress bar on stderr even when it is not a terminal')
    .option('--no-progress', 'never show a progress bar')
    .action(async (dir: string, f: InitRandomOptions & { json?: boolean }) => {
      const { result, vq } = await initRandom(ctx, dir, f);
      const c = result.config;
      if (f.json) {
        writeJson(ctx.stdout, {
          dir: path.resolve(dir),
          preset: f.preset,
          parameters: result.parameters,
          totalSize: result.totalSize,
          shardFiles: result.shardFiles.map((s) => path.basename(s)),
          nHeads: c.nHeads,
          nKvHeads: c.nKvHeads,
          vq,
        });
        return;
      }
      ctx.stdout.write(
        `wrote ${path.resolve(dir)}: preset ${f.preset}, ${formatCount(result.parameters)} parameters, ` +
          `${formatBytes(result.totalSize)} of bf16 weights in ${result.shardFiles.length} shard(s), ` +
          `vqvae ${vq}\n`,
      );
    });
}
