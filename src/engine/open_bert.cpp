// Opening a BERT-family encoder from a Hugging Face directory.
#include <spdlog/spdlog.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/engine_impl.hpp"
#include "engine/router.hpp"
#include "format/safetensors.hpp"
#include "skim/error.hpp"

namespace skim {

namespace fs = std::filesystem;

namespace {

std::unique_ptr<text::WordPieceTokenizer> open_wordpiece(const fs::path& dir) {
  if (fs::exists(dir / "tokenizer.json"))
    return std::make_unique<text::WordPieceTokenizer>(text::WordPieceTokenizer::from_tokenizer_json(dir / "tokenizer.json"));
  if (!fs::exists(dir / "vocab.txt"))
    throw Error(ErrorCode::model, dir.string() + ": no vocabulary (neither tokenizer.json nor vocab.txt)");
  // vocab.txt carries no normalizer settings; transformers keeps them in
  // tokenizer_config.json (do_lower_case defaults to true).
  text::BertNormalizerOptions options;
  const fs::path tc = dir / "tokenizer_config.json";
  if (fs::exists(tc)) {
    std::ifstream in(tc);
    auto j = nlohmann::json::parse(in, nullptr, false);
    if (j.is_discarded() || !j.is_object()) throw Error(ErrorCode::format, tc.string() + ": not a JSON object");
    if (j.contains("do_lower_case") && j["do_lower_case"].is_boolean()) options.lowercase = j["do_lower_case"];
    if (j.contains("strip_accents") && j["strip_accents"].is_boolean()) options.strip_accents = j["strip_accents"] ? 1 : 0;
    if (j.contains("tokenize_chinese_chars") && j["tokenize_chinese_chars"].is_boolean())
      options.handle_chinese_chars = j["tokenize_chinese_chars"];
  }
  return std::make_unique<text::WordPieceTokenizer>(text::WordPieceTokenizer::from_vocab_txt(dir / "vocab.txt", options));
}

}  // namespace

void open_bert(Engine::Impl& impl, const fs::path& dir) {
  impl.bert_config = format::read_encoder_config(dir / "config.json");
  const auto& c = impl.bert_config;
  impl.wordpiece = open_wordpiece(dir);
  if (impl.wordpiece->vocab_size() > static_cast<std::size_t>(c.vocab_size))
    throw Error(ErrorCode::model, dir.string() + ": the vocabulary has " + std::to_string(impl.wordpiece->vocab_size()) +
                                      " tokens but config.json vocab_size is " + std::to_string(c.vocab_size));
  {
    auto store = format::TensorStore::open_directory(dir);
    impl.encoder = std::make_unique<execute::BertEncoder>(c, store, impl.backend, packed_precision(impl.options));
  }  // weights are packed; the mapped files can go

  const std::size_t model_limit = static_cast<std::size_t>(c.max_position_embeddings);
  std::size_t limit = impl.options.max_sequence_length() == 0 ? model_limit : impl.options.max_sequence_length();
  if (limit > model_limit) {
    spdlog::warn("max_sequence_length {} exceeds the model's {} positions; using {}", limit, model_limit, model_limit);
    limit = model_limit;
  }
  impl.max_sequence = static_cast<int>(limit);
  const std::size_t batch_tokens = impl.options.max_batch_tokens() == 0 ? 2048 : impl.options.max_batch_tokens();
  impl.max_batch_rows = static_cast<int>(std::max(batch_tokens, limit));

  auto& info = impl.info;
  info.model_type = c.model_type;
  info.vocab_size = c.vocab_size;
  info.hidden_size = c.hidden_size;
  info.layers = c.num_hidden_layers;
  info.heads = c.num_attention_heads;
  info.intermediate_size = c.intermediate_size;
  info.max_sequence_length = limit;
  info.labels = c.id2label;
  info.pooling = c.pooling;

  const bool use_router = impl.options.router(), use_mod = impl.options.mod(), use_acm = impl.options.acm();
  const PackageFiles files = package_files(dir);
  if ((use_router || use_mod || use_acm) && fs::exists(files.json)) {
    RouterPackage package = read_package(
        files, {c.id2label, model_content_hash(dir), c.num_hidden_layers, c.hidden_size, c.intermediate_size});
    if (use_mod && package.mod) {
      impl.mod_routing = std::move(*package.mod);
      for (const auto& b : impl.mod_routing->blocks)
        info.mod_blocks.push_back({b.layer, impl.options.mod_capacity() > 0 ? impl.options.mod_capacity() : b.capacity});
      spdlog::debug("skim: {} MoD-routed blocks from {}", impl.mod_routing->blocks.size(), files.json.string());
    }
    if (use_acm && package.acm) {
      const auto store = format::TensorStore::open_directory(dir);
      impl.acm = execute::acm::build_width_gating(
          *package.acm, [&](int layer) { return execute::BertEncoder::ffn_weights(store, c, layer); },
          execute::acm::Activation::gelu, c.hidden_size, c.intermediate_size, impl.backend,
          packed_precision(impl.options));
      for (const auto& l : impl.acm->layers) info.acm_layers.push_back(l.layer());
      info.acm_learners = impl.acm->max_learners();
      info.acm_budget = impl.options.acm_budget() > 0 ? impl.options.acm_budget() : impl.acm->budget;
      spdlog::debug("skim: {} adaptive FFNs from {}", impl.acm->layers.size(), files.json.string());
    }
    if (use_router && package.proposer) {
      if (c.id2label.empty())
        throw Error(ErrorCode::model, files.json.string() + ": a router needs a classifier (config has no id2label)");
      impl.router = std::make_unique<Router>(std::move(package), impl.options);
      spdlog::debug("skim: router from {} ({})", files.json.string(),
                    impl.router->stats().certificate.certified ? "certified" : "uncertified");
    }
  }
}

}  // namespace skim
