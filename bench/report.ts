/**
 * The bench's results: one JSON object (with the summary keys the issue asks
 * for) and the printed table.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { GemmResult } from './gemm.js';
import type { ForwardRow, MlCacheRow, QualityRow, StepRow, UnderstandingRow } from './tasks.js';
import type { VqRow } from './vq.js';
import type { ClusterRow } from './cluster.js';
import type { TorchTrainRow, TrainRow } from './train.js';

export interface Results {
  machine: Record<string, unknown> & { threads: number };
  gemm: GemmResult[];
  /** The int8 kernel table (--only int8): every kernel at M = 1024, 128, 32, interleaved in one process. */
  int8Kernels: GemmResult[];
  forward: (ForwardRow & { preset: string; threads: number })[];
  step: (StepRow & {
    preset: string;
    size: number;
    precision: string;
    threads: number;
    mfu?: number;
  })[];
  mlcache: (MlCacheRow & { preset: string; size: number })[];
  understanding: (UnderstandingRow & { preset: string })[];
  quality: (QualityRow & { precision: string })[];
  vq: VqRow[];
  /** Training steps (--only train): ours per config, and the PyTorch step beside the small row. */
  train: (TrainRow & { label: string; preset: string; precision: string; mfu?: number })[];
  trainTorch?: TorchTrainRow & { preset: string };
  /** The job queue (--only cluster). */
  cluster?: ClusterRow;
  notes: string[];
}

/** Keys every JSON report has (numbers, or null where the row was skipped). */
export const SUMMARY_KEYS = [
  'gemm_gflops_fp32',
  't2i_step_mfu_1b_512',
  'mlcache_speedup_64',
  'mlcache_code_agreement',
  'understanding_speedup',
  'understanding_agreement',
  'understanding_mlcache_speedup',
  'understanding_mlcache_agreement',
  'rss_gb_8b_int8',
  'rss_gb_8b_int4',
  'gemm_gflops_int8_qgemm',
  'gemm_gflops_int8',
  't2i_step_mfu_8b_int8_256',
  'int8_golden_token_agreement',
  'train_tokens_per_s_small',
  'train_mfu_small',
  'train_rss_gb_8b_int4_lora',
] as const;

export function emptyResults(machine: Results['machine']): Results {
  return {
    machine,
    gemm: [],
    int8Kernels: [],
    forward: [],
    step: [],
    mlcache: [],
    understanding: [],
    quality: [],
    vq: [],
    train: [],
    notes: [],
  };
}

/**
 * The JSON object. `earlier8b` is a results file of an earlier full run: the
 * 8B peak RSS is taken from it (and said so) when this run skipped the 8B rows.
 */
export function buildJson(res: Results, earlier8b?: string): Record<string, unknown> {
  const threads = res.machine.threads;
  const step = (preset: string, size: number, precision = 'fp32') =>
    res.step.find((s) => s.preset === preset && s.size === size && s.precision === precision);
  // The int8 table's M = 1024 rows stand in for the gemm section's when only it ran.
  const gemm = (kind: string, t: number, prepack = true) =>
    res.gemm.find((g) => g.kind === kind && g.threads === t && g.prepack === prepack)?.gflops ??
    (prepack ? kernel(kind, 1024) : undefined);
  const kernel = (kind: string, M: number) =>
    res.int8Kernels.find((g) => g.kind === kind && g.M === M)?.gflops;
  const ratio = (a?: number, b?: number) => (a !== undefined && b !== undefined ? a / b : null);
  const qStep = (size: number) => step('8b', size, 'int8-qgemm');
  const qQuality = res.quality.find((q) => q.precision === 'int8-qgemm');
  const trainSmall = res.train.find(
    (t) => t.preset === 'small' && t.precision === 'fp32' && t.lora === undefined,
  );
  const train8b = res.train.find(
    (t) => t.preset === '8b' && t.precision === 'int4' && t.lora !== undefined,
  );
  const ml = res.mlcache.at(-1);
  const und = res.understanding.filter((u) => u.preset !== 'golden-tiny').at(-1);
  // The 8B rows at the default load settings (the first of each precision).
  let rss8: Record<string, number | null> = {
    int8: step('8b', 512, 'int8')?.peakRssGb ?? null,
    int4: step('8b', 512, 'int4')?.peakRssGb ?? null,
  };
  let rss8From: string | undefined;
  if (rss8.int8 === null && earlier8b && fs.existsSync(earlier8b)) {
    const rows = JSON.parse(fs.readFileSync(earlier8b, 'utf8')) as {
      precision: string;
      peakRssGb: number;
    }[];
    rss8 = {
      int8: rows.find((r) => r.precision === 'int8')?.peakRssGb ?? null,
      int4: rows.find((r) => r.precision === 'int4')?.peakRssGb ?? null,
    };
    rss8From = `${path.basename(earlier8b)}, an earlier full run (${fs.statSync(earlier8b).mtime.toISOString()})`;
    res.notes.push(`rss_gb_8b_* from ${rss8From}`);
  }
  return {
    gemm_gflops_fp32: gemm('fp32', threads) ?? null,
    gemm_gflops_int8: gemm('int8', threads) ?? null,
    gemm_gflops_int4: gemm('int4', threads) ?? null,
    gemm_gflops_int8_unpacked: gemm('int8', threads, false) ?? null,
    gemm_gflops_int4_unpacked: gemm('int4', threads, false) ?? null,
    gemm_gflops_int8_qgemm: gemm('int8_qgemm', threads) ?? null,
    gemm_gflops_int8_qgemm_tensor: gemm('int8_qgemm_tensor', threads) ?? null,
    // Ratios within the interleaved int8 table (same process, same load).
    int8_qgemm_vs_int8_1024: ratio(kernel('int8_qgemm', 1024), kernel('int8', 1024)),
    int8_qgemm_vs_fp32_1024: ratio(kernel('int8_qgemm', 1024), kernel('fp32', 1024)),
    t2i_step_mfu_8b_int8_256: qStep(256)?.mfu ?? null,
    t2i_step_mfu_8b_int8_512: qStep(512)?.mfu ?? null,
    t2i_step_ms_8b_int8_256: qStep(256)?.stepMs ?? null,
    t2i_step_ms_8b_int8_512: qStep(512)?.stepMs ?? null,
    rss_gb_8b_int8_qgemm_512: qStep(512)?.peakRssGb ?? null,
    int8_golden_token_agreement: qQuality?.caseAgreement ?? null,
    int8_golden_logits_rel_l2: qQuality?.logitsRelL2 ?? null,
    t2i_step_mfu_1b_512: step('1b', 512)?.mfu ?? null,
    t2i_step_model_mfu_1b_512: (() => {
      const s = step('1b', 512);
      const lim = gemm('fp32', threads);
      return s && lim ? s.flops / (s.modelMs * 1e6) / lim : null;
    })(),
    t2i_step_ms_1b_512: step('1b', 512)?.stepMs ?? null,
    mlcache_speedup_64: ml?.speedup ?? null,
    mlcache_model_speedup_64: ml?.modelSpeedup ?? null,
    mlcache_code_agreement: ml?.codeAgreement ?? null,
    mlcache_final_logit_rel_l2: ml?.finalLogitRelL2 ?? null,
    mlcache_config: ml ? `${ml.preset} ${ml.size}x${ml.size}` : null,
    understanding_speedup: und?.speedup ?? null,
    understanding_agreement: und?.agreement ?? null,
    understanding_mlcache_speedup: und?.mlSpeedup ?? null,
    understanding_mlcache_agreement: und?.mlAgreement ?? null,
    understanding_config: und ? `${und.preset} gen 256 / block 64 / 128 steps` : null,
    rss_gb_8b_int8: rss8.int8,
    rss_gb_8b_int4: rss8.int4,
    ...(rss8From ? { rss_gb_8b_source: rss8From } : {}),
    train_tokens_per_s_small: trainSmall?.tokensPerS ?? null,
    train_mfu_small: trainSmall?.mfu ?? null,
    train_torch_tokens_per_s_small: res.trainTorch?.ok ? (res.trainTorch.tokensPerS ?? null) : null,
    train_torch_blas_small: res.trainTorch?.blas ?? null,
    train_vs_torch_small:
      trainSmall && res.trainTorch?.ok && res.trainTorch.tokensPerS
        ? trainSmall.tokensPerS / res.trainTorch.tokensPerS
        : null,
    train_rss_gb_8b_int4_lora: train8b?.peakRssGb ?? null,
    train_s_per_step_8b_int4_lora: train8b?.stepS ?? null,
    vq_encode_ms_512: res.vq.find((v) => v.size === 512)?.encodeMs ?? null,
    vq_decode_ms_512: res.vq.find((v) => v.size === 512)?.decodeMs ?? null,
    cluster_speedup_2_workers: res.cluster?.speedup ?? null,
    cluster_added_latency_ms: res.cluster?.addedLatencyMs ?? null,
    machine: res.machine,
    details: {
      gemm: res.gemm,
      int8Kernels: res.int8Kernels,
      forward: res.forward,
      step: res.step,
      mlcache: res.mlcache,
      understanding: res.understanding,
      quality: res.quality,
      vq: res.vq,
      train: res.train,
      trainTorch: res.trainTorch,
      cluster: res.cluster ?? null,
    },
    notes: res.notes,
  };
}

const f = (x: number | undefined, digits = 1): string =>
  x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(digits);
const pct = (x: number | undefined): string =>
  x === undefined || !Number.isFinite(x) ? '-' : `${(x * 100).toFixed(1)}%`;

function table(title: string, header: string[], rows: string[][], note?: string): string {
  const w = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) =>
    '  ' + r.map((c, i) => (i === 0 ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ');
  return [
    `\n${title}`,
    line(header),
    '  ' + w.map((n) => '-'.repeat(n)).join('  '),
    ...rows.map(line),
    ...(note ? [`  ${note}`] : []),
  ].join('\n');
}

export function renderTable(res: Results, json: Record<string, unknown>): string {
  const threads = res.machine.threads;
  const gemm = (kind: string, t: number) =>
    res.gemm.find((g) => g.kind === kind && g.threads === t)?.gflops;
  const m = res.machine;
  const out: string[] = [];
  out.push(
    `dimoo bench (${String(m.mode)}): ${String(m.cpu)}, ${String(m.cores)} cores, ${String(m.memGb)} GB, Node ${String(m.node)}; ` +
      `load average ${f(m.loadavgAtStart as number, 2)} -> ${f(m.loadavgAtEnd as number, 2)}; ${String(m.seconds)} s`,
  );
  if (res.gemm.length) {
    out.push(
      table(
        'Machine limit: ORT matmul on [1024 x 4096] x [4096 x 4096] (best of 5)',
        ['kernel', 'threads', 'ms', 'GFLOP/s'],
        res.gemm.map((g) => [
          g.kind === 'fp32'
            ? 'MatMul fp32 (prepacked)'
            : `MatMulNBits ${g.kind} acc. level 4, ${g.prepack ? 'prepacked' : 'unpacked (as checkpoints run)'}`,
          String(g.threads),
          f(g.ms),
          f(g.gflops),
        ]),
      ),
    );
  }
  if (res.int8Kernels.length) {
    const names: Record<string, string> = {
      fp32: 'MatMul fp32 (prepacked)',
      int8: 'MatMulNBits int8, acc. level 4, blocks of 128 (nbits)',
      int8_qgemm: 'integer GEMM, per-row activation scales (qgemm default)',
      int8_qgemm_tensor: 'DynamicQuantizeMatMul, per-tensor activation scale',
    };
    const Ms = [...new Set(res.int8Kernels.map((g) => g.M))];
    const kinds = [...new Set(res.int8Kernels.map((g) => g.kind))];
    const at = (k: string, M: number) =>
      res.int8Kernels.find((g) => g.kind === k && g.M === M)?.gflops;
    out.push(
      table(
        `int8 kernels: [M x 4096] x [4096 x 4096] GFLOP/s, ${res.int8Kernels[0]!.threads} threads, interleaved in one process (best of rounds)`,
        [
          'kernel',
          ...Ms.map((M) => `M = ${M}`),
          'vs nbits int8 at M = 1024',
          'vs fp32 at M = 1024',
        ],
        kinds.map((k) => [
          names[k] ?? k,
          ...Ms.map((M) => f(at(k, M))),
          f((at(k, 1024) ?? NaN) / (at('int8', 1024) ?? NaN), 2),
          f((at(k, 1024) ?? NaN) / (at('fp32', 1024) ?? NaN), 2),
        ]),
      ),
    );
  }
  const qsteps = res.step.filter((s) => s.precision === 'int8-qgemm');
  if (qsteps.length) {
    out.push(
      table(
        'qgemm text-to-image step (cond + uncond, cfg 4, sampler included)',
        [
          'model',
          'size',
          'tokens c/u',
          'load s',
          'ms/step',
          'model ms',
          'GFLOP/s',
          'vs integer GEMM limit',
          'peak RSS GB',
        ],
        qsteps.map((s) => [
          s.preset,
          `${s.size}`,
          `${s.condLen}/${s.uncondLen}`,
          f(s.loadMs / 1000),
          f(s.stepMs, 0),
          f(s.modelMs, 0),
          f(s.flops / (s.stepMs * 1e6)),
          pct(s.mfu),
          f(s.peakRssGb, 2),
        ]),
        'limit = the integer GEMM (per-row scales) at M = 1024 in this run.',
      ),
    );
  }
  if (res.forward.length) {
    out.push(
      table(
        'Forward pass: one 256x256 text-to-image sequence (all cells masked), best of runs',
        ['model', 'threads', 'tokens', 'ms/pass', 'tokens/s', 'GFLOP/s', 'load ms', 'peak RSS GB'],
        res.forward.map((r) => [
          r.preset,
          String(r.threads),
          String(r.tokens),
          f(r.ms),
          f(r.tokensPerS, 0),
          f(r.gflops),
          f(r.loadMs, 0),
          f(r.peakRssGb, 2),
        ]),
      ),
    );
  }
  const steps = res.step.filter((s) => s.precision === 'fp32');
  if (steps.length) {
    out.push(
      table(
        `Text-to-image step (cond + uncond, full pass, sampler included), ${threads} threads`,
        [
          'model',
          'size',
          'tokens c/u',
          'ms/step',
          'model ms',
          'GFLOP/step',
          'GFLOP/s',
          'MFU',
          'model-only MFU',
        ],
        steps.map((s) => {
          const lim = gemm('fp32', s.threads);
          return [
            s.preset,
            `${s.size}`,
            `${s.condLen}/${s.uncondLen}`,
            f(s.stepMs, 0),
            f(s.modelMs, 0),
            f(s.flops / 1e9),
            f(s.flops / (s.stepMs * 1e6)),
            pct(s.mfu),
            pct(lim ? s.flops / (s.modelMs * 1e6) / lim : undefined),
          ];
        }),
        'MFU = achieved FLOP/s (matmul FLOPs of the step / step time) over the measured fp32 GEMM limit at the same thread count.',
      ),
    );
  }
  const prec = res.step.filter((s) => s.size === 512 && (s.preset === '1b' || s.preset === '8b'));
  if (prec.length) {
    out.push(
      table(
        'Load time and peak RSS per precision (one 512x512 step, child process per row)',
        [
          'model',
          'precision',
          'weights',
          'load s',
          'RSS after load GB',
          'peak RSS GB',
          'ms/step',
          'GFLOP/s',
          'vs its kernel limit',
        ],
        prec.map((s) => [
          s.preset,
          s.precision,
          s.precision === 'fp32'
            ? 'bf16->fp32 at load'
            : s.prepacked
              ? 'repacked at load'
              : 'in place (mmap)',
          f(s.loadMs / 1000),
          f(s.rssAfterLoadGb, 2),
          f(s.peakRssGb, 2),
          f(s.stepMs, 0),
          f(s.flops / (s.stepMs * 1e6)),
          pct(s.mfu),
        ]),
      ),
    );
  }
  if (res.vq.length) {
    out.push(
      table(
        'VQ-VAE (random weights, real aMUSEd size), one image, second call (sessions built)',
        ['size', 'threads', 'encode ms', 'decode ms', 'peak RSS GB'],
        res.vq.map((v) => [
          `${v.size}x${v.size}`,
          String(v.threads),
          f(v.encodeMs, 0),
          f(v.decodeMs, 0),
          f(v.peakRssGb, 2),
        ]),
      ),
    );
  }
  if (res.mlcache.length) {
    out.push(
      table(
        'ML-Cache over a whole 64-step generation (cfg 4, temperature 1, seed 0; cache 0.9 / warm-up 0.3 / refresh 5)',
        [
          'model',
          'size',
          'off s',
          'on s',
          'speed-up',
          'model-only',
          'full steps',
          'same codes',
          'final logit rel L2',
        ],
        res.mlcache.map((r) => [
          r.preset,
          String(r.size),
          f(r.offMs / 1000),
          f(r.onMs / 1000),
          `${f(r.speedup, 2)}x`,
          `${f(r.modelSpeedup, 2)}x`,
          String(r.fullSteps),
          pct(r.codeAgreement),
          f(r.finalLogitRelL2, 4),
        ]),
        'final logit rel L2: guided logits the cached run used at its last step vs an exact full pass on the same tokens (mean over masked rows).',
      ),
    );
  }
  if (res.understanding.length) {
    out.push(
      table(
        'Understanding: gen_length 256, block 64, 128 steps (256x256 image), greedy',
        [
          'model',
          'steps',
          'uncached ms/step',
          'uncached s',
          'dual ms/step',
          'dual s',
          'speed-up',
          'same tokens',
          'ml-cache ms/step',
          'ml-cache s',
          'speed-up',
          'same tokens',
          'golden: uncached / dual / ml-cache',
        ],
        res.understanding.map((r) => [
          r.preset,
          String(r.steps),
          f(r.offStepMs),
          f(r.offMs / 1000),
          f(r.onStepMs),
          f(r.onMs / 1000),
          `${f(r.speedup, 2)}x`,
          pct(r.agreement),
          f(r.mlStepMs),
          f(r.mlMs / 1000),
          `${f(r.mlSpeedup, 2)}x`,
          pct(r.mlAgreement),
          r.golden
            ? `${pct(r.golden.uncached)} / ${pct(r.golden.cached)} / ${pct(r.golden.ml)}`
            : '',
        ]),
        'dual = full pass at the first step of each block, then only the block is recomputed; ml-cache = dual, and between whole-block refreshes (warm-up 0.3, every 5 steps) only the 10% least confident masked positions and the last committed ones.',
      ),
    );
  }
  if (res.quality.length) {
    out.push(
      table(
        'Quality per precision on the golden cases (tiny checkpoint)',
        ['precision', 'logits rel L2', 'argmax agreement', 'token agreement (11 cases)'],
        res.quality.map((q) => [
          q.precision,
          f(q.logitsRelL2, 4),
          pct(q.argmaxAgreement),
          pct(q.caseAgreement),
        ]),
      ),
    );
  }
  if (res.train.length > 0) {
    const t = res.trainTorch;
    out.push(
      table(
        'Training steps (forward + CE + backward + clip_grad_norm_ + AdamW), random batches, half the tokens masked',
        [
          'config',
          'batch x len',
          'threads',
          'load s',
          's/step',
          'tokens/s',
          'GFLOP/s',
          'vs fp32 GEMM limit',
          'peak RSS GB',
        ],
        [
          ...res.train.map((r) => [
            r.label,
            `${r.batch} x ${r.seqLen}`,
            String(r.threads),
            f(r.loadS),
            f(r.stepS, 2),
            f(r.tokensPerS),
            f(r.flops / r.stepS / 1e9),
            pct(r.mfu),
            f(r.peakRssGb, 2),
          ]),
          ...(t
            ? [
                [
                  `PyTorch ${t.torch ?? ''} (bench/torch-train.py, ${t.blas ? path.basename(t.blas) : 'BLAS ?'}), ${t.preset} fp32`,
                  '',
                  '',
                  '',
                  f(t.stepS, 2),
                  t.ok ? f(t.tokensPerS) : `- (${t.reason ?? 'failed'})`,
                  '',
                  '',
                  f(t.peakRssGb, 2),
                ],
              ]
            : []),
        ],
        'FLOPs: matrix products of the forward (head on the labelled rows) x3 for full fine-tuning (weight and activation gradients), x2 for LoRA. PyTorch computes the head on every row, as train.py.',
      ),
    );
  }
  out.push(
    table(
      'Summary (--json keys)',
      ['key', 'value'],
      Object.entries(json)
        .filter(([, v]) => typeof v === 'number' || typeof v === 'string' || v === null)
        .map(([k, v]) => [
          k,
          typeof v === 'number' ? String(Math.round(v * 1000) / 1000) : String(v),
        ]),
    ),
  );
  if (res.cluster) {
    const c = res.cluster;
    out.push(
      table(
        'Job queue (Redis + BullMQ): one API server, dimoo worker processes with --threads 1',
        ['measure', 'value'],
        [
          [`jobs/min, 1 worker (${c.jobs} understanding jobs, small preset)`, f(c.jobsPerMin1, 2)],
          ['jobs/min, 2 workers', f(c.jobsPerMin2, 2)],
          ['speed-up 2 vs 1 worker (target >= 1.7x)', `${f(c.speedup, 2)}x`],
          [
            `median latency, embedded server (${c.latencyJobs} one-step golden jobs)`,
            `${f(c.embeddedMedianMs, 1)} ms`,
          ],
          ['median latency, through the queue', `${f(c.queueMedianMs, 1)} ms`],
          ['added by the queue (target < 20 ms)', `${f(c.addedLatencyMs, 1)} ms`],
          ['load average after', c.loadavg.map((x) => f(x, 2)).join(' / ')],
        ],
      ),
    );
  }
  for (const n of res.notes) out.push(`note: ${n}`);
  return out.join('\n') + '\n';
}
