// Binding score: does the caption's place move the model's object map? For a large red square
// at each of the 9 places (white background), P(not bg) per cell with every cell masked;
// score = mean over places of (mean P inside the object's cells - mean P outside), after
// subtracting the place-averaged map (what the model predicts whatever the place).
import { openCheckpoint } from './dist/src/checkpoint/folder.js';
import { Transformer } from './dist/src/models/transformer.js';
import { TextTokenizer } from './dist/src/models/tokenizer.js';
import { resolveSpecialTokens } from './dist/src/checkpoint/special-tokens.js';
import { loadVqConfig } from './dist/src/checkpoint/vq-config.js';
import { textToImagePrompt, buildTextToImage } from './dist/src/pipelines/prompts.js';
import { CELLS } from './dist/src/shapes/world.js';
import { cellsUnder } from './dist/src/shapes/eval.js';
import { placeObject } from './dist/src/shapes/world.js';
import { Prng } from './dist/src/samplers/prng.js';
const [ckptDir, size = 'small'] = process.argv.slice(2);
const ckpt = openCheckpoint(ckptDir);
const tok = TextTokenizer.fromFile(ckpt.tokenizerPath);
const vqc = loadVqConfig(ckpt.vqvaeDir);
const t = resolveSpecialTokens(tok, ckpt.config, { codebookSize: vqc.numVqEmbeddings });
const model = await Transformer.load(ckpt, { threads: 1, imageVocabSize: vqc.numVqEmbeddings });
const maps = [], masks = [];
let bgCode;
for (let cell = 0; cell < 9; cell++) {
  const p = textToImagePrompt(`a ${size} red square in ${CELLS[cell] === 'center' ? 'the center' : 'the ' + CELLS[cell]} on a white background`);
  const lay = buildTextToImage({ promptIds: await tok.encode(p.prompt), uncondPromptIds: await tok.encode(p.uncondPrompt), gridH: 8, gridW: 8 }, t);
  const rows = []; for (let i = 0; i < 64; i++) rows.push(lay.codeStart + Math.floor(i / 8) * 9 + (i % 8));
  const out = await model.forward({ ids: lay.sequence, imageRows: rows });
  const V = out.imageLogits.length / 64;
  const pr = [];
  for (let k = 0; k < 64; k++) {
    const l = out.imageLogits.subarray(k * V, (k + 1) * V);
    let m = -Infinity, a = 0; for (let j = 0; j < V; j++) if (l[j] > m) { m = l[j]; a = j; }
    let s = 0; for (let j = 0; j < V; j++) s += Math.exp(l[j] - m);
    if (bgCode === undefined && k === 0) bgCode = a;
    pr.push(1 - Math.exp(l[bgCode] - m) / s);
  }
  maps.push(pr);
  const o = placeObject(new Prng(1), [], { shape: 'square', color: 'red', size, cell });
  masks.push(cellsUnder(o, 128, 128, 16));
}
const avg = maps[0].map((_, k) => maps.reduce((s, m) => s + m[k], 0) / 9);
let score = 0, raw = 0;
for (let c = 0; c < 9; c++) {
  let ins = 0, ni = 0, outs = 0, no = 0, rins = 0, routs = 0;
  for (let k = 0; k < 64; k++) {
    const d = maps[c][k] - avg[k];
    if (masks[c][k]) { ins += d; rins += maps[c][k]; ni++; } else { outs += d; routs += maps[c][k]; no++; }
  }
  score += ins / ni - outs / no; raw += rins / ni - routs / no;
}
console.log(JSON.stringify({ ckpt: ckptDir, size, binding: (score / 9).toFixed(3), insideMinusOutside: (raw / 9).toFixed(3) }));
