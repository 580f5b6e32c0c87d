#include "format/hf_config.hpp"

#include <charconv>
#include <limits>
#include <map>

#include <nlohmann/json.hpp>

#include "format/mapped_file.hpp"
#include "skim/error.hpp"

namespace skim::format {
namespace {

using Json = nlohmann::json;

std::string single_quoted(const std::string& text) { return "'" + text + "'"; }

// Typed access to config.json fields; every message names the file and field.
class ConfigReader {
 public:
  ConfigReader(std::string path, const Json& root) : path_(std::move(path)), root_(root) {}

  [[noreturn]] void fail(ErrorCode code, const std::string& message) const {
    throw Error(code, path_ + ": " + message);
  }
  [[noreturn]] void fail_field(ErrorCode code, const std::string& field,
                               const std::string& message) const {
    fail(code, "field " + single_quoted(field) + " " + message);
  }

  // A field that is absent or null (HF writes null for unset optional ids).
  const Json* optional_field(const std::string& field) const {
    const auto found = root_.find(field);
    if (found == root_.end() || found->is_null()) return nullptr;
    return &*found;
  }

  int integer(const std::string& field, const Json& value) const {
    if (!value.is_number_integer()) {
      fail_field(ErrorCode::format, field, "is " + value.dump() + ", expected an integer");
    }
    if (value.is_number_unsigned()) {
      const auto number = value.get<std::uint64_t>();
      if (number > static_cast<std::uint64_t>(std::numeric_limits<int>::max())) {
        fail_field(ErrorCode::model, field, "is " + std::to_string(number) + ", which is too large");
      }
      return static_cast<int>(number);
    }
    const auto number = value.get<std::int64_t>();
    if (number < std::numeric_limits<int>::min()) {
      fail_field(ErrorCode::model, field, "is " + std::to_string(number) + ", which is too small");
    }
    return static_cast<int>(number);
  }

  int required_positive_integer(const std::string& field) const {
    const Json* value = optional_field(field);
    if (value == nullptr) fail_field(ErrorCode::format, field, "is missing");
    return positive(field, integer(field, *value));
  }

  int optional_integer(const std::string& field, int fallback) const {
    const Json* value = optional_field(field);
    return value == nullptr ? fallback : integer(field, *value);
  }

  int positive(const std::string& field, int number) const {
    if (number <= 0) fail_field(ErrorCode::model, field, "is " + std::to_string(number) + ", expected > 0");
    return number;
  }

  std::string optional_string(const std::string& field, const std::string& fallback) const {
    const Json* value = optional_field(field);
    if (value == nullptr) return fallback;
    if (!value->is_string()) fail_field(ErrorCode::format, field, "is " + value->dump() + ", expected a string");
    return value->get<std::string>();
  }

  double optional_number(const std::string& field, double fallback) const {
    const Json* value = optional_field(field);
    if (value == nullptr) return fallback;
    if (!value->is_number()) fail_field(ErrorCode::format, field, "is " + value->dump() + ", expected a number");
    return value->get<double>();
  }

  std::vector<std::string> optional_string_array(const std::string& field) const {
    const Json* value = optional_field(field);
    if (value == nullptr) return {};
    if (!value->is_array()) {
      fail_field(ErrorCode::format, field, "is " + value->dump() + ", expected an array of strings");
    }
    std::vector<std::string> result;
    for (const Json& item : *value) {
      if (!item.is_string()) {
        fail_field(ErrorCode::format, field, "holds " + item.dump() + ", expected strings");
      }
      result.push_back(item.get<std::string>());
    }
    return result;
  }

  // id2label: {"0": "NEGATIVE", "1": "POSITIVE"} → {"NEGATIVE", "POSITIVE"}.
  // Keys must be the ids 0..n-1, each once; HF writes them as strings.
  std::vector<std::string> id2label() const {
    const Json* value = optional_field("id2label");
    if (value == nullptr) return {};
    if (!value->is_object()) {
      fail_field(ErrorCode::format, "id2label", "is " + value->dump() + ", expected an object");
    }
    std::map<long long, std::string> label_by_id;
    for (const auto& [key, label] : value->items()) {
      long long id = -1;
      const char* key_end = key.data() + key.size();
      const auto [parsed_end, parse_error] = std::from_chars(key.data(), key_end, id);
      if (key.empty() || parse_error != std::errc() || parsed_end != key_end) {
        fail_field(ErrorCode::format, "id2label", "has key " + single_quoted(key) + ", expected a label id");
      }
      if (!label.is_string()) {
        fail_field(ErrorCode::format, "id2label",
                   "maps " + single_quoted(key) + " to " + label.dump() + ", expected a string");
      }
      if (id < 0) fail_field(ErrorCode::model, "id2label", "has negative id " + single_quoted(key));
      if (!label_by_id.emplace(id, label.get<std::string>()).second) {
        fail_field(ErrorCode::model, "id2label", "has id " + std::to_string(id) + " twice");
      }
    }
    std::vector<std::string> labels;
    labels.reserve(label_by_id.size());
    for (const auto& [id, label] : label_by_id) {
      // Ids are sorted and unique, so the first one not equal to its position
      // shows the gap.
      if (id != static_cast<long long>(labels.size())) {
        fail_field(ErrorCode::model, "id2label",
                   "has no id " + std::to_string(labels.size()) + " (ids must be 0.." +
                       std::to_string(label_by_id.size() - 1) + " without gaps; next id is " +
                       std::to_string(id) + ")");
      }
      labels.push_back(label);
    }
    return labels;
  }

  // label2id is HF's inverse map; skim reads labels from id2label, so this
  // only checks the shape (some published configs disagree with id2label).
  void check_label2id(std::size_t label_count) const {
    const Json* value = optional_field("label2id");
    if (value == nullptr) return;
    if (!value->is_object()) {
      fail_field(ErrorCode::format, "label2id", "is " + value->dump() + ", expected an object");
    }
    for (const auto& [label, id] : value->items()) {
      if (!id.is_number_integer()) {
        fail_field(ErrorCode::format, "label2id",
                   "maps " + single_quoted(label) + " to " + id.dump() + ", expected an integer id");
      }
      if (label_count > 0 &&
          (id.get<long long>() < 0 || id.get<long long>() >= static_cast<long long>(label_count))) {
        fail_field(ErrorCode::model, "label2id",
                   "maps " + single_quoted(label) + " to " + id.dump() + ", outside id2label's 0.." +
                       std::to_string(label_count - 1));
      }
    }
  }

 private:
  std::string path_;
  const Json& root_;
};

Json parse_config_file(const std::filesystem::path& config_json) {
  const MappedFile file(config_json);  // io errors name the path and the reason
  const char* text = reinterpret_cast<const char*>(file.data());
  try {
    return Json::parse(text, text + file.size());
  } catch (const Json::exception& error) {
    throw Error(ErrorCode::format, file.path() + ": not valid JSON: " + error.what());
  }
}

}  // namespace

EncoderConfig read_encoder_config(const std::filesystem::path& config_json) {
  const std::string path = config_json.string();
  const Json root = parse_config_file(config_json);
  if (!root.is_object()) {
    throw Error(ErrorCode::format, path + ": is a JSON " + std::string(root.type_name()) +
                                       ", expected an object");
  }
  const ConfigReader reader(path, root);
  EncoderConfig config;

  // The model family first: a GPT-2 config should be told it is not BERT,
  // not that it lacks BERT's fields.
  config.architectures = reader.optional_string_array("architectures");
  if (reader.optional_field("model_type") != nullptr) {
    config.model_type = reader.optional_string("model_type", "");
  } else if (!config.architectures.empty() && config.architectures.front().starts_with("Bert")) {
    config.model_type = "bert";  // configs from before model_type existed name only the class
  } else {
    reader.fail_field(ErrorCode::format, "model_type", "is missing");
  }
  if (config.model_type != "bert") {
    reader.fail_field(ErrorCode::unsupported, "model_type",
                      "is " + single_quoted(config.model_type) + "; skim supports 'bert'");
  }

  config.vocab_size = reader.required_positive_integer("vocab_size");
  config.hidden_size = reader.required_positive_integer("hidden_size");
  config.num_hidden_layers = reader.required_positive_integer("num_hidden_layers");
  config.num_attention_heads = reader.required_positive_integer("num_attention_heads");
  config.intermediate_size = reader.required_positive_integer("intermediate_size");
  config.max_position_embeddings = reader.required_positive_integer("max_position_embeddings");
  config.type_vocab_size =
      reader.positive("type_vocab_size", reader.optional_integer("type_vocab_size", config.type_vocab_size));
  config.pad_token_id = reader.optional_integer("pad_token_id", config.pad_token_id);
  // Checked as a double: a value beyond float's range must not be narrowed.
  const double layer_norm_eps = reader.optional_number("layer_norm_eps", config.layer_norm_eps);
  if (!(layer_norm_eps > 0.0 && layer_norm_eps < 1.0)) {
    reader.fail_field(ErrorCode::model, "layer_norm_eps",
                      "is " + Json(layer_norm_eps).dump() + ", expected a small positive number");
  }
  config.layer_norm_eps = static_cast<float>(layer_norm_eps);

  if (config.hidden_size % config.num_attention_heads != 0) {
    reader.fail(ErrorCode::model, "hidden_size " + std::to_string(config.hidden_size) +
                                      " is not divisible by num_attention_heads " +
                                      std::to_string(config.num_attention_heads));
  }
  if (config.pad_token_id < 0 || config.pad_token_id >= config.vocab_size) {
    reader.fail_field(ErrorCode::model, "pad_token_id",
                      "is " + std::to_string(config.pad_token_id) + ", outside the vocabulary of " +
                          std::to_string(config.vocab_size));
  }

  // HF's "gelu" is the erf form; the tanh approximation ("gelu_new",
  // "gelu_pytorch_tanh") and others would give different numbers.
  config.hidden_act = reader.optional_string("hidden_act", config.hidden_act);
  if (config.hidden_act != "gelu") {
    reader.fail_field(ErrorCode::unsupported, "hidden_act",
                      "is " + single_quoted(config.hidden_act) + "; skim supports 'gelu' (erf)");
  }
  const std::string position_embedding_type = reader.optional_string("position_embedding_type", "absolute");
  if (position_embedding_type != "absolute") {
    reader.fail_field(ErrorCode::unsupported, "position_embedding_type",
                      "is " + single_quoted(position_embedding_type) + "; skim supports 'absolute'");
  }

  config.id2label = reader.id2label();
  if (const Json* num_labels_field = reader.optional_field("num_labels")) {
    const int num_labels = reader.positive("num_labels", reader.integer("num_labels", *num_labels_field));
    constexpr int max_labels = 1 << 20;  // guards the LABEL_i list below against a corrupt count
    if (num_labels > max_labels) {
      reader.fail_field(ErrorCode::model, "num_labels",
                        "is " + std::to_string(num_labels) + ", more than skim's limit of " +
                            std::to_string(max_labels));
    }
    if (config.id2label.empty()) {
      // HF names labels LABEL_i when only num_labels is given.
      for (int id = 0; id < num_labels; ++id) config.id2label.push_back("LABEL_" + std::to_string(id));
    } else if (static_cast<std::size_t>(num_labels) != config.id2label.size()) {
      reader.fail_field(ErrorCode::model, "num_labels",
                        "is " + std::to_string(num_labels) + " but id2label has " +
                            std::to_string(config.id2label.size()) + " labels");
    }
  }
  reader.check_label2id(config.id2label.size());

  config.pooling = reader.optional_string("skim_pooling", config.pooling);
  if (config.pooling != "cls" && config.pooling != "mean") {
    reader.fail_field(ErrorCode::unsupported, "skim_pooling",
                      "is " + single_quoted(config.pooling) + "; skim supports 'cls' and 'mean'");
  }
  return config;
}

}  // namespace skim::format
