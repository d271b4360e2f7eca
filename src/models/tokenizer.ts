/**
 * Text tokenizer: a thin wrapper over the `tokenizers` package (Node binding
 * of Hugging Face's Rust tokenizers core), which reproduces the reference
 * semantics exactly ([UNK] for unknown words, added tokens split first,
 * unknown/image ids dropped by decode). The pure-JS port differs on these.
 *
 *   TextTokenizer.fromFile(path)                     load tokenizer.json (DimooError names the file)
 *   await tok.encode(text, { addSpecialTokens })     ids (default true: the BOS template applies)
 *   await tok.encodeWithTokens(text, opts)           { ids, tokens }
 *   await tok.decode(ids, { skipSpecialTokens })     text (default false, like transformers' decode)
 *   tok.tokenToId(token) / tok.idToToken(id)         vocabulary look-ups (undefined when absent)
 *   tok.vocabSize(withAddedTokens = true)
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Tokenizer } from 'tokenizers';
import { DimooError } from '../errors.js';

const E = 'E_TOKENIZER';

export interface EncodeOptions {
  /** Apply the post-processor template (DiMOO: prepend <|startoftext|>). Default true. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Drop special (added) tokens from the text. Default false. */
  skipSpecialTokens?: boolean;
}

export class TextTokenizer {
  private constructor(
    private readonly tok: Tokenizer,
    /** The file it was loaded from. */
    readonly file: string,
  ) {}

  /** Load a Hugging Face tokenizer.json. */
  static fromFile(file: string): TextTokenizer {
    const p = path.resolve(file);
    if (!fs.existsSync(p)) throw new DimooError(`tokenizer file not found: ${p}`, E);
    if (!fs.statSync(p).isFile()) throw new DimooError(`tokenizer path is not a file: ${p}`, E);
    let tok: Tokenizer;
    try {
      tok = Tokenizer.fromFile(p);
    } catch (e) {
      throw new DimooError(`cannot load tokenizer file ${p}: ${(e as Error).message}`, E);
    }
    return new TextTokenizer(tok, p);
  }

  async encodeWithTokens(
    text: string,
    opts: EncodeOptions = {},
  ): Promise<{ ids: number[]; tokens: string[] }> {
    if (typeof text !== 'string')
      throw new DimooError(`text to encode must be a string, got ${typeof text}`, 'E_PARAM');
    const enc = await this.tok.encode(text, null, {
      addSpecialTokens: opts.addSpecialTokens ?? true,
    });
    return { ids: enc.getIds(), tokens: enc.getTokens() };
  }

  async encode(text: string, opts: EncodeOptions = {}): Promise<number[]> {
    return (await this.encodeWithTokens(text, opts)).ids;
  }

  async decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): Promise<string> {
    const list = Array.from(ids);
    list.forEach((id, i) => {
      // The binding takes u32 ids; anything else is a caller bug worth naming.
      if (!Number.isInteger(id) || id < 0 || id > 0xffffffff) {
        throw new DimooError(
          `ids[${i}] must be a non-negative integer token id, got ${id}`,
          'E_PARAM',
        );
      }
    });
    return this.tok.decode(list, opts.skipSpecialTokens ?? false);
  }

  tokenToId(token: string): number | undefined {
    return this.tok.tokenToId(token) ?? undefined;
  }

  idToToken(id: number): string | undefined {
    return this.tok.idToToken(id) ?? undefined;
  }

  vocabSize(withAddedTokens = true): number {
    return this.tok.getVocabSize(withAddedTokens);
  }
}
