// Writes tests/data/tokenizer/vectors.jsonl: reference token ids for skim's
// BERT WordPiece tokenizer, computed by Hugging Face's own implementation
// (the Rust `tokenizers` library through its Node binding).
//
// Needs Node ≥ 18 and `npm install tokenizers` (0.23.x was used) in this
// folder or in a folder the script is copied to, e.g.
//   mkdir /tmp/tokref && cd /tmp/tokref && npm install tokenizers
//   cp <repo>/tests/reference/tokenizer/make_vectors.mjs . && node make_vectors.mjs <repo>
// With no argument, the repo is taken to be three folders above this file.
//
// One JSON object per line: {"text", "ids_json", "ids_vocab"}, where
//   ids_json  = tokenizer.json of all-MiniLM-L6-v2 (tests/data/vocab/), encoded
//               with its [CLS] A [SEP] template, truncation and padding off;
//   ids_vocab = a tokenizer built like tokenizers' BertWordPieceTokenizer from
//               bert-base-uncased's vocab.txt: BertNormalizer (clean text,
//               Chinese chars, lowercase, strip_accents unset = follows
//               lowercase), BertPreTokenizer, WordPiece ([UNK], "##", 100
//               chars), [UNK]/[SEP]/[CLS]/[PAD]/[MASK] registered as special
//               tokens, BertProcessing.
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const { Tokenizer, WordPiece, bertNormalizer, bertPreTokenizer, bertProcessing } =
  require('tokenizers');

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(process.argv[2] ?? path.join(here, '..', '..', '..'));
const vocabDir = path.join(repo, 'tests', 'data', 'vocab');
const outFile = path.join(repo, 'tests', 'data', 'tokenizer', 'vectors.jsonl');

// A word of exactly n characters (BERT's limit is 100 per word).
const word = (n, unit = 'ab') => unit.repeat(Math.ceil(n / unit.length)).slice(0, n);

const texts = [
  // Plain, empty and whitespace-only input.
  'Hello, world!',
  '',
  ' ',
  '     ',
  '\n\n\t\r\n',
  'MiXeD CaSe WoRdS and ALL CAPS',
  // Accents and case.
  'café',
  'naïve résumé',
  'Ångström',
  'Zoë Saldaña',
  'Crème brûlée à la carte, s\'il vous plaît',
  'Tiếng Việt có dấu',
  'Zażółć gęślą jaźń',
  'Příliš žluťoučký kůň úpěl ďábelské ódy',
  'Þetta er ðæ og Ísland',
  'e\u0301 a\u0308\u0304 o\u0323\u0302 n\u0303',   // combining marks after the base
  'a\u0315\u0300\u05AE\u0300b',                    // marks that canonical ordering moves
  '\u0301\u0302 leading combining marks',
  // Turkish İ/ı, German ß, other casing corners.
  'İstanbul İ ı I i',
  'ıIiİ ğĞ şŞ çÇ öÖ üÜ',
  'Straße STRASSE ß ẞ',
  'ǅungla ǈ ǋ',
  'ΟΔΟΣ ΣΟΦΊΑ σοφός',
  'Ωhm \u2126 Ångström \u212B Kelvin \u212A',
  'Ⅻ ⅻ Ⓐ ⓐ',
  'ᲐᲑᲒ ქართული',
  'ᏣᎳᎩ ꭰꭱ',
  'ĳssel Ĳssel ŉ',
  // Scripts.
  'Καλημέρα κόσμε',
  'Привет, мир! Ёлка и ёж.',
  'مرحبا بالعالم السَّلَامُ عَلَيْكُمْ',
  'שָׁלוֹם עולם',
  'नमस्ते दुनिया, क्षत्रिय',
  'தமிழ் மொழி',
  'สวัสดีชาวโลก',
  'Բարեւ ﬓ',
  'ℌ𝔢𝔩𝔩𝔬 𝐁𝐨𝐥𝐝',
  // CJK, kana, Hangul.
  '中文',
  '我爱北京天安门。',
  '日本語テキスト',
  'ひらがな カタカナ ｶﾀｶﾅ',
  '한국어 Hangul 텍스트',
  'ㄱㄴㄷ \u1100\u1161\u11A8',
  'hello世界world',
  '豈 更 \uF900 𠀀𪜀 \u{2B820}\u{2B920}',
  '中文English混合mixed',
  // Emoji.
  'emoji 😀 test 👍🏽',
  '👨‍👩‍👧‍👦 family',
  '🇺🇸🇯🇵 flags 🏳️‍🌈',
  '❤️ heart 1️⃣ keycap',
  'I ❤ NY ☺ ★',
  // Punctuation runs.
  '!!!???',
  'wait.... what?!',
  '«quoted» — dash – en ‒ figure',
  '¿Qué tal? ¡Hola!',
  '« Bonjour » dit-il',
  '50% off!!! (limited) [sic] {ok} <tag>',
  '~`|\\^ $+<=> @#&*',
  'l·l a\u2E42b a\u2E4Fb',                         // U+2E4F is punctuation only after Unicode 8.0
  '"double" \'single\' „low“ ‘curly’',
  // Long words.
  word(100),
  word(101),
  word(150, 'supercalifragilistic'),
  'short ' + 'é'.repeat(100) + ' then ' + 'é'.repeat(101),
  'pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism',
  // Whitespace oddities.
  'tab\tseparated\tvalues',
  'line1\r\nline2\nline3\rline4',
  'non\u00A0breaking\u00A0space',
  'em\u2003space en\u2002space thin\u2009space',
  'ideographic\u3000space',
  'zero\u200Bwidth\u200Cnon\u200Djoiner',
  'next\u0085line\u2028sep\u2029para',
  'mongolian\u180Evowel',
  '\uFEFFbyte order mark',
  'co\u00ADoperate soft\u00ADhyphen',
  // Control characters and U+FFFD.
  'nul\u0000byte',
  '\u0001\u0002bell\u0007 and \u001B[31mred\u001B[0m \u007F',
  'replacement \uFFFD char \uFFFD\uFFFD',
  'private\uE000use\uE001 \u{F0000}',
  'vertical\u000Btab form\u000Cfeed',
  // Numbers.
  '1,234,567.89 and 1.000.000,00',
  '3.14159 10^6 1e-9 -42 +7 0x1F',
  '12:30pm 2023-01-15T10:00:00Z',
  '١٢٣ ४५६ ๑๒๓',
  'ＡＢＣ１２３！',
  // URLs, emails, code.
  'https://example.com/path?q=1&r=two#frag',
  'john.doe+tag@example.co.uk',
  'int main() { return 0; }',
  'C++ and C# and .NET',
  '#nlp @user ___init___',
  'e.g. i.e. U.S.A.',
  // Apostrophes.
  'don\'t it\'s rock \'n\' roll',
  'it’s what’s life’s',
  'Mr. O\'Neil\'s co-op',
  // Math and currency.
  '∑x² ≤ ∞ ± √2 ≠ π',
  '$100 €50 £20 ¥1000 ₹500 ₿1 ₩',
  '½ ¼ ¾ ⁴ ₂ ﬁnance ﬀ',
  // Special tokens typed in the text, and WordPiece syntax.
  '[CLS] hello [SEP] world [MASK]',
  'x[MASK]y [mask] [UNK] [PAD]',
  '##ing un##able',
  // CLINC150 utterances (Larson et al. 2019, CC BY 3.0).
  'what is 25% of $54,788',
  'put mambo #5 by lou bega on my playlist, please',
  'buy tickets for a flight from nyc to la on march 1, returning on march 5',
  'i requested some vacation time; has it been approved',
  'i need a suite that can accommodate 3 adults and 1 child in san diego for may 15th, 16th, and 17th',
  'my luggage is lost, i was on american airlines ab123 out of los angeles',
  'i wanna know my credit card\'s rewards balance',
  'what’s the answer to 5-6=',
  'i’m leaving-goodbye!',
  'what are you’re hobbies, ai',
  'set an alarm for 235pm and another an hour later',
  'can you roll a fair, 6 sided die',
];

const jsonTokenizer = Tokenizer.fromFile(path.join(vocabDir, 'all-MiniLM-L6-v2-tokenizer.json'));
jsonTokenizer.disableTruncation();
jsonTokenizer.disablePadding();

const wordpiece = await WordPiece.fromFile(path.join(vocabDir, 'bert-base-uncased-vocab.txt'), {
  unkToken: '[UNK]',
  continuingSubwordPrefix: '##',
  maxInputCharsPerWord: 100,
});
const vocabTokenizer = new Tokenizer(wordpiece);
vocabTokenizer.addSpecialTokens(['[UNK]', '[SEP]', '[CLS]', '[PAD]', '[MASK]']);
vocabTokenizer.setNormalizer(bertNormalizer({ cleanText: true, handleChineseChars: true, lowercase: true }));
vocabTokenizer.setPreTokenizer(bertPreTokenizer());
vocabTokenizer.setPostProcessor(
  bertProcessing(['[SEP]', vocabTokenizer.tokenToId('[SEP]')], ['[CLS]', vocabTokenizer.tokenToId('[CLS]')]),
);

if (new Set(texts).size !== texts.length) throw new Error('duplicate texts');
const lines = [];
let differing = 0;
for (const text of texts) {
  const ids_json = (await jsonTokenizer.encode(text)).getIds();
  const ids_vocab = (await vocabTokenizer.encode(text)).getIds();
  if (JSON.stringify(ids_json) !== JSON.stringify(ids_vocab)) {
    ++differing;
    console.error('sources differ on', JSON.stringify(text));
  }
  lines.push(JSON.stringify({ text, ids_json, ids_vocab }));
}
fs.mkdirSync(path.dirname(outFile), { recursive: true });
fs.writeFileSync(outFile, lines.join('\n') + '\n');
console.log(`wrote ${lines.length} vectors to ${outFile} (${differing} where the sources differ)`);
