import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TextTokenizer } from '../src/models/tokenizer.js';
import {
  DEFAULT_SPECIAL_TOKENS,
  codeOfToken,
  imageTokenId,
  isImageToken,
  resolveSpecialTokens,
} from '../src/checkpoint/special-tokens.js';
import { goldenCheckpointDir, readGoldenJson } from './helpers/golden.js';
import { DimooError } from '../src/errors.js';

interface Tokenization {
  encode: Array<{
    text: string;
    ids: number[];
    ids_no_special: number[];
    tokens_no_special: string[];
  }>;
  decode: Array<{ ids: number[]; skip_special_tokens: boolean; text: string }>;
}

const tokFile = path.join(goldenCheckpointDir(), 'tokenizer.json');

test('encode matches golden tokenization.json exactly', async () => {
  const tok = TextTokenizer.fromFile(tokFile);
  const g = readGoldenJson<Tokenization>('tokenization.json');
  assert.ok(g.encode.length >= 10);
  for (const e of g.encode) {
    assert.deepEqual(await tok.encode(e.text), e.ids, JSON.stringify(e.text));
    const plain = await tok.encodeWithTokens(e.text, { addSpecialTokens: false });
    assert.deepEqual(plain.ids, e.ids_no_special);
    assert.deepEqual(plain.tokens, e.tokens_no_special);
  }
});

test('decode matches golden tokenization.json exactly', async () => {
  const tok = TextTokenizer.fromFile(tokFile);
  const g = readGoldenJson<Tokenization>('tokenization.json');
  for (const d of g.decode) {
    assert.equal(
      await tok.decode(d.ids, { skipSpecialTokens: d.skip_special_tokens }),
      d.text,
      JSON.stringify(d.ids),
    );
  }
  await assert.rejects(tok.decode([1, -2]), /ids\[1\]/);
});

test('missing or corrupt tokenizer files give a DimooError naming the file', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dimoo-tok-'));
  try {
    const missing = path.join(dir, 'nope.json');
    assert.throws(
      () => TextTokenizer.fromFile(missing),
      (e: unknown) => e instanceof DimooError && e.message.includes(missing),
    );
    const bad = path.join(dir, 'tokenizer.json');
    fs.writeFileSync(bad, '{"version": "1.0", "model": ');
    assert.throws(
      () => TextTokenizer.fromFile(bad),
      (e: unknown) =>
        e instanceof DimooError && e.message.includes(bad) && e.code === 'E_TOKENIZER',
    );
    assert.throws(() => TextTokenizer.fromFile(dir), /not a file/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('special tokens resolve from the golden tokenizer and config to the original ids', () => {
  const tok = TextTokenizer.fromFile(tokFile);
  assert.equal(tok.vocabSize(), 126356);
  assert.equal(tok.tokenToId('<|mdm_mask|>'), 126336);
  assert.equal(tok.idToToken(126349), '<IMAGE>');
  assert.equal(tok.tokenToId('no-such-token'), undefined);
  const t = resolveSpecialTokens(tok, {
    maskTokenId: 126336,
    eosTokenId: 126081,
    embeddingSize: 134548,
  });
  assert.deepEqual(t, { ...DEFAULT_SPECIAL_TOKENS });
  // config.py constants, as recorded in prompts.json
  const cfg = readGoldenJson<{ special_tokens_config_py: Record<string, number> }>(
    'prompts.json',
  ).special_tokens_config_py;
  assert.equal(t.mask, cfg.mask_token);
  assert.equal(t.newline, cfg.newline_token);
  assert.equal(t.imageOffset, cfg.image_token_offset);
  assert.equal(t.boa, cfg.answer_start);
  assert.equal(t.eoa, cfg.answer_end);
  assert.equal(t.boi, cfg.boi);
  assert.equal(t.eoi, cfg.eoi);
  assert.equal(t.uncondition, cfg.uncondition);
  // without a tokenizer: config and defaults; without anything: defaults
  assert.deepEqual(
    resolveSpecialTokens(
      undefined,
      { maskTokenId: 5, embeddingSize: 126400 + 8 },
      { codebookSize: 8 },
    ),
    {
      ...DEFAULT_SPECIAL_TOKENS,
      mask: 5,
      imageOffset: 126400,
      codebookSize: 8,
    },
  );
  assert.deepEqual(resolveSpecialTokens(), { ...DEFAULT_SPECIAL_TOKENS });
});

test('special-token inconsistencies are reported', () => {
  const vocab = (m: Record<string, number>) => ({ tokenToId: (s: string) => m[s] });
  // tokenizer-defined ids win over defaults
  assert.equal(resolveSpecialTokens(vocab({ '<IMAGE>': 7 })).boi, 7);
  assert.throws(
    () => resolveSpecialTokens(vocab({ '<|mdm_mask|>': 100 }), { maskTokenId: 126336 }),
    (e: unknown) => e instanceof DimooError && /mask_token_id/.test(e.message),
  );
  assert.throws(() => resolveSpecialTokens(undefined, { embeddingSize: 100 }), /embedding_size/);
  assert.throws(
    () => resolveSpecialTokens(undefined, { embeddingSize: 126000 + 8192 }),
    /image-code range/,
  );
});

test('image token helpers', () => {
  assert.equal(imageTokenId(0), 126356);
  assert.equal(isImageToken(134547), true);
  assert.equal(isImageToken(134548), false);
  assert.equal(isImageToken(126355), false);
  assert.equal(codeOfToken(126356 + 42), 42);
  assert.throws(() => codeOfToken(5), /not an image token/);
});
