/**
 * DiMOO's special token ids.
 *
 * Defaults are the constants of the original (config.py SPECIAL_TOKENS, the
 * generators' defaults and LLaDA's BOS/EOS). `resolveSpecialTokens` reads the
 * ids a checkpoint actually defines, from the tokenizer's vocabulary (by the
 * token strings below) and from config.json (mask/eos/pad ids, embedding size),
 * checks that they agree, and falls back to the defaults for what neither
 * defines.
 *
 *   DEFAULT_SPECIAL_TOKENS                the original's ids
 *   SPECIAL_TOKEN_STRINGS                 token string for each named id
 *   resolveSpecialTokens(tokenizer?, config?, opts?) -> SpecialTokens
 *   imageTokenId(code, t) / isImageToken(id, t) / codeOfToken(id, t)
 */
import { DimooError } from '../errors.js';

export interface SpecialTokens {
  /** <|mdm_mask|>, the diffusion mask. */
  mask: number;
  /** <end-of-line>, after every row of image codes. */
  newline: number;
  /** <IMAGE> / </IMAGE>: begin / end of image. */
  boi: number;
  eoi: number;
  /** <answer> / </answer>: begin / end of answer. */
  boa: number;
  eoa: number;
  /** <uncondition>, the CFG placeholder. */
  uncondition: number;
  /** <|startoftext|> / <|endoftext|>. */
  bos: number;
  eos: number;
  /** <|pad|> (training padding). */
  pad: number;
  /** <user> </user> <system> </system> prompt delimiters. */
  user: number;
  userEnd: number;
  system: number;
  systemEnd: number;
  /** Image code c has token id imageOffset + c (= text vocabulary size). */
  imageOffset: number;
  /** Number of VQ codes. */
  codebookSize: number;
}

export type NamedToken = Exclude<keyof SpecialTokens, 'imageOffset' | 'codebookSize'>;

export const DEFAULT_SPECIAL_TOKENS: Readonly<SpecialTokens> = Object.freeze({
  mask: 126336,
  newline: 126084,
  boi: 126349,
  eoi: 126350,
  boa: 126354,
  eoa: 126355,
  uncondition: 126351,
  bos: 126080,
  eos: 126081,
  pad: 126339,
  user: 126340,
  userEnd: 126341,
  system: 126352,
  systemEnd: 126353,
  imageOffset: 126356,
  codebookSize: 8192,
});

export const SPECIAL_TOKEN_STRINGS: Readonly<Record<NamedToken, string>> = Object.freeze({
  mask: '<|mdm_mask|>',
  newline: '<end-of-line>',
  boi: '<IMAGE>',
  eoi: '</IMAGE>',
  boa: '<answer>',
  eoa: '</answer>',
  uncondition: '<uncondition>',
  bos: '<|startoftext|>',
  eos: '<|endoftext|>',
  pad: '<|pad|>',
  user: '<user>',
  userEnd: '</user>',
  system: '<system>',
  systemEnd: '</system>',
});

/** What resolveSpecialTokens needs from a tokenizer (TextTokenizer fits). */
export interface TokenVocabulary {
  tokenToId(token: string): number | null | undefined;
  vocabSize?(withAddedTokens?: boolean): number;
}

/** What it needs from a model config (config.ts LladaConfig fits). */
export interface TokenConfig {
  maskTokenId?: number;
  eosTokenId?: number;
  /** Logits width: text vocabulary + codebook. */
  embeddingSize?: number;
}

export interface ResolveOptions {
  /** VQ codebook size (vqvae config num_vq_embeddings); default 8192. */
  codebookSize?: number;
}

const E = 'E_SPECIAL_TOKENS';

/**
 * Refuses a tokenizer that lacks any of DiMOO's added special tokens. Falling
 * back to the built-in ids would silently give different prompts (and so
 * different outputs) than the checkpoint's own tokenizer defines.
 */
export function requireSpecialTokens(tokenizer: TokenVocabulary, file: string): void {
  const missing = Object.values(SPECIAL_TOKEN_STRINGS).filter((s) => {
    const id = tokenizer.tokenToId(s);
    return id === null || id === undefined;
  });
  if (missing.length > 0) {
    throw new DimooError(
      `${file}: missing DiMOO's special token(s) ${missing.join(' ')} (its added_tokens must define them; is this the checkpoint's own tokenizer.json?)`,
      E,
    );
  }
}

export function resolveSpecialTokens(
  tokenizer?: TokenVocabulary,
  config?: TokenConfig,
  opts: ResolveOptions = {},
): SpecialTokens {
  const codebookSize = opts.codebookSize ?? DEFAULT_SPECIAL_TOKENS.codebookSize;
  if (!Number.isSafeInteger(codebookSize) || codebookSize < 1) {
    throw new DimooError(`codebookSize must be a positive integer, got ${codebookSize}`, E);
  }
  const out: SpecialTokens = { ...DEFAULT_SPECIAL_TOKENS, codebookSize };
  for (const name of Object.keys(SPECIAL_TOKEN_STRINGS) as NamedToken[]) {
    const id = tokenizer?.tokenToId(SPECIAL_TOKEN_STRINGS[name]);
    if (id !== null && id !== undefined) out[name] = id;
  }
  // The config's ids must name the same tokens as the tokenizer's.
  const fromConfig: Array<[NamedToken, number | undefined, string]> = [
    ['mask', config?.maskTokenId, 'mask_token_id'],
    ['eos', config?.eosTokenId, 'eos_token_id'],
  ];
  for (const [name, id, field] of fromConfig) {
    if (id === undefined) continue;
    const tokId = tokenizer?.tokenToId(SPECIAL_TOKEN_STRINGS[name]);
    if (tokId !== null && tokId !== undefined && tokId !== id) {
      throw new DimooError(
        `config.json ${field} is ${id} but the tokenizer maps ${SPECIAL_TOKEN_STRINGS[name]} to ${tokId}`,
        E,
      );
    }
    out[name] = id;
  }
  // The original learns the text vocabulary size as logits width - codebook size.
  if (config?.embeddingSize !== undefined) {
    out.imageOffset = config.embeddingSize - codebookSize;
    if (out.imageOffset <= 0) {
      throw new DimooError(
        `config.json embedding_size ${config.embeddingSize} is not larger than the codebook size ${codebookSize}`,
        E,
      );
    }
  } else if (tokenizer?.vocabSize) {
    out.imageOffset = tokenizer.vocabSize(true);
  }
  for (const name of Object.keys(SPECIAL_TOKEN_STRINGS) as NamedToken[]) {
    if (out[name] >= out.imageOffset) {
      throw new DimooError(
        `special token ${SPECIAL_TOKEN_STRINGS[name]} has id ${out[name]}, inside the image-code range starting at ${out.imageOffset}`,
        E,
      );
    }
  }
  return out;
}

/** Token id of image code `code`. */
export function imageTokenId(
  code: number,
  t: Pick<SpecialTokens, 'imageOffset'> = DEFAULT_SPECIAL_TOKENS,
): number {
  return t.imageOffset + code;
}

/** Whether `id` is an image-code token. */
export function isImageToken(
  id: number,
  t: Pick<SpecialTokens, 'imageOffset' | 'codebookSize'> = DEFAULT_SPECIAL_TOKENS,
): boolean {
  return id >= t.imageOffset && id < t.imageOffset + t.codebookSize;
}

/** Image code of token `id` (DimooError if it is not an image token). */
export function codeOfToken(
  id: number,
  t: Pick<SpecialTokens, 'imageOffset' | 'codebookSize'> = DEFAULT_SPECIAL_TOKENS,
): number {
  if (!isImageToken(id, t)) {
    throw new DimooError(
      `token ${id} is not an image token [${t.imageOffset}, ${t.imageOffset + t.codebookSize})`,
      'E_PARAM',
    );
  }
  return id - t.imageOffset;
}
