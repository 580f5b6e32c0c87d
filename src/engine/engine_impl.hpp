#pragma once
#include <memory>
#include <mutex>
#include <vector>

#include "execute/bert_encoder.hpp"
#include "format/hf_config.hpp"
#include "kernels/backend.hpp"
#include "skim/engine.hpp"
#include "text/wordpiece.hpp"

namespace skim {

// Per-session state: the encoder workspace and reusable batch buffers.
struct SessionState {
  SessionState(const execute::BertEncoder& encoder, int max_rows, int max_sequence)
      : workspace(encoder, max_rows, max_sequence) {}
  execute::EncoderWorkspace workspace;
  execute::TokenBatch batch;
  std::vector<text::Encoding> encodings;
};

struct Engine::Impl {
  Options options;
  ModelInfo info;
  format::EncoderConfig config;
  std::unique_ptr<text::WordPieceTokenizer> tokenizer;
  kernels::Backend backend;
  std::unique_ptr<execute::BertEncoder> encoder;
  int max_sequence = 0;   // tokens per text, specials included
  int max_batch_rows = 0;  // tokens per forward pass

  // Sessions lent to Engine::classify/embed callers; grows to the number of
  // threads calling at once.
  mutable std::mutex pool_mutex;
  mutable std::vector<std::unique_ptr<SessionState>> pool;

  std::unique_ptr<SessionState> make_state() const {
    return std::make_unique<SessionState>(*encoder, max_batch_rows, max_sequence);
  }
};

}  // namespace skim
