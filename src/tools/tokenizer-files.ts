/**
 * Generates tokenizer.json / tokenizer_config.json / special_tokens_map.json
 * with the structure of the DiMOO tokenizer as the golden checkpoint has it:
 * a WordLevel vocab dense over ids 0..126079 (real words at low ids, fillers
 * elsewhere), a Whitespace pre-tokenizer, a template that prepends
 * <|startoftext|>, and 276 contiguous special added tokens 126080..126355.
 * Used for random checkpoints, which need a loadable tokenizer of the right shape.
 */
import * as path from 'node:path';
import { atomicWriteFileSync } from '../util/atomic-write.js';

/** Size of the WordLevel vocab (ids 0..126079). */
export const WORD_VOCAB_SIZE = 126080;
/** First and one-past-last added-token ids. */
export const FIRST_ADDED_ID = 126080;
export const END_ADDED_ID = 126356;
/** Image code c has token id IMAGE_TOKEN_OFFSET + c. */
export const IMAGE_TOKEN_OFFSET = 126356;

export const BOS_TOKEN = '<|startoftext|>';
export const EOS_TOKEN = '<|endoftext|>';
export const UNK_TOKEN = '[UNK]';

/** Named special tokens (all others in the added range are <|reserved_N|>). */
export const SPECIAL_TOKENS: ReadonlyArray<readonly [number, string]> = [
  [126080, BOS_TOKEN],
  [126081, EOS_TOKEN],
  [126084, '<end-of-line>'],
  [126336, '<|mdm_mask|>'],
  [126339, '<|pad|>'],
  [126340, '<user>'],
  [126341, '</user>'],
  [126346, '<|start_header_id|>'],
  [126347, '<|end_header_id|>'],
  [126348, '<|eot_id|>'],
  [126349, '<IMAGE>'],
  [126350, '</IMAGE>'],
  [126351, '<uncondition>'],
  [126352, '<system>'],
  [126353, '</system>'],
  [126354, '<answer>'],
  [126355, '</answer>'],
];

// Words a prompt is likely to use (system templates included), so random
// checkpoints tokenize typical prompts with few [UNK]s. Case-sensitive.
const WORDS = `a about above according across add after again against air all almost alone
along also always among an Analyze and animal another Answer answer any apple applying are arm
around art as at away baby back bag ball banana bank bar based basket be beach bear beautiful
bed bee before behind below bench between bicycle big bird black blanket blue boat body book
both bottle bowl box boy bread bridge bright brown building bus but butterfly by cake camera
can canny car cat chair change cheese child city clear clock cloud coat coffee cold color
colorful combine control cow cup current cute dark day deer dense depth describe Describe
desert details dog door down dress drink duck during each eat edge edit editing egg elephant
empty end estimation evening every eye face far farm fast field fire fish flag floor flower
fly following food for forest fork fox from front fruit full garden gate Generate generation
giraffe girl given glass gold grass gray green guitar hair hand happy hat have he head heavy
hed her high hill his holding home horse hot house how ice image images in input inside
instruction into is island it its jacket kitchen kite lake lamp large leaf left light lion
little long low make man many map market mask model moon more morning mountain mouse multi
multimodal near new next night no normal not object of old on one open openpose orange
original other out over painting paper park people Perform person phone photo piano picture
pink pizza plant plate playing pose prediction process prompt provided purple question rabbit
rain red reference relevant remove replace right river road rock room round running sam2 sand
scene sea shadow sheep ship shirt shoe short side sign silver sitting sky sleeping small snow
soft some something standing star start stone street style subject sun sunset table tall tea
text that the The there these this This those tiger to toy train transfer Transform tree
truck turn two type umbrella under understanding up vase very view wall warm watch water wave
What what where which white who window wings winter with wood wooden yellow You young zebra
0 1 2 3 4 5 6 7 8 9 ! " ' ( ) , - . / : ; ?`;

export const WORD_LIST: readonly string[] = WORDS.split(/\s+/).filter((w) => w.length > 0);

export function specialTokenName(id: number): string {
  for (const [i, s] of SPECIAL_TOKENS) if (i === id) return s;
  return `<|reserved_${id}|>`;
}

function addedToken(id: number): Record<string, unknown> {
  return {
    id,
    content: specialTokenName(id),
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  };
}

/** The tokenizer.json object. Real words take ids 1..N after [UNK] = 0. */
export function buildTokenizerJson(words: readonly string[] = WORD_LIST): Record<string, unknown> {
  if (new Set(words).size !== words.length) throw new Error('tokenizer word list has duplicates');
  if (words.length + 1 > WORD_VOCAB_SIZE) throw new Error('tokenizer word list too long');
  const vocab: Record<string, number> = { [UNK_TOKEN]: 0 };
  words.forEach((w, i) => {
    vocab[w] = i + 1;
  });
  for (let id = words.length + 1; id < WORD_VOCAB_SIZE; id++) vocab[`<unused_${id}>`] = id;
  const added: Record<string, unknown>[] = [];
  for (let id = FIRST_ADDED_ID; id < END_ADDED_ID; id++) added.push(addedToken(id));
  const bos = { SpecialToken: { id: BOS_TOKEN, type_id: 0 } };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: { type: 'Whitespace' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [bos, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        bos,
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: BOS_TOKEN, type_id: 1 } },
        { Sequence: { id: 'B', type_id: 1 } },
      ],
      special_tokens: {
        [BOS_TOKEN]: { id: BOS_TOKEN, ids: [FIRST_ADDED_ID], tokens: [BOS_TOKEN] },
      },
    },
    decoder: null,
    model: { type: 'WordLevel', vocab, unk_token: UNK_TOKEN },
  };
}

/** Named specials other than BOS/EOS, in id order, as special_tokens_map lists them. */
function additionalSpecials(): string[] {
  return SPECIAL_TOKENS.filter(([id]) => id !== 126080 && id !== 126081).map(([, s]) => s);
}

function tokenSpec(content: string): Record<string, unknown> {
  return { content, lstrip: false, normalized: false, rstrip: false, single_word: false };
}

export function buildSpecialTokensMap(): Record<string, unknown> {
  return {
    additional_special_tokens: additionalSpecials(),
    bos_token: tokenSpec(BOS_TOKEN),
    eos_token: tokenSpec(EOS_TOKEN),
    pad_token: tokenSpec(EOS_TOKEN),
  };
}

// transformers writes this huge integer; JSON.stringify would print 1e+30.
const MAX_LEN_PLACEHOLDER = '__MODEL_MAX_LENGTH__';
const MODEL_MAX_LENGTH = '1000000000000000019884624838656';

export function buildTokenizerConfigText(): string {
  const decoder: Record<string, unknown> = {};
  for (let id = FIRST_ADDED_ID; id < END_ADDED_ID; id++) {
    decoder[String(id)] = { ...tokenSpec(specialTokenName(id)), special: true };
  }
  const cfg = {
    add_bos_token: true,
    add_eos_token: false,
    added_tokens_decoder: decoder,
    additional_special_tokens: additionalSpecials(),
    bos_token: BOS_TOKEN,
    clean_up_tokenization_spaces: false,
    eos_token: EOS_TOKEN,
    model_max_length: MAX_LEN_PLACEHOLDER,
    pad_token: EOS_TOKEN,
    tokenizer_class: 'PreTrainedTokenizerFast',
  };
  return JSON.stringify(cfg, null, 2).replace(`"${MAX_LEN_PLACEHOLDER}"`, MODEL_MAX_LENGTH) + '\n';
}

/** Writes the three tokenizer files into dir (atomically, each). */
export function writeTokenizerFiles(dir: string, words: readonly string[] = WORD_LIST): string[] {
  const files = {
    'tokenizer.json': JSON.stringify(buildTokenizerJson(words), null, 2) + '\n',
    'tokenizer_config.json': buildTokenizerConfigText(),
    'special_tokens_map.json': JSON.stringify(buildSpecialTokensMap(), null, 2) + '\n',
  };
  const out: string[] = [];
  for (const [name, text] of Object.entries(files)) {
    const p = path.join(dir, name);
    atomicWriteFileSync(p, text, { fsync: false });
    out.push(p);
  }
  return out;
}
