/**
 * `dimoo lora merge`: folds LoRA adapters into the base weights
 * (W + scale * B A per adapted linear) and writes a complete checkpoint in the
 * official layout, atomically. The merged model gives the same logits as the
 * base with `--lora` applied on the fly (up to float32 rounding; bf16 saving
 * rounds the merged weights once more).
 */
import * as fs from 'node:fs';
import type { Command } from 'commander';
import { DimooError } from '../../errors.js';
import { openCheckpoint } from '../../checkpoint/folder.js';
import { loadLoraAdapters, mergeLoraWeight, type LoraRef } from '../../checkpoint/lora.js';
import { readTensorFloat32 } from '../../checkpoint/safetensors.js';
import { writeRunFolder, type SaveDtype } from '../../training/save.js';
import { loraOpt } from '../common.js';
import type { CliContext } from '../context.js';
import { checkModelDir } from '../model.js';
import { choiceOpt } from '../options.js';
import { writeJson } from '../output.js';

interface MergeFlags {
  model: string;
  lora?: LoraRef[];
  out: string;
  saveDtype: SaveDtype;
  json?: boolean;
}

export function registerLora(program: Command, ctx: CliContext): void {
  const lora = program.command('lora').description('LoRA adapters (PEFT folders)');
  lora
    .command('merge')
    .description('write a checkpoint with the adapters folded into the base weights')
    .requiredOption('--model <dir>', 'base checkpoint folder (float weights)')
    .requiredOption(
      '--lora <dir[:scale]>',
      'adapter folder, optionally scaled; repeat for several',
      loraOpt,
    )
    .requiredOption('--out <dir>', 'folder of the merged checkpoint')
    .option(
      '--save-dtype <d>',
      'bf16 (official) or float32',
      choiceOpt('--save-dtype', ['bf16', 'float32'] as const),
      'bf16',
    )
    .option('--json', 'print a machine-readable result on stdout')
    .action(async (f: MergeFlags) => {
      checkModelDir(f.model);
      if (fs.existsSync(f.out) && fs.realpathSync(f.out) === fs.realpathSync(f.model)) {
        throw new DimooError('--out must not be the --model folder', 'E_PARAM');
      }
      const base = openCheckpoint(f.model);
      if ((base as { quantized?: unknown }).quantized) {
        throw new DimooError(
          `${base.dir} is a quantized folder; merging needs float weights (merge into the original checkpoint, then quantize)`,
          'E_PARAM',
        );
      }
      const adapters = loadLoraAdapters(f.lora ?? [], base.config);
      const params = new Map<string, { shape: number[]; data: Float32Array }>();
      for (const [name, branches] of adapters) {
        const info = base.weights.get(name)!;
        params.set(name, {
          shape: info.shape,
          data: mergeLoraWeight(readTensorFloat32(info), info.shape, branches),
        });
      }
      writeRunFolder(f.out, { base, params, dtype: f.saveDtype });
      if (f.json)
        writeJson(ctx.stdout, { out: f.out, merged: [...adapters.keys()], dtype: f.saveDtype });
      else ctx.stdout.write(`wrote ${f.out}: ${adapters.size} linear(s) merged (${f.saveDtype})\n`);
    });
}
