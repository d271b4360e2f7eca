/**
 * `dimoo quantize MODEL_DIR --bits 8|4 [--format nbits|qgemm] --out DIR`: a
 * repacked checkpoint whose linear weights are MatMulNBits blocks (nbits; the
 * 4-bit default) or int8 per output channel for the integer GEMM (qgemm; the
 * 8-bit default), see src/tools/quantize.ts; every command loads it like any
 * checkpoint.
 */
import * as path from 'node:path';
import type { Command } from 'commander';
import type { QuantBits } from '../../checkpoint/quant-blocks.js';
import { QUANT_FORMATS, type QuantFormat } from '../../checkpoint/quantized.js';
import { quantizeCheckpoint, DEFAULT_BLOCK_SIZE, type QuantizeResult } from '../../tools/quantize.js';
import type { CliContext } from '../context.js';
import { folderArgOrModel } from '../model.js';
import { choiceOpt, intOpt } from '../options.js';
import { formatBytes, writeJson } from '../output.js';
import { createProgressBar, type ProgressMode } from '../progress.js';

export interface QuantizeCommandOptions {
  bits: QuantBits;
  out: string;
  blockSize?: number;
  format?: QuantFormat;
  embedding?: 'int8' | 'plain';
  json?: boolean;
  progress?: ProgressMode;
}

/** Runs the command (also usable without commander): prints a summary and returns the result. */
export async function quantizeCommand(ctx: CliContext, modelDir: string, o: QuantizeCommandOptions): Promise<QuantizeResult> {
  const bar = createProgressBar(ctx.stderr, o.progress);
  let started = false;
  let result: QuantizeResult;
  try {
    result = await quantizeCheckpoint(modelDir, o.out, {
      bits: o.bits,
      ...(o.blockSize !== undefined && { blockSize: o.blockSize }),
      ...(o.format !== undefined && { format: o.format }),
      ...(o.embedding !== undefined && { embedding: o.embedding }),
      onProgress: (done, total) => {
        if (!started) {
          bar.start(Math.max(1, Math.round(total / 2 ** 20)), `quantizing to ${o.bits} bits`, 'MiB');
          started = true;
        }
        bar.update(Math.round(done / 2 ** 20), 'MiB');
      },
    });
  } finally {
    bar.stop();
  }
  const m = result.manifest;
  const embedding = m.linears['model.transformer.wte.weight']?.bits === 8 ? 'int8' : 'plain';
  if (o.json) {
    writeJson(ctx.stdout, {
      dir: result.dir,
      bits: m.bits,
      format: m.quant_format ?? 'nbits',
      blockSize: m.block_size,
      weightsFile: result.weightsFile,
      bytes: result.bytes,
      sourceBytes: m.source.bytes,
      linears: Object.keys(m.linears).length,
      embedding,
      seconds: Math.round(result.seconds * 10) / 10,
    });
  } else {
    ctx.stdout.write(
      `wrote ${result.dir}: ${m.quant_format === 'qgemm' ? '8-bit per output channel (integer GEMM)' : `${m.bits}-bit blocks of ${m.block_size}`} for ${Object.keys(m.linears).length} matrices (embedding ${embedding === 'int8' ? '8-bit' : 'as stored'}), ` +
        `${path.basename(result.weightsFile)} ${formatBytes(result.bytes)} (source ${formatBytes(m.source.bytes)}) in ${result.seconds.toFixed(1)} s\n`,
    );
  }
  return result;
}

export function registerQuantizeCommand(program: Command, ctx: CliContext): void {
  program
    .command('quantize')
    .description('write an 8-bit or 4-bit copy of a checkpoint (ONNX Runtime integer GEMM or MatMulNBits blocks, loads memory-mapped)')
    .argument('[model_dir]', 'checkpoint folder (official layout; or --model)')
    .option('--model <dir>', 'checkpoint folder (instead of MODEL_DIR)')
    .requiredOption('--bits <n>', 'weight bits: 8 or 4', (raw: string) => Number(choiceOpt('--bits', ['8', '4'] as const)(raw)) as QuantBits)
    .requiredOption('--out <dir>', 'output folder (new or empty, or an earlier quantized copy)')
    .option(
      '--block-size <n>',
      `values per scale along K, a power of two 16..256 (default ${DEFAULT_BLOCK_SIZE[8]} for 8 bits, ${DEFAULT_BLOCK_SIZE[4]} for 4)`,
      intOpt('--block-size', { min: 16, max: 256 }),
    )
    .option(
      '--format <kind>',
      'linear layout: qgemm (8 bits only, their default: int8 per output channel on the integer GEMM, ~1.7x the kernel speed on CPUs with VNNI) ' +
        'or nbits (MatMulNBits blocks; the 4-bit default; use it for 8-bit QLoRA bases and on WebGPU)',
      choiceOpt('--format', QUANT_FORMATS),
    )
    .option(
      '--embedding <how>',
      'input embedding: int8 (8-bit blocks, GatherBlockQuantized; default) or plain (as stored)',
      choiceOpt('--embedding', ['int8', 'plain'] as const),
    )
    .option('--json', 'print a summary as JSON')
    .option('--progress', 'show a progress bar on stderr even when it is not a terminal')
    .option('--no-progress', 'never show a progress bar')
    .action(async (arg: string | undefined, f: QuantizeCommandOptions & { model?: string }) => {
      await quantizeCommand(ctx, folderArgOrModel(arg, f.model), f);
    });
}
