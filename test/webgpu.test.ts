/**
 * Golden parity on ONNX Runtime's WebGPU provider (tiny checkpoint only: on a
 * software Vulkan such as Mesa's lavapipe it is slow).
 *
 * Skipped, with the reason, when no WebGPU adapter is available, unless
 * DIMOO_REQUIRE_WEBGPU=1 (CI sets it, so a broken Vulkan setup fails instead
 * of skipping). The E_WEBGPU error test runs everywhere on Linux.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { openCheckpoint } from '../src/checkpoint/folder.js';
import { probeWebGpu } from '../src/models/device.js';
import { ModelStream } from '../src/models/model-stream.js';
import { quantizeCheckpoint } from '../src/tools/quantize.js';
import { SafetensorsFile } from '../src/checkpoint/safetensors.js';
import { Transformer } from '../src/models/transformer.js';
import { VqModel } from '../src/models/vq-model.js';
import { Dimoo } from '../src/pipelines/dimoo.js';
import { GOLDEN_SAMPLING_CASES, runGoldenCase } from './helpers/golden-cases.js';
import { goldenCase, goldenCheckpointDir, goldenDir, readGoldenJson } from './helpers/golden.js';

const V = 134548;
const status = await probeWebGpu();
const required = process.env.DIMOO_REQUIRE_WEBGPU === '1';
const skip = status.available || required ? false : `no WebGPU adapter: ${status.reason}`;

test(
  'WebGPU is available (DIMOO_REQUIRE_WEBGPU=1)',
  { skip: !required && 'DIMOO_REQUIRE_WEBGPU is not set' },
  (t) => {
    assert.ok(status.available, status.reason);
    t.diagnostic(`shader-f16: ${status.shaderF16}`);
  },
);

test(
  'a missing Vulkan driver gives E_WEBGPU naming what is missing',
  { skip: process.platform !== 'linux' && 'Linux only' },
  async () => {
    // A child process: Dawn's instance is process-wide, so this one keeps its adapter.
    const deviceModule = new URL('../src/models/device.js', import.meta.url).href;
    const code = `const d = await import(${JSON.stringify(deviceModule)});
      const s = await d.probeWebGpu();
      process.stdout.write(JSON.stringify(s));`;
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [...process.execArgv, '--input-type=module', '-e', code],
      {
        env: {
          ...process.env,
          VK_DRIVER_FILES: '/nonexistent/dimoo_test_icd.json',
          VK_ICD_FILENAMES: '',
        },
      },
    );
    const s = JSON.parse(stdout) as { available: boolean; reason?: string };
    assert.equal(s.available, false);
    assert.match(s.reason ?? '', /WebGPU is not available/);
    // Either the loader or the driver is named, with how to install it.
    assert.match(
      s.reason ?? '',
      /libvulkan\.so\.1 is not installed|no Vulkan driver \(ICD\) was found/,
    );
    assert.match(s.reason ?? '', /mesa-vulkan-drivers/);
  },
);

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  assert.equal(a.length, b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
};

describe('golden parity on the WebGPU provider', { skip }, () => {
  let gpu: Transformer;
  let cpu: Transformer;
  before(async () => {
    const ckpt = openCheckpoint(goldenCheckpointDir());
    gpu = await Transformer.load(ckpt, { device: 'webgpu' });
    cpu = await Transformer.load(ckpt, { device: 'cpu', threads: 2 });
  });
  after(async () => {
    await gpu?.dispose();
    await cpu?.dispose();
  });

  test('forward logits: WebGPU within 1e-3 of the golden rows, argmax exact', async (t) => {
    const fj = readGoldenJson<{ sequences: Record<string, { input_ids: number[] }> }>(
      'forward.json',
    );
    const ref = SafetensorsFile.open(goldenCase('forward.safetensors'));
    let worstGolden = 0;
    let worstCpu = 0;
    for (const [name, seq] of Object.entries(fj.sequences)) {
      const L = seq.input_ids.length;
      const all = Array.from({ length: L }, (_, i) => i);
      const g = (await gpu.forward({ ids: seq.input_ids, logitRows: all })).logits!;
      const c = (await cpu.forward({ ids: seq.input_ids, logitRows: all })).logits!;
      worstCpu = Math.max(worstCpu, maxAbsDiff(g, c));
      const full = ref.readFloat32(`${name}.full_rows`);
      Array.from(ref.readInt64(`${name}.full_rows_index`), Number).forEach((row, k) => {
        const d = maxAbsDiff(g.subarray(row * V, (row + 1) * V), full.subarray(k * V, (k + 1) * V));
        worstGolden = Math.max(worstGolden, d);
      });
      const argmax = Array.from(ref.readInt64(`${name}.argmax`), Number);
      const gap = ref.readFloat32(`${name}.top1_gap`);
      for (let i = 0; i < L; i++) {
        if (gap[i]! <= 1e-3) continue;
        const row = g.subarray(i * V, (i + 1) * V);
        let best = 0;
        for (let j = 1; j < V; j++) if (row[j]! > row[best]!) best = j;
        assert.equal(best, argmax[i], `${name} argmax at ${i}`);
      }
    }
    t.diagnostic(
      `max |logit diff| WebGPU vs golden ${worstGolden.toExponential(2)}, vs CPU ${worstCpu.toExponential(2)}`,
    );
    assert.ok(worstGolden <= 1e-3, `WebGPU vs golden: ${worstGolden}`);
    assert.ok(worstCpu <= 1e-3, `WebGPU vs CPU: ${worstCpu}`);
  });

  test('ML-Cache call sequence (partial passes over cached K/V) matches golden', async (t) => {
    const cj = readGoldenJson<{
      model_calls: { cat: string; to_compute_positions: number[] | null }[];
    }>('mlcache_t2i_64x48_cfg4.json');
    const ref = SafetensorsFile.open(goldenCase('mlcache_t2i_64x48_cfg4.safetensors'));
    const streams: Record<string, ModelStream> = {
      cond: new ModelStream(gpu, true),
      uncond: new ModelStream(gpu, true),
    };
    let worst = 0;
    for (let k = 1; k < cj.model_calls.length; k++) {
      const call = cj.model_calls[k]!;
      const key = `call${String(k).padStart(2, '0')}`;
      const ids = Array.from(ref.readInt64(`${key}.input_ids`), Number);
      const maskedRows = Array.from(ref.readInt64(`${key}.masked_rows_index`), Number);
      const stream = streams[call.cat]!;
      let res;
      if (call.to_compute_positions) {
        res = await stream.partial(ids, call.to_compute_positions, maskedRows);
      } else {
        stream.reset();
        res = await stream.full(ids, maskedRows);
      }
      worst = Math.max(worst, maxAbsDiff(res.rowMax!, ref.readFloat32(`${key}.image_row_max`)));
      worst = Math.max(
        worst,
        maxAbsDiff(res.imageLogits, ref.readFloat32(`${key}.image_logits_masked_rows`)),
      );
    }
    t.diagnostic(`max |diff| ${worst.toExponential(2)}`);
    assert.ok(worst <= 1e-3, `ML-Cache logits differ by ${worst}`);
  });

  test('precision fp16 (float16 weights, float32 compute) matches fp32 on the golden sequences', async (t) => {
    if (!status.shaderF16) return t.skip('the adapter has no shader-f16');
    const half = await Transformer.load(openCheckpoint(goldenCheckpointDir()), {
      device: 'webgpu',
      precision: 'fp16',
    });
    try {
      const fj = readGoldenJson<{ sequences: Record<string, { input_ids: number[] }> }>(
        'forward.json',
      );
      let worst = 0;
      for (const seq of Object.values(fj.sequences)) {
        const rows = seq.input_ids.map((_, i) => i);
        const a = (await half.forward({ ids: seq.input_ids, logitRows: rows, imageRows: rows }))
          .logits!;
        const b = (await cpu.forward({ ids: seq.input_ids, logitRows: rows })).logits!;
        worst = Math.max(worst, maxAbsDiff(a, b));
      }
      t.diagnostic(`max |logit diff| fp16 weights on WebGPU vs CPU fp32 ${worst.toExponential(2)}`);
      assert.ok(worst <= 1e-3, `fp16 vs fp32: ${worst}`);
    } finally {
      await half.dispose();
    }
  });

  test('precision fp16 is refused on the CPU provider', async () => {
    await assert.rejects(
      Transformer.load(openCheckpoint(goldenCheckpointDir()), { device: 'cpu', precision: 'fp16' }),
      (e: Error) => e.name === 'DimooError' && /needs device webgpu/.test(e.message),
    );
  });

  test('4-bit checkpoint: WebGPU MatMulNBits equals the CPU kernel with float activations', async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-webgpu-q4-'));
    try {
      await quantizeCheckpoint(goldenCheckpointDir(), dir, { bits: 4 });
      const ckpt = openCheckpoint(dir);
      const g = await Transformer.load(ckpt, { device: 'webgpu' });
      // accuracy level 1: float32 activations, as the WebGPU kernel computes.
      const c = await Transformer.load(ckpt, { device: 'cpu', threads: 2, accuracyLevel: 1 });
      try {
        const ids = readGoldenJson<{ sequences: Record<string, { input_ids: number[] }> }>(
          'forward.json',
        ).sequences['i2i_with_image_tokens']!.input_ids;
        const rows = ids.map((_, i) => i);
        const a = (await g.forward({ ids, logitRows: rows })).logits!;
        const b = (await c.forward({ ids, logitRows: rows })).logits!;
        const d = maxAbsDiff(a, b);
        t.diagnostic(`max |logit diff| int4 WebGPU vs CPU ${d.toExponential(2)}`);
        assert.ok(d <= 1e-3, `int4 WebGPU vs CPU: ${d}`);
      } finally {
        await g.dispose();
        await c.dispose();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('qgemm checkpoint (integer GEMM) on WebGPU: loads, the integer ops run on the CPU provider, logits equal the CPU session', async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-webgpu-qgemm-'));
    try {
      await quantizeCheckpoint(goldenCheckpointDir(), dir, { bits: 8, format: 'qgemm' });
      const ckpt = openCheckpoint(dir);
      const g = await Transformer.load(ckpt, { device: 'webgpu' });
      const c = await Transformer.load(ckpt, { device: 'cpu', threads: 2 });
      try {
        const ids = readGoldenJson<{ sequences: Record<string, { input_ids: number[] }> }>(
          'forward.json',
        ).sequences['i2i_with_image_tokens']!.input_ids;
        const rows = ids.map((_, i) => i);
        const a = await g.forward({ ids, logitRows: rows, imageRows: [1, 2] });
        const b = await c.forward({ ids, logitRows: rows, imageRows: [1, 2] });
        const d = Math.max(
          maxAbsDiff(a.logits!, b.logits!),
          maxAbsDiff(a.imageLogits!, b.imageLogits!),
        );
        // Same integer kernels (ORT places MatMulIntegerToFloat on the CPU provider);
        // only the float ops between them run on the GPU: measured 5.7e-6.
        t.diagnostic(`max |logit diff| qgemm WebGPU vs CPU ${d.toExponential(2)}`);
        assert.ok(d <= 1e-3, `qgemm WebGPU vs CPU: ${d}`);
      } finally {
        await g.dispose();
        await c.dispose();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('VQ-VAE encode/decode on WebGPU: latents, indices and decoded pixels match golden', async (t) => {
    const vq = await VqModel.load(`${goldenCheckpointDir()}/vqvae`, { device: 'webgpu' });
    try {
      const ref = SafetensorsFile.open(goldenCase('vq.safetensors'));
      const names = [...ref.tensors.keys()]
        .filter((k) => k.endsWith('.preprocessed'))
        .map((k) => k.slice(0, -13));
      assert.ok(names.length >= 3);
      let worstLatent = 0;
      let worstPixel = 0;
      for (const name of names) {
        const shape = ref.tensors.get(`${name}.preprocessed`)!.shape;
        const [H, W] = [shape[2]!, shape[3]!];
        const enc = await vq.encodeFloat(ref.readFloat32(`${name}.preprocessed`), W, H);
        worstLatent = Math.max(
          worstLatent,
          maxAbsDiff(enc.latents, ref.readFloat32(`${name}.latents`)),
        );
        assert.deepEqual(
          Array.from(enc.codes),
          Array.from(ref.readInt64(`${name}.indices`), Number),
          `${name} indices`,
        );
        const dec = await vq.decodeFloat(enc.codes, H / 16, W / 16);
        worstPixel = Math.max(
          worstPixel,
          maxAbsDiff(dec.pixels, ref.readFloat32(`${name}.decoded_float`)),
        );
      }
      t.diagnostic(
        `max |diff| latents ${worstLatent.toExponential(2)}, decoded ${worstPixel.toExponential(2)}`,
      );
      assert.ok(worstLatent <= 1e-4 && worstPixel <= 1e-4);
    } finally {
      await vq.dispose();
    }
  });

  describe('golden sampling cases through Dimoo({ device: "webgpu" }), token for token', () => {
    let dimoo: Dimoo;
    before(async () => {
      dimoo = await Dimoo.load(goldenCheckpointDir(), { device: 'webgpu' });
      assert.equal(dimoo.info().device, 'webgpu');
    });
    after(async () => {
      await dimoo?.dispose();
    });

    for (const name of GOLDEN_SAMPLING_CASES) {
      test(name, async () => {
        const r = await runGoldenCase(dimoo, name, goldenDir());
        assert.deepEqual(r.got, r.want);
        if (r.wantText !== undefined) assert.equal(r.text, r.wantText);
        if (r.image && name.includes('t2i')) {
          const want = SafetensorsFile.open(goldenCase(`${name}.safetensors`)).readBytes(
            'decoded_image_uint8',
          );
          let off = 0;
          for (let i = 0; i < want.length; i++)
            if (Math.abs(r.image.image!.data[i]! - want[i]!) > 1) off++;
          assert.equal(off, 0, `${off} pixel values differ by more than 1`);
        }
      });
    }
  });
});
