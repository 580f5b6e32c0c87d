#!/usr/bin/python3
"""Reference ids for skim's SentencePiece BPE tokenizer (src/text/sentencepiece_bpe.*).

Writes tests/data/tokenizer/spm_tok512_vectors.jsonl: one JSON object per line,
  {"text": ..., "ids": sp.encode(text) (no BOS/EOS), "decoded": sp.decode(ids)}
computed by SentencePiece itself (Debian's python3-sentencepiece, 0.1.97) from
tests/data/models/stories260K/tok512.model. Lines that also carry
"variant": "no_byte_fallback" were computed from the same model with
trainer_spec.byte_fallback cleared and the 256 byte pieces retyped UNUSED (so
characters outside the vocabulary become <unk>, SentencePiece's behaviour
without byte fallback).

tok512.model's trainer_spec.unk_surface is the literal text " \\342\\201\\207 "
(octal escapes written out), so "decoded" shows that for <unk>; skim uses
SentencePiece's default " \u2047 " (the unit test accounts for it).

Also checks, on tiny hand-built models, the expectations of the unit tests
for rules tok512.model does not exercise (equal scores, user-defined and
unused pieces, <unk> runs).

Run from the repository root:
  apt-get install -y python3-sentencepiece
  /usr/bin/python3 tests/reference/tokenizer/make_spm_vectors.py [--survey]

The script prints the model's normalizer_spec and the trainer_spec fields that
matter for encoding (read with a small protobuf wire-format reader, so that
python3-protobuf is not needed), checks every vector's round trip through
sp.decode, and checks a pure-Python "best-score greedy merge" BPE (with the
normalizer rules below) against SentencePiece on every vector. --survey runs
that check, and a llama2.c-run.c-style encoder (no whitespace normalization),
over all of TinyStories' first 1000 stories and their lines, and prints how
often they differ from SentencePiece.

TinyStories texts: Eldan & Li 2023, CDLA-Sharing-1.0 (see tests/data/README.md).
"""
import json
import os
import re
import struct
import sys

import sentencepiece as spm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
MODEL = os.path.join(ROOT, "tests/data/models/stories260K/tok512.model")
STORIES = "/work/shared/data/tinystories/tinystories_valid_first1000.txt"
OUT = os.path.join(ROOT, "tests/data/tokenizer/spm_tok512_vectors.jsonl")
SPACE = "\u2581"


# --- protobuf wire format (just enough for ModelProto) ----------------------
def _varint(b, i):
    value = shift = 0
    while True:
        c = b[i]
        i += 1
        value |= (c & 0x7F) << shift
        shift += 7
        if c < 0x80:
            return value, i


def _enc_varint(v):
    out = bytearray()
    while True:
        c = v & 0x7F
        v >>= 7
        if v:
            out.append(c | 0x80)
        else:
            out.append(c)
            return bytes(out)


def fields(b):
    """[(field number, wire type, value, raw bytes of the whole field)]"""
    i, out = 0, []
    while i < len(b):
        start = i
        key, i = _varint(b, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(b, i)
        elif wire == 2:
            n, i = _varint(b, i)
            value = b[i:i + n]
            i += n
        elif wire == 5:
            value = b[i:i + 4]
            i += 4
        elif wire == 1:
            value = b[i:i + 8]
            i += 8
        else:
            raise ValueError(f"wire type {wire}")
        out.append((num, wire, value, b[start:i]))
    return out


def _message(num, payload):
    return _enc_varint((num << 3) | 2) + _enc_varint(len(payload)) + payload


def model_flags(proto):
    """normalizer_spec and trainer_spec fields, with proto2 defaults."""
    top = {num: value for num, _, value, _ in fields(proto) if num in (2, 3)}
    norm = {num: value for num, _, value, _ in fields(top.get(3, b""))}
    trainer = {num: value for num, _, value, _ in fields(top.get(2, b""))}
    return {
        "normalizer.name": bytes(norm.get(1, b"")).decode(),
        "normalizer.precompiled_charsmap bytes": len(norm.get(2, b"")),
        "normalizer.add_dummy_prefix": bool(norm.get(3, 1)),
        "normalizer.remove_extra_whitespaces": bool(norm.get(4, 1)),
        "normalizer.escape_whitespaces": bool(norm.get(5, 1)),
        "trainer.model_type (2=BPE)": trainer.get(3, 1),
        "trainer.vocab_size": trainer.get(4, 8000),
        "trainer.byte_fallback": bool(trainer.get(35, 0)),
        "trainer.split_digits": bool(trainer.get(25, 0)),
        "trainer.treat_whitespace_as_suffix": bool(trainer.get(24, 0)),
        "trainer.allow_whitespace_only_pieces": bool(trainer.get(26, 0)),
        "trainer.unk_surface": bytes(trainer.get(44, " \u2047 ".encode())).decode(),
    }


def without_byte_fallback(proto):
    """The model with trainer_spec.byte_fallback cleared and BYTE pieces retyped UNUSED."""
    out = bytearray()
    for num, _, value, raw in fields(proto):
        if num == 2:
            out += _message(2, b"".join(r for n, _, _, r in fields(value) if n != 35))
        elif num == 1 and any(n == 3 and v == 6 for n, _, v, _ in fields(value)):
            piece = b"".join(r if n != 3 else _enc_varint(3 << 3) + _enc_varint(5)
                             for n, _, _, r in fields(value))
            out += _message(1, piece)
        else:
            out += raw
    return bytes(out)


def _float_field(num, value):
    return _enc_varint((num << 3) | 5) + struct.pack("<f", value)


def _int_field(num, value):
    return _enc_varint(num << 3) + _enc_varint(value)


def tiny_model(extra, scores, types):
    """A BPE model over "▁ a b c" plus `extra` pieces, no dummy prefix, identity
    normalizer: the vocabularies of test_sentencepiece_bpe.cpp's rare-rule tests."""
    pieces = ["<unk>", "<s>", "</s>", SPACE, "a", "b", "c"] + extra
    scores = [0, 0, 0, -10, -11, -12, -13] + scores
    types = [2, 3, 3, 1, 1, 1, 1] + types
    proto = b"".join(_message(1, _message(1, p.encode()) + _float_field(2, s) + _int_field(3, t))
                     for p, s, t in zip(pieces, scores, types))
    proto += _message(2, _int_field(3, 2) + _int_field(4, len(pieces)))  # BPE
    proto += _message(3, _message(1, b"identity") + _int_field(3, 0))   # no dummy prefix
    return spm.SentencePieceProcessor(model_proto=proto)


def check_tiny_models():
    """Rules tok512.model never exercises: equal scores (leftmost wins), runs of
    unknown characters without byte fallback (one <unk>), user-defined pieces
    (whole, never merged), unused pieces (merged, then split back), pieces
    with "▁" inside (merged across a space)."""
    cases = [
        ((["ab", "ba"], [-1, -1], [1, 1]),
         {"aba": "ab a", "bab": "ba b", "ababab": "ab ab ab"}),
        ((["ab", "ba"], [-2, -1], [1, 1]),
         {"aba": "a ba", "xyab\u00e9z": "<unk> ab <unk>"}),
        ((["<sep>", "bc", "bca", "a<"], [0, -1, -2, -0.5], [4, 5, 1, 1]),
         {"a<sep>bc": "a <sep> b c", "bca<sep>": "bca <sep>", "a<": "a<"}),
        (([f"a{SPACE}", f"a{SPACE}b"], [-1, -2], [1, 1]),
         {"ca b": f"c a{SPACE}b"}),
    ]
    for (extra, scores, types), expected in cases:
        sp = tiny_model(extra, scores, types)
        for text, pieces in expected.items():
            got = " ".join(sp.id_to_piece(i) for i in sp.encode(text))
            assert got == pieces, f"tiny model {extra}: {text!r} → {got!r}, test expects {pieces!r}"
    print("tiny models: test_sentencepiece_bpe.cpp's expectations hold in sentencepiece")


# --- independent reimplementation, to check the algorithm ------------------
class GreedyBpe:
    """SentencePiece's normalizer (identity rules) + best-score greedy merges."""

    def __init__(self, sp, flags):
        self.dummy = flags["normalizer.add_dummy_prefix"]
        self.remove_extra = flags["normalizer.remove_extra_whitespaces"]
        self.escape = flags["normalizer.escape_whitespaces"]
        self.byte_fallback = flags["trainer.byte_fallback"]
        self.ids = {sp.id_to_piece(i): i for i in range(sp.vocab_size())
                    if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i))}
        self.scores = [sp.get_score(i) for i in range(sp.vocab_size())]
        self.bytes = {b: sp.piece_to_id("<0x%02X>" % b) for b in range(256)}
        self.unk = sp.unk_id()

    def normalize(self, text):
        space = SPACE if self.escape else " "
        if self.remove_extra:
            text = text.lstrip(" ")
        if not text:
            return ""
        out, prev_space = [space] if self.dummy else [], False
        for c in text:
            if c == " ":
                if self.remove_extra and prev_space:
                    continue
                out.append(space)
                prev_space = True
            else:
                out.append(c)
                prev_space = False
        s = "".join(out)
        return s.rstrip(space) if self.remove_extra else s

    def encode(self, text):
        symbols = list(self.normalize(text))
        while True:
            best = None  # (score, position); strict > keeps the leftmost of equal scores
            for i in range(len(symbols) - 1):
                piece = self.ids.get(symbols[i] + symbols[i + 1])
                if piece is not None and (best is None or self.scores[piece] > best[0]):
                    best = (self.scores[piece], i)
            if best is None:
                break
            i = best[1]
            symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
        ids, prev_unknown = [], False
        for s in symbols:
            if s in self.ids:
                ids.append(self.ids[s])
            elif self.byte_fallback:
                ids.extend(self.bytes[b] for b in s.encode())
            elif not prev_unknown:  # a run of unknown symbols is one <unk>
                ids.append(self.unk)
            prev_unknown = s not in self.ids and not self.byte_fallback
        return ids


def llama2c_style(sp, text):
    """What llama2.c's run.c encode() does: no whitespace normalization, ' ' kept
    as a plain character, a dummy " " only when the text is not empty."""
    n = sp.vocab_size()
    strs = [sp.id_to_piece(i).replace(SPACE, " ") for i in range(n)]
    strs[sp.bos_id()], strs[sp.eos_id()] = "\n<s>\n", "\n</s>\n"
    vocab = {s: i for i, s in enumerate(strs)}
    scores = [sp.get_score(i) for i in range(n)]
    toks = [vocab[" "]] if text else []
    for c in text:
        toks.extend([vocab[c]] if c in vocab else [3 + b for b in c.encode()])
    while True:
        best = None
        for i in range(len(toks) - 1):
            merged = vocab.get(strs[toks[i]] + strs[toks[i + 1]])
            if merged is not None and (best is None or scores[merged] > best[0]):
                best = (scores[merged], i, merged)
        if best is None:
            return toks
        toks[best[1]:best[1] + 2] = [best[2]]


# --- texts ------------------------------------------------------------------
def story_texts():
    with open(STORIES, encoding="utf-8") as f:
        stories = [s.strip("\n") for s in f.read().split("<|endoftext|>")]
    return [s for s in stories if s]


def vector_texts(stories):
    texts = []
    # TinyStories: whole stories (with their newlines), single lines, sentences.
    texts += [stories[0], stories[1], stories[17]]
    lines = [l for s in stories[:60] for l in s.split("\n") if l.strip()]
    texts += lines[:12]
    sentences = [x for l in lines[12:60] for x in re.split(r"(?<=[.!?])\s+", l) if x]
    texts += sentences[:14]
    texts += [l for l in (x for s in stories for x in s.split("\n")) if l.endswith(" ")][:2]
    texts += [
        # empty and whitespace
        "", " ", "   ", "\n", "\t", "\n\n",
        "Hello world", " Hello world", "   Hello world", "Hello world ", "Hello world   ",
        "Hello    world", "Hello \t world", "Hello\tworld", "Hello\nworld", "Hello\r\nworld",
        "line one\n\nline two\n", "  leading and trailing  ", "a\u00a0b", "a\u3000b", "a\u2003b",
        "\u2581", "a\u2581b", " \u2581 a", "x\u2581\u2581", "\v\f",
        # punctuation and digits
        "Hello, world! How are you? I'm fine...", "\"Yes!\" said Tom. 'No,' said Sue.",
        "!!!???...;;::", "(a) [b] {c} <d> #e $f %g ^h &i *j", "3.14159 and 2,718 and 1,000,000",
        "2023-10-05 12:34:56", "0123456789", "Call 555-0199 or email tom@example.com",
        "if (x > 0) { return y; } // done", "snake_case_name and camelCaseName",
        # non-ASCII
        "caf\u00e9 na\u00efve r\u00e9sum\u00e9 fa\u00e7ade", "e\u0301 (combining acute)",
        "Stra\u00dfe \u00fcber \u00c4rger", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
        "\u4f60\u597d\uff0c\u4e16\u754c", "\ud55c\uad6d\uc5b4", "\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440",
        "\u0645\u0631\u062d\u0628\u0627", "\u05e9\u05dc\u05d5\u05dd", "\u0928\u092e\u0938\u094d\u0924\u0947",
        "The dog \U0001F436 saw a cat \U0001F431!", "\U0001F600", "\U0001F468\u200D\U0001F469\u200D\U0001F467",
        "\U0001F1EB\U0001F1F7", "\u201csmart quotes\u201d \u2018single\u2019 \u2014 dash \u2026",
        "\uff21\uff22\uff23 fullwidth", "\ufb01ne ligature", "\u00bd \u00b2 \u2460",
        # unusual characters
        "zero\u200bwidth", "\ufeffBOM first", "\U0010FFFF", "\ufffd", "a\x01b\x7fc", "a\x00b",
        "<s>", "</s>", "<unk>", "<0x41>", "\n<s>\n",
        # a very long word, a long repeated run
        "Supercalifragilisticexpialidocious" * 12, "a" * 1000, "lol" * 200,
    ]
    return texts


NO_BYTE_FALLBACK_TEXTS = [
    "h\u00e9llo \U0001F600\U0001F600 x", "\u65e5\u672c\u8a9e", "a\tb\t\tc", "\U0001F600 \U0001F600",
    "Once upon a time, there was a cat.", "caf\u00e9 \u00fcber", "",
]


def main():
    survey = "--survey" in sys.argv[1:]
    with open(MODEL, "rb") as f:
        proto = f.read()
    flags = model_flags(proto)
    for key, value in flags.items():
        print(f"{key}: {value}")
    assert flags["trainer.model_type (2=BPE)"] == 2

    check_tiny_models()
    sp = spm.SentencePieceProcessor(model_proto=proto)
    sp_nobf = spm.SentencePieceProcessor(model_proto=without_byte_fallback(proto))
    greedy = GreedyBpe(sp, flags)
    greedy_nobf = GreedyBpe(sp_nobf, {**flags, "trainer.byte_fallback": False})

    stories = story_texts()
    texts = vector_texts(stories)
    assert len(set(texts)) == len(texts), "duplicate vector text"

    def expected_decode(text):
        # What decoding should give back: SentencePiece's normalization undone
        # (U+2581 read as a space; spaces collapsed and ends stripped when
        # remove_extra_whitespaces).
        t = text.replace(SPACE, " ")
        if flags["normalizer.remove_extra_whitespaces"]:
            t = re.sub(" +", " ", t).strip(" ")
        return t

    rows, roundtrip_exceptions = [], []
    for text in texts:
        ids = sp.encode(text)
        decoded = sp.decode(ids)
        if decoded != expected_decode(text):
            roundtrip_exceptions.append((text, decoded))
        mine = greedy.encode(text)
        assert mine == ids, f"greedy BPE differs from sentencepiece on {text!r}: {mine} vs {ids}"
        rows.append({"text": text, "ids": ids, "decoded": decoded})
    for text in NO_BYTE_FALLBACK_TEXTS:
        ids = sp_nobf.encode(text)
        mine = greedy_nobf.encode(text)
        assert mine == ids, f"greedy BPE (no byte fallback) differs on {text!r}: {mine} vs {ids}"
        rows.append({"text": text, "ids": ids, "decoded": sp_nobf.decode(ids),
                     "variant": "no_byte_fallback"})

    # Round trips that cannot hold: sp.decode of a literal U+2581 at the start.
    for text, decoded in roundtrip_exceptions:
        print(f"note: sp.decode(sp.encode({text!r})) = {decoded!r}")
        assert text.lstrip(" ").startswith(SPACE), "unexpected round-trip failure"

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=True) + "\n")
    print(f"wrote {len(texts)} vectors (+{len(NO_BYTE_FALLBACK_TEXTS)} without byte fallback) "
          f"to {os.path.relpath(OUT, ROOT)}; greedy BPE agrees with sentencepiece on all")

    if survey:
        lines = [l for s in stories for l in s.split("\n") if l]
        for name, items in (("stories", stories), ("lines", lines)):
            greedy_diff = sum(greedy.encode(t) != sp.encode(t) for t in items)
            l2c_diff = [t for t in items if llama2c_style(sp, t) != sp.encode(t)]
            ws = sum(t != t.strip(" ") or "  " in t for t in l2c_diff)
            print(f"survey {name}: {len(items)} texts; greedy BPE differs on {greedy_diff}; "
                  f"llama2.c-style encode differs on {len(l2c_diff)} "
                  f"({ws} of them have leading/trailing/repeated spaces)")


if __name__ == "__main__":
    main()
