// P(not background) per cell with every cell masked, for captions that differ only in place.
import { openCheckpoint } from './dist/src/checkpoint/folder.js';
import { Transformer } from './dist/src/models/transformer.js';
import { TextTokenizer } from './dist/src/models/tokenizer.js';
import { resolveSpecialTokens } from './dist/src/checkpoint/special-tokens.js';
import { loadVqConfig } from './dist/src/checkpoint/vq-config.js';
import { textToImagePrompt, buildTextToImage } from './dist/src/pipelines/prompts.js';
const [ckptDir, ...places] = process.argv.slice(2);
const ckpt = openCheckpoint(ckptDir);
const tok = TextTokenizer.fromFile(ckpt.tokenizerPath);
const vqc = loadVqConfig(ckpt.vqvaeDir);
const t = resolveSpecialTokens(tok, ckpt.config, { codebookSize: vqc.numVqEmbeddings });
const model = await Transformer.load(ckpt, { threads: 1, imageVocabSize: vqc.numVqEmbeddings });
const H = 8, W = 8;
let bgCode;
for (const place of places) {
  const p = textToImagePrompt(`a small red square ${place} on a white background`);
  const lay = buildTextToImage({ promptIds: await tok.encode(p.prompt), uncondPromptIds: await tok.encode(p.uncondPrompt), gridH: H, gridW: W }, t);
  const rows = []; for (let i = 0; i < 64; i++) rows.push(lay.codeStart + Math.floor(i / W) * (W + 1) + (i % W));
  const out = await model.forward({ ids: lay.sequence, imageRows: rows });
  const V = out.imageLogits.length / 64;
  const probs = [];
  const am = [];
  for (let k = 0; k < 64; k++) {
    const l = out.imageLogits.subarray(k * V, (k + 1) * V);
    let m = -Infinity, a = 0; for (let j = 0; j < V; j++) if (l[j] > m) { m = l[j]; a = j; }
    let s = 0; for (let j = 0; j < V; j++) s += Math.exp(l[j] - m);
    am.push(a); probs.push(l.map((x) => Math.exp(x - m) / s));
  }
  if (bgCode === undefined) bgCode = am[0];
  console.log(`${place}:  P(not bg) per cell`);
  for (let r = 0; r < H; r++) console.log('  ' + Array.from({ length: W }, (_, c) => (1 - probs[r * W + c][bgCode]).toFixed(2)).join(' '));
}
