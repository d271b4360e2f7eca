/**
 * VQ-VAE rows of the bench: encode and decode time and peak RSS at a given
 * size for a random VQ-VAE of the real aMUSEd size (written once into the
 * bench cache). One child process per size, so RSS is that size's alone.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { VqModel } from '../src/models/vq-model.js';
import { writeRandomVq } from '../src/tools/random-vq.js';

export interface VqRow {
  size: number;
  threads: number;
  encodeMs: number;
  decodeMs: number;
  peakRssGb: number;
  loadavg: number;
}

/** Folder of the random aMUSEd-size VQ-VAE, created on first use. */
export function ensureAmusedVq(cacheDir: string): string {
  const dir = path.join(cacheDir, 'vq-amused', 'vqvae');
  if (!fs.existsSync(path.join(dir, 'diffusion_pytorch_model.safetensors'))) {
    fs.mkdirSync(dir, { recursive: true });
    writeRandomVq(dir, 'amused', { seed: 1 });
  }
  return dir;
}

/** A smooth synthetic picture (gradients and a disc), so the encoder sees structure. */
function testImage(size: number): Uint8Array {
  const data = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const i = (y * size + x) * 3;
      const d = Math.hypot(x - size / 2, y - size / 2) < size / 4;
      data[i] = (x * 255) / size;
      data[i + 1] = (y * 255) / size;
      data[i + 2] = d ? 230 : 40;
    }
  }
  return data;
}

export async function taskVq(a: { dir: string; threads: number; size: number }): Promise<VqRow> {
  const vq = await VqModel.load(a.dir, { threads: a.threads });
  try {
    const rgb = { data: testImage(a.size), width: a.size, height: a.size };
    // First calls build the sessions; time the second ones.
    const warm = await vq.encode(rgb);
    await vq.decode(warm.codes, warm.gridH, warm.gridW);
    let t = performance.now();
    const g = await vq.encode(rgb);
    const encodeMs = performance.now() - t;
    t = performance.now();
    await vq.decode(g.codes, g.gridH, g.gridW);
    const decodeMs = performance.now() - t;
    return {
      size: a.size,
      threads: a.threads,
      encodeMs,
      decodeMs,
      peakRssGb: (process.resourceUsage().maxRSS * 1024) / 1e9,
      loadavg: os.loadavg()[0]!,
    };
  } finally {
    await vq.dispose();
  }
}
