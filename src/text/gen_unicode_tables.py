#!/usr/bin/python3
"""Generates src/text/unicode_tables.inc, the character tables of skim's BERT
tokenizer, from the Unicode Character Database.

Usage (stdlib only; the UCD comes from Debian's `unicode-data` package):

    apt-get install -y unicode-data
    /usr/bin/python3 src/text/gen_unicode_tables.py [UCD_DIR] > src/text/unicode_tables.inc

UCD_DIR defaults to /usr/share/unicode. The output is committed, so building
skim never needs the UCD.

The reference for skim's tokenizer is Hugging Face `tokenizers` (Rust). Its
BERT normalizer and pre-tokenizer do not use one Unicode version throughout:

  * control / punctuation / nonspacing-mark tests come from the
    `unicode_categories` crate 0.1.1, whose tables were generated from
    Unicode 8.0 (2015);
  * NFD (decomposition mappings and canonical combining classes) comes from
    `unicode-normalization-alignments` 0.1.12, built on Unicode 9.0;
  * whitespace and lowercase mappings come from Rust's std (current Unicode).

To give the same ids, this script derives each table from the one UCD given
(Debian bookworm: 15.0) restricted, through DerivedAge.txt, to the characters
assigned in the version the reference uses. General categories of a few
characters changed after 8.0; CATEGORY_8_0_OVERRIDES puts them back to what
the crate's tables say.
"""
import os
import sys

UCD = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/unicode"

CATEGORY_TABLES_AGE = (8, 0)  # unicode_categories 0.1.1
NORMALIZATION_AGE = (9, 0)  # unicode-normalization-alignments 0.1.12

# General categories in unicode_categories 0.1.1 that differ from the UCD at
# hand for characters assigned by 8.0 (checked against the crate's tables.rs).
CATEGORY_8_0_OVERRIDES = {
    0x111C9: "Po",  # SHARADA SANDHI MARK, Mn since 9.0
    0x166D: "Po",  # CANADIAN SYLLABICS CHI SIGN, So since 12.0
    0x1734: "Mn",  # HANUNOO SIGN PAMUDPOD, Mc since 14.0
    0x1885: "Lo",  # MONGOLIAN LETTER ALI GALI BALUDA, Mn since 9.0
    0x1886: "Lo",  # MONGOLIAN LETTER ALI GALI THREE BALUDA, Mn since 9.0
    0xA9BD: "Mc",  # JAVANESE CONSONANT SIGN KERET, Mn since 12.0
}


def ucd_path(name):
    return os.path.join(UCD, name)


def data_lines(name):
    with open(ucd_path(name), encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                yield [field.strip() for field in line.split(";")]


def parse_range(text):
    first, _, last = text.partition("..")
    return int(first, 16), int(last or first, 16)


def ucd_version():
    with open(ucd_path("DerivedAge.txt"), encoding="utf-8") as f:
        first_line = f.readline()  # "# DerivedAge-15.0.0.txt"
    return first_line.strip().lstrip("# ").removeprefix("DerivedAge-").removesuffix(".txt")


def load_ages():
    ages = {}
    for fields in data_lines("DerivedAge.txt"):
        first, last = parse_range(fields[0])
        version = tuple(int(part) for part in fields[1].split("."))
        for code in range(first, last + 1):
            ages[code] = version
    return ages


def load_unicode_data():
    """code -> (category, ccc, decomposition field, simple lowercase)."""
    chars = {}
    range_start = None
    with open(ucd_path("UnicodeData.txt"), encoding="utf-8") as f:
        for line in f:
            fields = line.rstrip("\n").split(";")
            code = int(fields[0], 16)
            record = (fields[2], int(fields[3]), fields[5], fields[13])
            if fields[1].endswith(", First>"):
                range_start = code
                continue
            if fields[1].endswith(", Last>"):
                for c in range(range_start, code + 1):
                    chars[c] = record
                continue
            chars[code] = record
    return chars


def ranges_of(codes):
    ranges = []
    for code in sorted(codes):
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return ranges


def emit_ranges(out, name, comment, codes):
    ranges = ranges_of(codes)
    out.append(f"// {comment}\n// {len(codes)} code points in {len(ranges)} ranges.")
    out.append(f"inline constexpr CodeRange {name}[] = {{")
    row = []
    for first, last in ranges:
        row.append(f"{{0x{first:X}, 0x{last:X}}}")
        if len(row) == 6:
            out.append("    " + ", ".join(row) + ",")
            row = []
    if row:
        out.append("    " + ", ".join(row) + ",")
    out.append("};\n")


def main():
    ages = load_ages()
    chars = load_unicode_data()
    version = ucd_version()

    def assigned_by(code, age):
        return ages.get(code, (99, 0)) <= age

    def category_8_0(code):
        if code in CATEGORY_8_0_OVERRIDES:
            return CATEGORY_8_0_OVERRIDES[code]
        if not assigned_by(code, CATEGORY_TABLES_AGE):
            return "Cn"
        return chars[code][0]

    white_space = set()
    for fields in data_lines("PropList.txt"):
        if fields[1] == "White_Space":
            first, last = parse_range(fields[0])
            white_space.update(range(first, last + 1))

    old_categories = {code: category_8_0(code) for code in chars}
    control = {c for c, cat in old_categories.items() if cat in ("Cc", "Cf", "Co")}
    punctuation = {c for c, cat in old_categories.items() if cat.startswith("P")}
    nonspacing = {c for c, cat in old_categories.items() if cat == "Mn"}

    # Canonical decompositions, expanded recursively (Hangul is algorithmic).
    canonical = {}
    for code, (_, _, decomposition, _) in chars.items():
        if decomposition and not decomposition.startswith("<") and assigned_by(code, NORMALIZATION_AGE):
            canonical[code] = [int(part, 16) for part in decomposition.split()]

    def expand(code):
        if code not in canonical:
            return [code]
        return [part for piece in canonical[code] for part in expand(piece)]

    decompositions = {code: expand(code) for code in canonical}
    combining = {code: rec[1] for code, rec in chars.items()
                 if rec[1] != 0 and assigned_by(code, NORMALIZATION_AGE)}

    lowercase = {code: int(rec[3], 16) for code, rec in chars.items() if rec[3]}
    lowercase_multi = {}
    for fields in data_lines("SpecialCasing.txt"):
        # code; lower; title; upper; (condition list)
        if len(fields) > 4 and fields[4]:
            continue  # conditional mappings (final sigma, locales): not in char::to_lowercase
        lower = [int(part, 16) for part in fields[1].split()]
        code = int(fields[0], 16)
        if len(lower) > 1:
            lowercase_multi[code] = lower
            lowercase.pop(code, None)

    out = []
    out.append("// Generated by src/text/gen_unicode_tables.py -- do not edit.")
    out.append(f"// Source: Unicode Character Database {version} (Debian package unicode-data):")
    out.append("// UnicodeData.txt, PropList.txt, SpecialCasing.txt, DerivedAge.txt.")
    out.append(f"// Control, punctuation and Mn use general categories as of Unicode "
               f"{CATEGORY_TABLES_AGE[0]}.{CATEGORY_TABLES_AGE[1]} and NFD uses")
    out.append(f"// characters assigned by Unicode {NORMALIZATION_AGE[0]}.{NORMALIZATION_AGE[1]}, "
               "as Hugging Face tokenizers does (see the script).")
    out.append("// Included by unicode.cpp, which defines CodeRange and the other row types.\n")
    out.append(f'inline constexpr char kUnicodeVersion[] = "{version}";\n')

    emit_ranges(out, "kWhiteSpace", "White_Space (PropList.txt), as Rust's char::is_whitespace.",
                white_space)
    emit_ranges(out, "kControl", "General category Cc, Cf or Co (Unicode 8.0).", control)
    emit_ranges(out, "kPunctuation", "General category Pc, Pd, Ps, Pe, Pi, Pf or Po (Unicode 8.0).",
                punctuation)
    emit_ranges(out, "kNonspacingMark", "General category Mn (Unicode 8.0).", nonspacing)

    # Canonical combining classes as runs of equal class.
    runs = []
    for code in sorted(combining):
        if runs and runs[-1][1] == code - 1 and runs[-1][2] == combining[code]:
            runs[-1][1] = code
        else:
            runs.append([code, code, combining[code]])
    out.append(f"// Canonical_Combining_Class != 0, {len(runs)} runs.")
    out.append("inline constexpr CombiningClassRange kCombiningClass[] = {")
    row = []
    for first, last, ccc in runs:
        row.append(f"{{0x{first:X}, 0x{last:X}, {ccc}}}")
        if len(row) == 5:
            out.append("    " + ", ".join(row) + ",")
            row = []
    if row:
        out.append("    " + ", ".join(row) + ",")
    out.append("};\n")

    # Full canonical decompositions: a sorted index into one pool of code points.
    pool = []
    index = []
    for code in sorted(decompositions):
        parts = decompositions[code]
        index.append((code, len(pool), len(parts)))
        pool.extend(parts)
    assert len(pool) < 65536 and max(n for _, _, n in index) < 256
    out.append(f"// Full canonical decompositions (NFD) of {len(index)} code points "
               "(Hangul syllables are decomposed algorithmically).")
    out.append("inline constexpr char32_t kDecompositionPool[] = {")
    for start in range(0, len(pool), 10):
        out.append("    " + ", ".join(f"0x{c:X}" for c in pool[start:start + 10]) + ",")
    out.append("};")
    out.append("inline constexpr Decomposition kDecomposition[] = {")
    for start in range(0, len(index), 5):
        out.append("    " + ", ".join(f"{{0x{c:X}, {o}, {n}}}" for c, o, n in index[start:start + 5]) + ",")
    out.append("};\n")

    # Simple lowercase as runs: code = first + k*stride maps to code + delta.
    runs = []
    for code in sorted(lowercase):
        delta = lowercase[code] - code
        if runs:
            first, last, run_delta, stride = runs[-1]
            if run_delta == delta:
                if stride == 0 and code - last in (1, 2):
                    runs[-1][1], runs[-1][3] = code, code - last
                    continue
                if stride and code - last == stride:
                    runs[-1][1] = code
                    continue
        runs.append([code, code, delta, 0])
    out.append(f"// Simple lowercase mappings (UnicodeData.txt) of {len(lowercase)} code points "
               f"in {len(runs)} runs:")
    out.append("// first + k*stride maps to itself + delta.")
    out.append("inline constexpr LowercaseRun kLowercase[] = {")
    for start in range(0, len(runs), 4):
        out.append("    " + ", ".join(f"{{0x{f:X}, 0x{l:X}, {d}, {max(s, 1)}}}"
                                      for f, l, d, s in runs[start:start + 4]) + ",")
    out.append("};")
    out.append("// Unconditional multi-character lowercase mappings (SpecialCasing.txt).")
    out.append("inline constexpr MultiLowercase kMultiLowercase[] = {")
    for code in sorted(lowercase_multi):
        parts = lowercase_multi[code] + [0] * (3 - len(lowercase_multi[code]))
        out.append(f"    {{0x{code:X}, {{{', '.join(f'0x{c:X}' for c in parts)}}}}},")
    out.append("};")
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
