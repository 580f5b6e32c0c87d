// Labelled data files for calibration and evaluation: TSV and CLINC150 JSON.
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "skim/data.hpp"
#include "skim/error.hpp"

namespace skim {

namespace {

std::string read_all(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error(ErrorCode::io, file.string() + ": cannot open");
  std::ostringstream s;
  s << in.rdbuf();
  if (in.bad()) throw Error(ErrorCode::io, file.string() + ": read failed");
  return s.str();
}

bool is_label_header(std::string_view label) {
  std::string lower(label);
  for (char& c : lower) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  return lower == "label";
}

std::vector<LabelledText> parse_tsv(const std::string& where, const std::string& content) {
  std::vector<LabelledText> rows;
  std::size_t begin = 0;
  for (std::size_t line_no = 1; begin < content.size(); ++line_no) {
    std::size_t end = content.find('\n', begin);
    if (end == std::string::npos) end = content.size();
    std::string_view line(content.data() + begin, end - begin);
    begin = end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;
    const std::size_t tab = line.rfind('\t');
    const std::string at = where + ":" + std::to_string(line_no) + ": ";
    if (tab == std::string_view::npos)
      throw Error(ErrorCode::format, at + "no label column (expected text<TAB>label)");
    std::string_view text = line.substr(0, tab), label = line.substr(tab + 1);
    while (!label.empty() && label.back() == ' ') label.remove_suffix(1);
    if (line_no == 1 && is_label_header(label)) continue;
    if (label.empty()) throw Error(ErrorCode::format, at + "empty label");
    if (text.find_first_not_of(' ') == std::string_view::npos) throw Error(ErrorCode::format, at + "empty text");
    rows.push_back({std::string(text), std::string(label)});
  }
  return rows;
}

void append_pairs(const std::string& where, const nlohmann::json& list, std::vector<LabelledText>& rows) {
  if (!list.is_array()) throw Error(ErrorCode::format, where + ": expected a list of [text, label]");
  for (std::size_t i = 0; i < list.size(); ++i) {
    const auto& item = list[i];
    const std::string at = where + "[" + std::to_string(i) + "]: ";
    if (!item.is_array() || item.size() < 2)
      throw Error(ErrorCode::format, at + "expected [text, label]" + (item.is_array() && item.size() == 1 ? " (no label)" : ""));
    if (!item[0].is_string() || !item[1].is_string())
      throw Error(ErrorCode::format, at + "text and label must be strings");
    auto text = item[0].get<std::string>(), label = item[1].get<std::string>();
    if (label.empty()) throw Error(ErrorCode::format, at + "empty label");
    if (text.find_first_not_of(' ') == std::string::npos) throw Error(ErrorCode::format, at + "empty text");
    rows.push_back({std::move(text), std::move(label)});
  }
}

std::vector<LabelledText> parse_json(const std::string& where, const std::string& content, std::string_view split) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(content);
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorCode::format, where + ": bad JSON: " + e.what());
  }
  std::vector<LabelledText> rows;
  if (j.is_array()) {
    append_pairs(where, j, rows);
    return rows;
  }
  if (!j.is_object()) throw Error(ErrorCode::format, where + ": expected a JSON object of splits or a list of [text, label]");
  std::string names;
  for (auto it = j.begin(); it != j.end(); ++it) names += (names.empty() ? "" : ", ") + it.key();
  if (split.empty()) throw Error(ErrorCode::invalid_argument, where + ": choose a split (one of: " + names + ")");
  const std::string key(split);
  if (!j.contains(key)) throw Error(ErrorCode::invalid_argument, where + ": no split \"" + key + "\" (have: " + names + ")");
  append_pairs(where + " " + key, j[key], rows);
  // CLINC150 keeps the out-of-scope part of each split apart, already labelled "oos".
  const std::string oos = "oos_" + key;
  if (j.contains(oos)) append_pairs(where + " " + oos, j[oos], rows);
  return rows;
}

}  // namespace

std::vector<LabelledText> read_labelled(const std::filesystem::path& file, std::string_view split) {
  const std::string content = read_all(file);
  std::size_t first = content.find_first_not_of(" \t\r\n");
  std::vector<LabelledText> rows;
  if (first != std::string::npos && (content[first] == '{' || content[first] == '['))
    rows = parse_json(file.string(), content, split);
  else
    rows = parse_tsv(file.string(), content);
  if (rows.empty()) throw Error(ErrorCode::invalid_argument, file.string() + ": no labelled rows");
  return rows;
}

}  // namespace skim

namespace skim {

namespace {

std::string trimmed(std::string_view s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  const auto e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}

}  // namespace

std::vector<std::string> read_documents(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw Error(ErrorCode::io, file.string() + ": cannot open");
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  std::vector<std::string> docs;
  auto add = [&](std::string_view piece) {
    if (auto t = trimmed(piece); !t.empty()) docs.push_back(std::move(t));
  };
  const std::string marker = "<|endoftext|>";
  if (text.find(marker) != std::string::npos) {
    std::size_t at = 0;
    for (std::size_t next; (next = text.find(marker, at)) != std::string::npos; at = next + marker.size())
      add(std::string_view(text).substr(at, next - at));
    add(std::string_view(text).substr(at));
  } else {
    std::istringstream lines(text);
    std::string line, current;
    while (std::getline(lines, line)) {
      if (trimmed(line).empty()) {
        add(current);
        current.clear();
      } else {
        current += line + "\n";
      }
    }
    add(current);
  }
  if (docs.empty()) throw Error(ErrorCode::invalid_argument, file.string() + ": no documents");
  return docs;
}

}  // namespace skim
