#include "calibrate/acm_target.hpp"

#include <optional>

#include "execute/bert_encoder.hpp"
#include "execute/llama_decoder.hpp"
#include "skim/error.hpp"

namespace skim::calibration {

namespace {

using execute::acm::WidthGating;
using execute::acm::WidthRouting;

constexpr int kHeldOutEvery = 5;  // every fifth text is held out

class EncoderTarget final : public AcmTarget {
 public:
  EncoderTarget(const Engine::Impl& engine, const format::TensorSource& weights, std::span<const std::string> texts,
                const execute::mod::Routing* mod, std::size_t sample_tokens)
      : engine_(engine), weights_(weights), packed_(pack(engine, texts)) {
    const auto& c = engine.encoder->config();
    activation = execute::acm::Activation::gelu;
    layers = c.num_hidden_layers, hidden = c.hidden_size, ffn = c.intermediate_size;
    tokens = packed_.tokens;
    classifier = engine.encoder->has_classifier();
    check_on = "every calibration text";
    route(mod);
    const auto sample = spread_sample(texts, packed_, sample_tokens);
    sample_texts = sample.size();
    sample_ = pack(engine, sample);
  }

  execute::acm::FfnWeights ffn_weights(int layer) const override {
    return execute::BertEncoder::ffn_weights(weights_, engine_.encoder->config(), layer);
  }

  void record(const std::vector<int>& wanted, const Probe& probe) override {
    const auto& encoder = *engine_.encoder;
    std::vector<char> recorded(layers, 0), held_out;
    for (int l : wanted) recorded[l] = 1;
    auto ws = encoder_workspace(engine_);
    std::size_t text = 0;
    for (const auto& batch : packed_.batches) {
      std::vector<char> held_out_row(batch.rows());
      for (int s = 0; s < batch.sequences(); ++s)
        std::fill(held_out_row.begin() + batch.offsets[s], held_out_row.begin() + batch.offsets[s + 1],
                  (text + s) % kHeldOutEvery == kHeldOutEvery - 1);
      encoder.embed(batch, ws);
      for (int l = 0; l < layers; ++l) {
        execute::RowSelection selection = execute::RowSelection::every_row();
        if (routing_) selection = routing_->select(l, ws.hidden(), hidden, batch, ws.routing_scratch());
        auto seen = [&](int layer, const float* x, const float* a, int rows) {
          held_out.resize(rows);
          for (int r = 0; r < rows; ++r) held_out[r] = held_out_row[selection.all ? r : selection.rows[r]];
          probe(layer, x, a, rows, held_out.data());
        };
        encoder.layer_forward(l, batch, ws, selection, nullptr, recorded[l] ? execute::FfnProbe(seen) : execute::FfnProbe{});
      }
      text += batch.sequences();
    }
  }

  void route(const execute::mod::Routing* mod) override {
    routing_.reset();
    if (mod) routing_.emplace(*mod, execute::mod::Scorer::learned, 0, classifier);
  }

  void prepare(const WidthGating& gating) override { ws_.emplace(encoder_workspace(engine_, &gating)); }

  ModelOutputs run(const WidthRouting* width, bool sample) override {
    if (!ws_) ws_.emplace(encoder_workspace(engine_));
    return run_packed(engine_, sample ? sample_ : packed_, {routing_ ? &*routing_ : nullptr, width}, *ws_);
  }

 private:
  const Engine::Impl& engine_;
  const format::TensorSource& weights_;
  Packed packed_, sample_;
  std::optional<execute::mod::TokenRouting> routing_;
  std::optional<execute::EncoderWorkspace> ws_;
};

class DecoderTarget final : public AcmTarget {
 public:
  DecoderTarget(const Engine::Impl& engine, const format::TensorSource& weights, execute::DecoderNaming naming,
                std::span<const std::vector<std::int32_t>> sequences, const execute::mod::Routing* mod,
                std::size_t sample_tokens)
      : engine_(engine),
        weights_(weights),
        naming_(naming),
        decoder_(*engine.decoder),
        cache_(decoder_.make_cache()),
        sequences_(sequences) {
    const auto& c = decoder_.config();
    activation = execute::acm::Activation::swiglu;
    layers = c.layers, hidden = c.dim, ffn = c.hidden_dim;
    classifier = true;
    check_on = "the spread of calibration texts (next-token logits of every token)";
    for (const auto& ids : sequences_) tokens += ids.size();
    const std::size_t stride = spread_stride(tokens, sample_tokens);
    for (std::size_t i = 0; i < sequences_.size(); i += stride) sample_.push_back(i);
    sample_texts = sample_.size();
    route(mod);
  }

  execute::acm::FfnWeights ffn_weights(int layer) const override {
    return execute::LlamaDecoder::ffn_weights(weights_, decoder_.config(), naming_, layer);
  }

  void record(const std::vector<int>& wanted, const Probe& probe) override {
    std::vector<char> recorded(layers, 0), held_out;
    for (int l : wanted) recorded[l] = 1;
    execute::DecoderWorkspace ws(decoder_, chunk());
    for (std::size_t d = 0; d < sequences_.size(); ++d) {
      const char out = d % kHeldOutEvery == kHeldOutEvery - 1;
      auto seen = [&](int layer, const float* x, const float* a, int rows) {
        if (!recorded[layer]) return;
        held_out.assign(rows, out);
        probe(layer, x, a, rows, held_out.data());
      };
      feed(d, ws, nullptr, seen, nullptr);
    }
  }

  void route(const execute::mod::Routing* mod) override {
    routing_.reset();
    if (mod) routing_.emplace(*mod, execute::mod::Scorer::learned, 0, false);
  }

  void prepare(const WidthGating& gating) override { ws_.emplace(decoder_, chunk(), &gating); }

  ModelOutputs run(const WidthRouting* width, bool) override {
    if (!ws_) ws_.emplace(decoder_, chunk());
    ModelOutputs out;
    out.width = decoder_.config().vocab;
    for (std::size_t d : sample_) {
      out.flops += feed(d, *ws_, width, {}, &out.values);
      out.tokens += sequences_[d].size();
    }
    return out;
  }

 private:
  int chunk() const { return std::min(engine_.max_batch_rows, decoder_.config().context); }

  // Document d through the decoder in chunks; with `logits`, every token's
  // next-token logits appended to it.
  execute::FlopCount feed(std::size_t d, execute::DecoderWorkspace& ws, const WidthRouting* width,
                          const execute::FfnProbe& probe, std::vector<float>* logits) {
    const auto& ids = sequences_[d];
    const int V = decoder_.config().vocab;
    cache_.clear();
    execute::FlopCount flops;
    for (std::size_t at = 0; at < ids.size();) {
      const int n = static_cast<int>(std::min<std::size_t>(ids.size() - at, ws.max_rows()));
      flops += decoder_.forward(std::span(ids).subspan(at, n), cache_, ws,
                                execute::Skipping{routing_ ? &*routing_ : nullptr, width}, probe);
      for (int r = 0; logits && r < n; r += execute::LlamaDecoder::logits_rows()) {
        const int count = std::min(n - r, execute::LlamaDecoder::logits_rows());
        flops += decoder_.logits(ws, r, count);
        logits->insert(logits->end(), ws.logits(), ws.logits() + static_cast<std::size_t>(count) * V);
      }
      at += n;
    }
    return flops;
  }

  const Engine::Impl& engine_;
  const format::TensorSource& weights_;
  execute::DecoderNaming naming_;
  const execute::LlamaDecoder& decoder_;
  execute::KvCache cache_;
  std::span<const std::vector<std::int32_t>> sequences_;
  std::vector<std::size_t> sample_;
  std::optional<execute::mod::TokenRouting> routing_;
  std::optional<execute::DecoderWorkspace> ws_;
};

}  // namespace

std::unique_ptr<AcmTarget> encoder_target(const Engine::Impl& engine, const format::TensorSource& weights,
                                          std::span<const std::string> texts, const execute::mod::Routing* mod,
                                          std::size_t sample_tokens) {
  return std::make_unique<EncoderTarget>(engine, weights, texts, mod, sample_tokens);
}

std::vector<std::vector<std::int32_t>> decoder_sequences(const Engine::Impl& engine, std::span<const std::string> texts) {
  const auto context = static_cast<std::size_t>(engine.llama_config.context);
  std::vector<std::vector<std::int32_t>> sequences;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    auto ids = engine.sentencepiece->encode(texts[i], true, false);
    if (ids.size() > context) ids.resize(context);
    if (ids.size() < 2)
      throw Error(ErrorCode::invalid_argument, "calibration text " + std::to_string(i + 1) + " has no tokens");
    sequences.push_back(std::move(ids));
  }
  return sequences;
}

std::unique_ptr<AcmTarget> decoder_target(const Engine::Impl& engine, const format::TensorSource& weights,
                                          execute::DecoderNaming naming,
                                          std::span<const std::vector<std::int32_t>> sequences,
                                          const execute::mod::Routing* mod, std::size_t sample_tokens) {
  return std::make_unique<DecoderTarget>(engine, weights, naming, sequences, mod, sample_tokens);
}

}  // namespace skim::calibration
