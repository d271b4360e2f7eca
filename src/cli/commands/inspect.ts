/** `dimoo inspect MODEL_DIR`: config, parameter count, dtypes, memory per precision. */
import * as path from 'node:path';
import type { Command } from 'commander';
import { inspectCheckpoint, type CheckpointInspection } from '../../tools/inspect.js';
import type { CliContext } from '../context.js';
import { checkModelDir, folderArgOrModel } from '../model.js';
import { formatBytes, formatCount, formatKeyValues, formatTable, writeJson } from '../output.js';

interface VqSummary {
  blockOutChannels: number[];
  latentChannels: number;
  numVqEmbeddings: number;
  scaleFactor: number;
  midBlockAddAttention: boolean;
}

async function vqSummary(info: CheckpointInspection): Promise<VqSummary | null> {
  if (!info.hasVqvae) return null;
  const { loadVqConfig } = await import('../../checkpoint/vq-config.js');
  const c = loadVqConfig(path.join(info.dir, 'vqvae'));
  return {
    blockOutChannels: c.blockOutChannels,
    latentChannels: c.latentChannels,
    numVqEmbeddings: c.numVqEmbeddings,
    scaleFactor: c.scaleFactor,
    midBlockAddAttention: c.midBlockAddAttention,
  };
}

export function formatInspection(info: CheckpointInspection, vq: VqSummary | null): string {
  const c = info.config;
  const p = info.parameters;
  const lines: string[] = [];
  lines.push(`checkpoint ${info.dir}`, '');
  lines.push('config');
  lines.push(
    formatKeyValues([
      ['d_model', String(c.dModel)],
      [
        'n_heads / n_kv_heads',
        `${c.nHeads} / ${c.nKvHeads}${c.nKvHeads < c.nHeads ? ' (grouped K/V)' : ''}`,
      ],
      ['head_dim', String(c.headDim)],
      ['n_layers', String(c.nLayers)],
      ['mlp_hidden_size', String(c.mlpHiddenSize)],
      ['vocab / embedding size', `${c.vocabSize} / ${c.embeddingSize}`],
      ['max_sequence_length', String(c.maxSequenceLength)],
      ['rope_theta', String(c.ropeTheta)],
      ['rms_norm_eps', String(c.rmsNormEps)],
      ['weight_tying', String(c.weightTying)],
      ['include_bias / qkv_bias', `${c.includeBias} / ${c.includeQkvBias}`],
      ['mask / eos / pad ids', `${c.maskTokenId} / ${c.eosTokenId} / ${c.padTokenId}`],
    ]),
  );
  lines.push('', `parameters  ${formatCount(p.total)} (${p.total.toLocaleString('en-US')})`);
  lines.push(
    formatKeyValues([
      ['embedding', formatCount(p.embedding)],
      ['output head', formatCount(p.head)],
      ['layers', `${formatCount(p.layers)} (${formatCount(p.perLayer)} each)`],
      ['final norm', formatCount(p.finalNorm)],
    ]),
  );
  lines.push(
    '',
    `weights  ${info.tensorCount} tensors in ${info.disk.weightFiles} file(s), ${formatBytes(info.disk.weightFileBytes)} on disk`,
  );
  lines.push(
    formatTable(
      ['dtype', 'tensors', 'bytes'],
      Object.keys(info.dtypes)
        .sort()
        .map((d) => [d, String(info.dtypes[d]), formatBytes(info.bytesByDtype[d] ?? 0)]),
    ),
  );
  const m = info.memory;
  lines.push('', 'memory for the language-model weights (activations and K/V cache not included)');
  lines.push(
    formatTable(
      ['precision', 'bytes'],
      [
        ['fp32', formatBytes(m.fp32)],
        ['bf16', formatBytes(m.bf16)],
        ['fp16', formatBytes(m.fp16)],
        ['int8', formatBytes(m.int8)],
        ['int4', formatBytes(m.int4)],
      ],
    ),
  );
  lines.push('');
  if (vq) {
    lines.push(
      `vqvae  yes: channels [${vq.blockOutChannels.join(', ')}], ${vq.latentChannels} latent channels, ` +
        `${vq.numVqEmbeddings} codes, ${vq.scaleFactor}x downsampling${vq.midBlockAddAttention ? ', mid-block attention' : ''}`,
    );
  } else {
    lines.push('vqvae  none (token grids only: --tokens-out / --image-tokens)');
  }
  lines.push(`tokenizer_config.json  ${info.hasTokenizerConfig ? 'yes' : 'no'}`);
  lines.push(`folder  ${formatBytes(info.disk.folderBytes)} in all`);
  return lines.join('\n') + '\n';
}

export function registerInspect(program: Command, ctx: CliContext): void {
  program
    .command('inspect')
    .description('show a checkpoint: config, parameters, dtypes, memory per precision')
    .argument('[model_dir]', 'checkpoint folder (or --model)')
    .option('--model <dir>', 'checkpoint folder (instead of MODEL_DIR)')
    .option('--json', 'print the inspection as JSON')
    .action(async (arg: string | undefined, f: { json?: boolean; model?: string }) => {
      const dir = folderArgOrModel(arg, f.model);
      checkModelDir(dir, 'model folder');
      const info = inspectCheckpoint(dir);
      const vq = await vqSummary(info);
      if (f.json) writeJson(ctx.stdout, { ...info, vqvae: vq });
      else ctx.stdout.write(formatInspection(info, vq));
    });
}
