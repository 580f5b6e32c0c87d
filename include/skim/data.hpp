#pragma once
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace skim {

// One labelled utterance, as read from a data file.
struct LabelledText {
  std::string text;
  std::string label;
};

// Reads labelled utterances from
//  - a TSV file, one `text<TAB>label` per line (the label is after the last
//    tab; a first line whose label column reads "label" is a header and is
//    skipped; blank lines are skipped), or
//  - CLINC150's JSON (data_full.json and its variants: an object of splits,
//    each a list of [text, label]); `split` picks the part, and "train",
//    "val" and "test" include their out-of-scope part (oos_train, ...) with
//    the label "oos". A JSON file that is a bare list of [text, label] needs
//    no split.
// Throws skim::Error naming the file and line (or JSON position) for a missing
// label column, an empty text or label, an unknown split, or bad JSON.
std::vector<LabelledText> read_labelled(const std::filesystem::path& file, std::string_view split = {});

// Reads the documents of a text file for scoring: split on the
// `<|endoftext|>` marker when the file has one, else on blank lines; each
// trimmed, empty ones dropped. Throws skim::Error naming the file when it
// cannot be read or holds no document.
std::vector<std::string> read_documents(const std::filesystem::path& file);

}  // namespace skim
