#pragma once
// The inside of Engine and Session, shared by the encoder (classify/embed)
// and decoder (generate/score) paths.
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "execute/bert_encoder.hpp"
#include "execute/llama_decoder.hpp"
#include "format/hf_config.hpp"
#include "kernels/backend.hpp"
#include "kernels/matmul.hpp"
#include "skim/engine.hpp"
#include "text/sentencepiece_bpe.hpp"
#include "text/wordpiece.hpp"

namespace skim {

class Router;

// Per-session state: workspaces sized once, reusable buffers, and for a
// decoder the conversation (KV cache and the last token not yet fed).
struct SessionState {
  std::unique_ptr<execute::EncoderWorkspace> encoder_workspace;
  execute::TokenBatch batch;
  std::vector<text::Encoding> encodings;

  std::unique_ptr<execute::DecoderWorkspace> decoder_workspace;
  std::optional<execute::KvCache> cache;
  std::int32_t pending_token = -1;  // emitted by generate() but not yet in the cache
  std::vector<std::int32_t> ids;
  std::vector<float> logits;
};

struct Engine::Impl {
  Options options;
  ModelInfo info;
  kernels::Backend backend;  // outlives the models below, which point into it

  // Encoders (model_type bert).
  format::EncoderConfig bert_config;
  std::unique_ptr<text::WordPieceTokenizer> wordpiece;
  std::unique_ptr<execute::BertEncoder> encoder;

  // Decoders (llama family).
  execute::DecoderConfig llama_config;
  std::unique_ptr<text::SentencePieceBpe> sentencepiece;
  std::unique_ptr<execute::LlamaDecoder> decoder;
  // A native Mixture-of-Depths checkpoint's routing (config.json
  // mixture_of_depths): generate() and score() always run with it, since such
  // a model is only correct with its routing. Options::mod(false) keeps it
  // with every threshold at −∞: every token runs every block, still scaled
  // by its router score. Or post-hoc routers from the model's package
  // (skim-calibrate --text), unless Options::mod is off. Empty otherwise.
  std::optional<execute::mod::Routing> decoder_routing;

  // The meaning-first router, when the model directory holds skim.json
  // (and Options::router is on). Internally synchronised.
  std::unique_ptr<Router> router;
  // Mixture-of-Depths routers, when the package has them (and Options::mod is on).
  std::optional<execute::mod::Routing> mod_routing;
  // Adaptive FFNs (ACM), when the package has gates (and Options::acm is on).
  std::optional<execute::acm::WidthGating> acm;
  // Its rules as Options ask (gate, budget), made once at open.
  std::optional<execute::acm::WidthRouting> acm_routing;

  int max_sequence = 0;    // encoder: tokens per text, specials included
  int max_batch_rows = 0;  // tokens per forward pass (encoder batch, decoder prefill chunk)

  // Sessions lent to Engine::classify/embed/generate callers; grows to the
  // number of threads calling at once.
  mutable std::mutex pool_mutex;
  mutable std::vector<std::unique_ptr<SessionState>> pool;

  std::unique_ptr<SessionState> make_state() const;
  ~Impl();
};

// How the model's float GEMM weights are packed, from the user's Options.
inline kernels::WeightPrecision packed_precision(const Options& options) {
  switch (options.weight_precision()) {
    case WeightPrecision::bf16: return kernels::WeightPrecision::bf16;
    case WeightPrecision::q8_0: return kernels::WeightPrecision::q8_0;
    case WeightPrecision::automatic:
    case WeightPrecision::f32: break;
  }
  return kernels::WeightPrecision::f32;
}

// The token scorer Options::mod_router asks for.
inline execute::mod::Scorer mod_scorer(const Options& options) {
  switch (options.mod_router()) {
    case ModRouter::oracle: return execute::mod::Scorer::oracle;
    case ModRouter::random: return execute::mod::Scorer::random;
    case ModRouter::learned: break;
  }
  return execute::mod::Scorer::learned;
}

// Opening (engine/open_*.cpp).
void open_bert(Engine::Impl& impl, const std::filesystem::path& dir);
void open_llama(Engine::Impl& impl, const std::filesystem::path& path);  // .gguf, .bin or HF dir
// A decoder's weights as the loader reads them, and the names they go by.
struct DecoderWeights {
  std::unique_ptr<format::TensorSource> source;
  execute::DecoderNaming naming = execute::DecoderNaming::gguf;
};
DecoderWeights open_decoder_weights(const std::filesystem::path& path);

// The work (engine/classify.cpp, engine/generate.cpp).
// Through the router when there is one, else straight to the transformer.
std::vector<Answer> classify_with(const Engine::Impl& engine, SessionState& state,
                                  std::span<const std::string_view> texts, const Request& request);
// The transformer alone.
std::vector<Answer> transformer_classify(const Engine::Impl& engine, SessionState& state,
                                         std::span<const std::string_view> texts);
Embedding embed_with(const Engine::Impl& engine, SessionState& state, std::string_view text);
Generation generate_with(const Engine::Impl& engine, SessionState& state, std::string_view prompt,
                         const GenerateOptions& options, const TokenCallback& on_token);
RouterStats router_stats(const Engine::Impl& engine);
Score score_with(const Engine::Impl& engine, SessionState& state, std::string_view text);
void reset_conversation(SessionState& state);

}  // namespace skim
