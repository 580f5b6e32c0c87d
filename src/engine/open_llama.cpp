// Opening a LLaMA-family decoder from any of the three formats people hold:
// a GGUF file, a llama2.c checkpoint + tokenizer, or a Hugging Face directory.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "engine/engine_impl.hpp"
#include "engine/router.hpp"
#include "format/gguf.hpp"
#include "format/llama2c.hpp"
#include "format/safetensors.hpp"
#include "skim/error.hpp"

namespace skim {

namespace fs = std::filesystem;
using execute::DecoderConfig;
using text::SentencePieceBpe;

namespace {

bool is_gguf(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  return in.gcount() == 4 && std::string_view(magic, 4) == "GGUF";
}

// --- GGUF ------------------------------------------------------------------

DecoderConfig gguf_config(const format::GgufFile& f) {
  const std::string arch = f.get_string("general.architecture");
  if (arch != "llama")
    throw Error(ErrorCode::unsupported, f.path() + ": general.architecture '" + arch + "' is not supported (only llama)");
  DecoderConfig c;
  c.dim = static_cast<int>(f.get_u32("llama.embedding_length"));
  c.hidden_dim = static_cast<int>(f.get_u32("llama.feed_forward_length"));
  c.layers = static_cast<int>(f.get_u32("llama.block_count"));
  c.heads = static_cast<int>(f.get_u32("llama.attention.head_count"));
  c.kv_heads = static_cast<int>(f.find_u32("llama.attention.head_count_kv").value_or(c.heads));
  c.context = static_cast<int>(f.get_u32("llama.context_length"));
  c.norm_eps = f.find_f32("llama.attention.layer_norm_rms_epsilon").value_or(1e-5f);
  c.rope_theta = f.find_f32("llama.rope.freq_base").value_or(10000.f);
  // GGUF's llama converters permute Q/K rows so adjacent pairs rotate.
  c.rope_style = kernels::RopeStyle::adjacent_pairs;
  if (c.heads <= 0 || c.dim % c.heads != 0)
    throw Error(ErrorCode::model, f.path() + ": llama.attention.head_count " + std::to_string(c.heads) +
                                      " does not divide llama.embedding_length " + std::to_string(c.dim));
  if (auto rot = f.find_u32("llama.rope.dimension_count"); rot && static_cast<int>(*rot) != c.dim / c.heads)
    throw Error(ErrorCode::unsupported, f.path() + ": llama.rope.dimension_count " + std::to_string(*rot) +
                                            " (partial rotary embedding) is not supported");
  const auto* embd = f.find("token_embd.weight");
  if (!embd || embd->shape.size() != 2) throw Error(ErrorCode::model, f.path() + ": tensor 'token_embd.weight' not found");
  c.vocab = static_cast<int>(embd->shape[0]);
  return c;
}

SentencePieceBpe gguf_tokenizer(const format::GgufFile& f, int vocab) {
  const std::string model = f.get_string("tokenizer.ggml.model");
  if (model != "llama")
    throw Error(ErrorCode::unsupported, f.path() + ": tokenizer.ggml.model '" + model +
                                            "' is not supported (only llama, SentencePiece BPE)");
  SentencePieceBpe::Vocab v;
  auto tokens = f.get_string_array("tokenizer.ggml.tokens");
  v.pieces.assign(tokens.begin(), tokens.end());
  auto scores = f.get_f32_array("tokenizer.ggml.scores");
  v.scores.assign(scores.begin(), scores.end());
  if (auto types = f.find_i32_array("tokenizer.ggml.token_type")) v.types = std::move(*types);
  v.bos = static_cast<std::int32_t>(f.find_u32("tokenizer.ggml.bos_token_id").value_or(1));
  v.eos = static_cast<std::int32_t>(f.find_u32("tokenizer.ggml.eos_token_id").value_or(2));
  v.unk = static_cast<std::int32_t>(f.find_u32("tokenizer.ggml.unknown_token_id").value_or(0));
  if (static_cast<int>(v.pieces.size()) != vocab)
    throw Error(ErrorCode::model, f.path() + ": tokenizer.ggml.tokens has " + std::to_string(v.pieces.size()) +
                                      " entries but token_embd.weight has " + std::to_string(vocab) + " rows");
  return SentencePieceBpe::from_vocab(std::move(v));
}

// --- llama2.c ----------------------------------------------------------------

fs::path llama2c_tokenizer_path(const fs::path& model, const Options& options, int vocab) {
  if (!options.tokenizer().empty()) return options.tokenizer();
  // llama2.c names its tokenizers tokenizer.bin (32000) or tok<N>.bin.
  for (const auto& name : {"tok" + std::to_string(vocab) + ".bin", std::string("tokenizer.bin")})
    if (fs::exists(model.parent_path() / name)) return model.parent_path() / name;
  throw Error(ErrorCode::invalid_argument, model.string() +
                                               ": a llama2.c checkpoint needs its tokenizer file (Options::tokenizer, "
                                               "--tokenizer); none found beside it");
}

// --- Hugging Face --------------------------------------------------------------

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw Error(ErrorCode::io, path.string() + ": cannot open");
  auto j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw Error(ErrorCode::format, path.string() + ": not a valid JSON object");
  return j;
}

int json_int(const nlohmann::json& j, const char* key, const fs::path& file, std::optional<int> fallback = {}) {
  if (!j.contains(key) || j[key].is_null()) {
    if (fallback) return *fallback;
    throw Error(ErrorCode::format, file.string() + ": field '" + key + "' is missing");
  }
  if (!j[key].is_number_integer()) throw Error(ErrorCode::format, file.string() + ": field '" + key + "' is not an integer");
  return j[key].get<int>();
}

DecoderConfig hf_config(const fs::path& dir) {
  const fs::path file = dir / "config.json";
  auto j = read_json(file);
  DecoderConfig c;
  c.dim = json_int(j, "hidden_size", file);
  c.hidden_dim = json_int(j, "intermediate_size", file);
  c.layers = json_int(j, "num_hidden_layers", file);
  c.heads = json_int(j, "num_attention_heads", file);
  c.kv_heads = json_int(j, "num_key_value_heads", file, c.heads);
  c.vocab = json_int(j, "vocab_size", file);
  c.context = json_int(j, "max_position_embeddings", file);
  if (j.contains("rms_norm_eps") && j["rms_norm_eps"].is_number()) c.norm_eps = j["rms_norm_eps"].get<float>();
  if (j.contains("rope_theta") && j["rope_theta"].is_number()) c.rope_theta = j["rope_theta"].get<float>();
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
    throw Error(ErrorCode::unsupported, file.string() + ": field 'rope_scaling' is not supported");
  if (j.contains("hidden_act") && j["hidden_act"] != "silu")
    throw Error(ErrorCode::unsupported, file.string() + ": hidden_act '" + j["hidden_act"].dump() + "' is not supported (only silu)");
  c.rope_style = kernels::RopeStyle::halves;  // Hugging Face LLaMA rotates the two halves of a head
  return c;
}

// tokenizer.json with a BPE model and byte fallback, as Hugging Face saves
// LLaMA's SentencePiece tokenizer. Merge ranks become scores (earlier merge,
// higher score), which is how the merges were derived from scores.
SentencePieceBpe hf_tokenizer(const fs::path& dir, int vocab) {
  const fs::path file = dir / "tokenizer.json";
  if (!fs::exists(file)) throw Error(ErrorCode::model, dir.string() + ": no tokenizer.json");
  auto j = read_json(file);
  const auto& model = j["model"];
  if (!model.is_object() || model.value("type", "") != "BPE")
    throw Error(ErrorCode::unsupported, file.string() + ": model.type must be BPE (SentencePiece-style)");
  if (!model.value("byte_fallback", false))
    throw Error(ErrorCode::unsupported, file.string() + ": model.byte_fallback must be true (byte-level BPE is not supported)");
  SentencePieceBpe::Vocab v;
  v.pieces.resize(vocab);
  std::vector<bool> seen(vocab, false);
  for (const auto& [piece, id_json] : model.at("vocab").items()) {
    const int id = id_json.get<int>();
    if (id < 0 || id >= vocab)
      throw Error(ErrorCode::model, file.string() + ": token '" + piece + "' has id " + std::to_string(id) +
                                        " outside vocab_size " + std::to_string(vocab));
    v.pieces[id] = piece;
    seen[id] = true;
  }
  for (const auto& added : j.value("added_tokens", nlohmann::json::array())) {
    const int id = added.value("id", -1);
    if (id >= 0 && id < vocab) {
      v.pieces[id] = added.value("content", "");
      seen[id] = true;
    }
  }
  if (auto gap = std::find(seen.begin(), seen.end(), false); gap != seen.end())
    throw Error(ErrorCode::model, file.string() + ": no token has id " + std::to_string(gap - seen.begin()));
  // A piece no merge produces can never be formed by Hugging Face's BPE: last in line.
  constexpr float unreachable = -1e30f;
  v.scores.assign(vocab, unreachable);
  std::unordered_map<std::string, int> id_of;
  for (int i = 0; i < vocab; ++i) id_of.emplace(v.pieces[i], i);
  const auto& merges = model.at("merges");
  for (std::size_t rank = 0; rank < merges.size(); ++rank) {
    std::string merged;
    if (merges[rank].is_string()) {
      const std::string m = merges[rank];
      const auto space = m.find(' ');
      merged = m.substr(0, space) + m.substr(space + 1);
    } else {
      merged = merges[rank][0].get<std::string>() + merges[rank][1].get<std::string>();
    }
    auto it = id_of.find(merged);
    if (it == id_of.end()) throw Error(ErrorCode::model, file.string() + ": merge " + std::to_string(rank) + " makes '" + merged + "', which is not in the vocabulary");
    if (v.scores[it->second] == unreachable) v.scores[it->second] = -static_cast<float>(rank) - 1.f;
  }
  auto id_or = [&](const std::string& piece, int fallback) {
    auto it = id_of.find(piece);
    return it == id_of.end() ? fallback : it->second;
  };
  v.unk = id_or(model.value("unk_token", "<unk>"), 0);
  v.bos = id_or("<s>", 1);
  v.eos = id_or("</s>", 2);
  return SentencePieceBpe::from_vocab(std::move(v));
}

// config.json's "mixture_of_depths": the model was trained with native
// Mixture-of-Depths (README.md, "Native Mixture-of-Depths checkpoints"). Its
// routed layers, the capacity they were trained at, the thresholds of the
// causal rule r > τ, and per routed layer N the router
// model.layers.N.mod_router.weight ([1, hidden] or [hidden]) and optional
// .bias ([1] or scalar).
std::optional<execute::mod::Routing> hf_mod_routing(const fs::path& dir, const DecoderConfig& c,
                                                    const format::TensorSource& weights) {
  const fs::path file = dir / "config.json";
  const auto j = read_json(file);
  if (!j.contains("mixture_of_depths") || j["mixture_of_depths"].is_null()) return std::nullopt;
  const auto& m = j["mixture_of_depths"];
  const std::string where = file.string() + ": mixture_of_depths";
  auto fail = [&](ErrorCode code, const std::string& what) { throw Error(code, where + what); };
  if (!m.is_object()) fail(ErrorCode::format, " is not an object");
  if (!m.contains("semantics") || !m["semantics"].is_string())
    fail(ErrorCode::format, ".semantics is missing (expected \"native\")");
  if (m["semantics"] != "native")
    fail(ErrorCode::unsupported, ".semantics " + m["semantics"].dump() +
                                     " is not supported (only \"native\"; post-hoc routers come from skim-calibrate)");
  auto require_string = [&](const char* key, const char* value) {
    if (m.contains(key) && m[key] != value)
      fail(ErrorCode::unsupported, std::string(".") + key + " " + m[key].dump() + " is not supported (only \"" + value + "\")");
  };
  require_string("router_input", "layernorm_no_affine");
  require_string("output_scale", "router_score");
  if (m.contains("router_norm_eps") &&
      (!m["router_norm_eps"].is_number() || std::abs(m["router_norm_eps"].get<double>() - 1e-6) > 1e-12))
    fail(ErrorCode::unsupported, ".router_norm_eps " + m["router_norm_eps"].dump() + " is not supported (only 1e-06)");

  const auto& layers = m.contains("layers") ? m["layers"] : nlohmann::json();
  if (!layers.is_array() || layers.empty())
    fail(ErrorCode::format, ".layers must be a non-empty array of layer indices");
  if (!m.contains("capacity") || !m["capacity"].is_number())
    fail(ErrorCode::format, ".capacity is missing or not a number");
  const double capacity = m["capacity"].get<double>();
  if (!(capacity > 0 && capacity <= 1))
    fail(ErrorCode::model, ".capacity " + m["capacity"].dump() + " is outside (0, 1]");
  const auto& thresholds = m.contains("thresholds") ? m["thresholds"] : nlohmann::json();
  if (!thresholds.is_array() || thresholds.size() != layers.size())
    fail(ErrorCode::format, ".thresholds must be an array with one number per routed layer (" +
                                std::to_string(layers.size()) + ")");

  execute::mod::Routing routing;
  routing.semantics = execute::mod::Semantics::native;
  const std::int64_t D = c.dim;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    if (!layers[i].is_number_integer()) fail(ErrorCode::format, ".layers[" + std::to_string(i) + "] is not an integer");
    const int layer = layers[i].get<int>();
    if (layer < 0 || layer >= c.layers)
      fail(ErrorCode::model, ".layers[" + std::to_string(i) + "] = " + std::to_string(layer) +
                                 " is outside the model's layers 0.." + std::to_string(c.layers - 1));
    if (i > 0 && layer <= routing.blocks.back().layer)
      fail(ErrorCode::model, ".layers must ascend without repeats (" + std::to_string(layer) + " after " +
                                 std::to_string(routing.blocks.back().layer) + ")");
    if (!thresholds[i].is_number()) fail(ErrorCode::format, ".thresholds[" + std::to_string(i) + "] is not a number");
    execute::mod::BlockRouter b;
    b.layer = layer;
    b.capacity = capacity;
    b.threshold = thresholds[i].get<float>();
    const std::string name = "model.layers." + std::to_string(layer) + ".mod_router.";
    const auto* w = weights.find(name + "weight");
    if (!w)
      throw Error(ErrorCode::model, weights.source() + ": tensor '" + name + "weight' not found (the router of " +
                                        "routed layer " + std::to_string(layer) + " in " + where + ")");
    if (w->shape != std::vector<std::int64_t>{1, D} && w->shape != std::vector<std::int64_t>{D})
      throw Error(ErrorCode::model, w->file + ": tensor '" + name + "weight' has shape " + w->shape_string() +
                                        " but [1, " + std::to_string(D) + "] (hidden_size " + std::to_string(D) +
                                        ") was expected");
    b.weight = format::to_f32(*w);
    if (const auto* bias = weights.find(name + "bias")) {
      if (bias->shape != std::vector<std::int64_t>{1} && !bias->shape.empty())
        throw Error(ErrorCode::model, bias->file + ": tensor '" + name + "bias' has shape " + bias->shape_string() +
                                          " but [1] was expected");
      b.bias = format::to_f32(*bias).at(0);
    }
    routing.blocks.push_back(std::move(b));
  }
  return routing;
}

void fill_info(Engine::Impl& impl, const std::string& type) {
  const auto& c = impl.llama_config;
  auto& info = impl.info;
  info.model_type = type;
  info.is_decoder = true;
  info.vocab_size = c.vocab;
  info.hidden_size = c.dim;
  info.layers = c.layers;
  info.heads = c.heads;
  info.intermediate_size = c.hidden_dim;
  info.max_sequence_length = c.context;
}

// The package skim-calibrate --text wrote for this model, if any: post-hoc
// Mixture-of-Depths routers and ACM gates. A native checkpoint routes with
// its own routers; a package's routers would contradict them.
void load_decoder_package(Engine::Impl& impl, const fs::path& path, const DecoderWeights& weights) {
  const bool use_mod = impl.options.mod(), use_acm = impl.options.acm();
  const PackageFiles files = package_files(path);
  if (!(use_mod || use_acm) || !fs::exists(files.json)) return;
  const auto& c = impl.llama_config;
  RouterPackage package = read_package(
      files, {{}, model_content_hash(path), c.layers, c.dim, c.hidden_dim, execute::acm::Activation::swiglu});
  if (package.proposer)
    throw Error(ErrorCode::model, files.json.string() + ": a meaning-first router needs a classifier; this model is a decoder");
  if (package.mod && impl.decoder_routing)
    throw Error(ErrorCode::model, files.json.string() + ": post-hoc routers for a native Mixture-of-Depths checkpoint");
  if (use_mod && package.mod) {
    if (impl.options.mod_capacity() > 0)
      throw Error(ErrorCode::unsupported, files.json.string() + ": Options::mod_capacity does not apply to a decoder's "
                                          "routers (their causal thresholds are fitted for the package's capacities)");
    impl.decoder_routing = std::move(*package.mod);
    for (const auto& b : impl.decoder_routing->blocks) impl.info.mod_blocks.push_back({b.layer, b.capacity});
  }
  if (use_acm && package.acm) {
    impl.acm = execute::acm::build_width_gating(
        *package.acm,
        [&](int layer) { return execute::LlamaDecoder::ffn_weights(*weights.source, c, weights.naming, layer); },
        execute::acm::Activation::swiglu, c.dim, c.hidden_dim, impl.backend, packed_precision(impl.options));
    for (const auto& l : impl.acm->layers) impl.info.acm_layers.push_back(l.layer());
    impl.info.acm_learners = impl.acm->max_learners();
    impl.info.acm_budget = impl.options.acm_budget() > 0 ? impl.options.acm_budget() : impl.acm->budget;
  }
}

}  // namespace

DecoderWeights open_decoder_weights(const fs::path& path) {
  if (fs::is_directory(path))
    return {std::make_unique<format::TensorStore>(format::TensorStore::open_directory(path)),
            execute::DecoderNaming::hugging_face};
  if (is_gguf(path)) return {std::make_unique<format::GgufFile>(path), execute::DecoderNaming::gguf};
  return {std::make_unique<format::Llama2cCheckpoint>(path), execute::DecoderNaming::gguf};
}

void open_llama(Engine::Impl& impl, const fs::path& path) {
  const WeightPrecision requested = impl.options.weight_precision();
  const execute::WeightPacking precision{packed_precision(impl.options),
                                         requested == WeightPrecision::automatic || requested == WeightPrecision::q8_0};
  const DecoderWeights weights = open_decoder_weights(path);
  if (fs::is_directory(path)) {
    impl.llama_config = hf_config(path);
    impl.sentencepiece = std::make_unique<SentencePieceBpe>(hf_tokenizer(path, impl.llama_config.vocab));
    impl.decoder_routing = hf_mod_routing(path, impl.llama_config, *weights.source);
  } else if (const auto* gguf = dynamic_cast<const format::GgufFile*>(weights.source.get())) {
    impl.llama_config = gguf_config(*gguf);
    impl.sentencepiece = std::make_unique<SentencePieceBpe>(gguf_tokenizer(*gguf, impl.llama_config.vocab));
  } else {
    const auto& h = dynamic_cast<const format::Llama2cCheckpoint&>(*weights.source).header();
    DecoderConfig c;
    c.dim = h.dim, c.hidden_dim = h.hidden_dim, c.layers = h.n_layers, c.heads = h.n_heads, c.kv_heads = h.n_kv_heads;
    c.vocab = h.vocab_size, c.context = h.seq_len;
    c.rope_style = kernels::RopeStyle::adjacent_pairs;  // llama2.c rotates adjacent pairs
    impl.llama_config = c;
    impl.sentencepiece = std::make_unique<SentencePieceBpe>(
        SentencePieceBpe::from_llama2c(llama2c_tokenizer_path(path, impl.options, c.vocab), c.vocab));
  }
  impl.decoder = std::make_unique<execute::LlamaDecoder>(impl.llama_config, *weights.source, weights.naming,
                                                         impl.backend, precision);
  if (impl.sentencepiece->vocab_size() != static_cast<std::size_t>(impl.llama_config.vocab))
    throw Error(ErrorCode::model, path.string() + ": the tokenizer has " + std::to_string(impl.sentencepiece->vocab_size()) +
                                      " tokens, the model " + std::to_string(impl.llama_config.vocab));
  const std::size_t chunk = impl.options.max_batch_tokens() == 0 ? 512 : impl.options.max_batch_tokens();
  impl.max_batch_rows = static_cast<int>(std::min<std::size_t>(chunk, impl.llama_config.context));
  fill_info(impl, "llama");
  if (impl.decoder_routing) {
    // A native checkpoint runs with its own routers and thresholds: the
    // knobs for fitted (post-hoc) routers do not apply to it.
    if (impl.options.mod_capacity() > 0)
      throw Error(ErrorCode::unsupported, path.string() + ": Options::mod_capacity does not apply to a native "
                                                          "Mixture-of-Depths checkpoint (its thresholds are trained)");
    if (impl.options.mod_router() != ModRouter::learned)
      throw Error(ErrorCode::unsupported, path.string() + ": a native Mixture-of-Depths checkpoint routes with its "
                                                          "learned routers only (Options::mod_router)");
    if (impl.options.mod()) {
      for (const auto& b : impl.decoder_routing->blocks) impl.info.mod_blocks.push_back({b.layer, b.capacity});
    } else {
      // Every token runs every block, still scaled by its router score.
      for (auto& b : impl.decoder_routing->blocks) b.threshold = -std::numeric_limits<float>::infinity();
    }
  }
  load_decoder_package(impl, path, weights);
}

}  // namespace skim
