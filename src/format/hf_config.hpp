#pragma once
#include <filesystem>
#include <string>
#include <vector>

namespace skim::format {

// A BERT-family encoder as Hugging Face's config.json describes it.
struct EncoderConfig {
  std::string model_type;  // "bert"
  std::vector<std::string> architectures;
  int vocab_size = 0;
  int hidden_size = 0;
  int num_hidden_layers = 0;
  int num_attention_heads = 0;
  int intermediate_size = 0;
  int max_position_embeddings = 0;
  int type_vocab_size = 2;
  float layer_norm_eps = 1e-12f;
  std::string hidden_act = "gelu";  // only "gelu" (erf) is accepted today
  int pad_token_id = 0;
  std::vector<std::string> id2label;  // index = label id; empty for BertModel
  std::string pooling = "cls";        // "cls" or "mean" (skim_pooling field)
  bool has_pooler = true;             // BertModel pooler dense + tanh present
};

// Reads and validates config.json. Throws skim::Error naming the file and the
// field (format: bad JSON or wrong JSON type; unsupported: model_type other
// than bert, hidden_act other than gelu; model: inconsistent sizes, e.g.
// hidden_size not divisible by num_attention_heads, id2label with gaps).
EncoderConfig read_encoder_config(const std::filesystem::path& config_json);

}  // namespace skim::format
