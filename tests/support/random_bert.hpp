#pragma once
// Writes a small random BERT classifier in the Hugging Face layout, for tests
// that need a real model directory without shipping one.
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "format/safetensors_writer.hpp"
#include "skim/data.hpp"
#include "temp_dir.hpp"  // fresh_temp_dir, for callers of write_tiny_bert

namespace skim::testing {

struct TinyBertSpec {
  int hidden = 32, heads = 4, intermediate = 64, layers = 2, positions = 16, labels = 3;
  std::uint32_t seed = 7;
  float stddev = 0.2f;  // of every weight around its base (0, or 1 for LayerNorm scales)
  // Called with (name, shape) before writing; return false to leave a tensor out.
  std::function<bool(const std::string&, std::vector<std::int64_t>&)> edit;
};

inline std::vector<std::string> tiny_vocab() {
  std::vector<std::string> v = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
  for (const char* w : {"turn", "on", "off", "the", "lights", "what", "is", "my", "balance", "play", "music",
                        "set", "an", "alarm", "for", "tomorrow", "please", "how", "are", "you"})
    v.push_back(w);
  for (char c = 'a'; c <= 'z'; ++c) {
    v.push_back(std::string(1, c));
    v.push_back("##" + std::string(1, c));
  }
  for (const char* p : {".", ",", "?", "!", "'"}) v.push_back(p);
  return v;
}

inline std::filesystem::path write_tiny_bert(const std::filesystem::path& dir, const TinyBertSpec& spec = {}) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  const auto vocab = tiny_vocab();
  {
    std::ofstream out(dir / "vocab.txt");
    for (const auto& t : vocab) out << t << "\n";
  }
  {
    std::ofstream out(dir / "config.json");
    out << "{\"model_type\": \"bert\", \"architectures\": [\"BertForSequenceClassification\"],"
        << "\"vocab_size\": " << vocab.size() << ", \"hidden_size\": " << spec.hidden
        << ", \"num_hidden_layers\": " << spec.layers << ", \"num_attention_heads\": " << spec.heads
        << ", \"intermediate_size\": " << spec.intermediate << ", \"max_position_embeddings\": " << spec.positions
        << ", \"type_vocab_size\": 2, \"layer_norm_eps\": 1e-12, \"hidden_act\": \"gelu\", \"id2label\": {";
    for (int i = 0; i < spec.labels; ++i) out << (i ? ", " : "") << "\"" << i << "\": \"label_" << i << "\"";
    out << "}}";
  }
  std::mt19937 rng(spec.seed);
  std::normal_distribution<float> normal(0.f, spec.stddev);
  std::vector<std::vector<float>> storage;
  std::vector<format::TensorToWrite> tensors;
  auto add = [&](const std::string& name, std::vector<std::int64_t> shape, float base) {
    if (spec.edit && !spec.edit(name, shape)) return;
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    auto& data = storage.emplace_back(static_cast<std::size_t>(n));
    for (auto& x : data) x = base + normal(rng);
    tensors.push_back({name, format::DType::f32, shape,
                       std::as_bytes(std::span<const float>(data.data(), data.size()))});
  };
  const std::int64_t H = spec.hidden, I = spec.intermediate, V = static_cast<std::int64_t>(vocab.size());
  add("bert.embeddings.word_embeddings.weight", {V, H}, 0);
  add("bert.embeddings.position_embeddings.weight", {spec.positions, H}, 0);
  add("bert.embeddings.token_type_embeddings.weight", {2, H}, 0);
  add("bert.embeddings.LayerNorm.weight", {H}, 1);
  add("bert.embeddings.LayerNorm.bias", {H}, 0);
  for (int l = 0; l < spec.layers; ++l) {
    const std::string p = "bert.encoder.layer." + std::to_string(l) + ".";
    for (const char* n : {"attention.self.query.", "attention.self.key.", "attention.self.value.",
                          "attention.output.dense."}) {
      add(p + n + "weight", {H, H}, 0);
      add(p + n + "bias", {H}, 0);
    }
    add(p + "attention.output.LayerNorm.weight", {H}, 1);
    add(p + "attention.output.LayerNorm.bias", {H}, 0);
    add(p + "intermediate.dense.weight", {I, H}, 0);
    add(p + "intermediate.dense.bias", {I}, 0);
    add(p + "output.dense.weight", {H, I}, 0);
    add(p + "output.dense.bias", {H}, 0);
    add(p + "output.LayerNorm.weight", {H}, 1);
    add(p + "output.LayerNorm.bias", {H}, 0);
  }
  add("bert.pooler.dense.weight", {H, H}, 0);
  add("bert.pooler.dense.bias", {H}, 0);
  add("classifier.weight", {spec.labels, H}, 0);
  add("classifier.bias", {spec.labels}, 0);
  format::write_safetensors(dir / "model.safetensors", tensors);
  return dir;
}

// Labelled texts of the tiny vocabulary, enough tokens to fit MoD routers or
// ACM gates on 32 dimensions.
inline std::vector<skim::LabelledText> tiny_texts(int n) {
  const char* words[] = {"turn", "on", "off", "the", "lights", "what", "is", "my", "balance", "play",
                         "music", "set", "an", "alarm", "for", "tomorrow", "please", "how", "are", "you"};
  std::vector<skim::LabelledText> rows;
  for (int i = 0; i < n; ++i) {
    std::string text;
    for (int w = 0; w < 4 + i % 9; ++w) text += std::string(w ? " " : "") + words[(i * 7 + w * 3) % 20];
    rows.push_back({text, "label_" + std::to_string(i % 3)});
  }
  return rows;
}

}  // namespace skim::testing
