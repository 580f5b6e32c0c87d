// The decoder path on the real stories260K model, from all three formats,
// against the llama2.c reference output and a float64 PyTorch reference.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <skim/skim.hpp>
#include <sstream>

#include "calibrate/mod_fit.hpp"
#include "engine/engine_impl.hpp"
#include "format/gguf.hpp"
#include "format/gguf_writer.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using skim::ErrorCode;
using namespace skim::testing;

namespace {

const fs::path data = SKIM_TEST_DATA_DIR;
const fs::path stories = data / "models" / "stories260K";

std::vector<std::int32_t> expected_greedy() {
  std::ifstream in(stories / "expected_greedy_from_bos_256.ids.txt");
  std::vector<std::int32_t> ids;
  for (std::int32_t id; in >> id;) ids.push_back(id);
  return ids;
}

std::shared_ptr<const skim::Engine> open_bin() {
  return skim::Engine::open(stories / "stories260K.bin",
                            skim::Options().threads(1).tokenizer((stories / "tok512.bin").string()));
}

}  // namespace

class GreedyFromBos : public ::testing::TestWithParam<std::string> {};

TEST_P(GreedyFromBos, Reproduces256ReferenceTokens) {
  const std::string format = GetParam();
  auto engine = format == "bin"    ? open_bin()
                : format == "gguf" ? skim::Engine::open(stories / "stories260K.gguf", skim::Options().threads(1))
                                   : skim::Engine::open(data / "models" / "stories260K-hf", skim::Options().threads(1));
  EXPECT_TRUE(engine->info().is_decoder);
  auto g = engine->generate("", skim::GenerateOptions().max_tokens(256));
  EXPECT_EQ(g.tokens, expected_greedy());
  EXPECT_EQ(g.prompt_tokens, 1u);  // BOS alone
  EXPECT_EQ(g.stop, skim::Generation::Stop::max_tokens);
  std::ifstream in(stories / "expected_greedy_from_bos_256.txt");
  std::stringstream text;
  text << in.rdbuf();
  std::string expected_text = text.str();
  if (!expected_text.empty() && expected_text.back() == '\n') expected_text.pop_back();  // the file's final newline
  EXPECT_EQ(g.text, expected_text);
  EXPECT_GT(g.cost.flops, 0);
}

INSTANTIATE_TEST_SUITE_P(Formats, GreedyFromBos, ::testing::Values("bin", "gguf", "hf"));

TEST(Decoder, LogitsMatchPyTorchReference) {
  std::ifstream in(data / "reference" / "stories260K.logits.json");
  ASSERT_TRUE(in);
  auto ref = nlohmann::json::parse(in);
  auto engine = open_bin();
  const auto& impl = engine->impl();
  double worst = 0;
  for (const auto& c : ref.at("cases")) {
    auto ids = c.at("ids").get<std::vector<std::int32_t>>();
    const auto& logits = c.at("logits");
    auto cache = impl.decoder->make_cache();
    skim::execute::DecoderWorkspace ws(*impl.decoder, 64);
    impl.decoder->forward(ids, cache, ws);
    impl.decoder->logits(ws, 0, static_cast<int>(ids.size()));
    const int V = impl.llama_config.vocab;
    for (std::size_t p = 0; p < ids.size(); ++p) {
      double diff = 0, scale = 0;
      for (int j = 0; j < V; ++j) {
        const double want = logits[p][j].get<double>();
        diff = std::max(diff, std::abs(ws.logits()[p * V + j] - want));
        scale = std::max(scale, std::abs(want));
      }
      worst = std::max(worst, diff / scale);
      EXPECT_LE(diff / scale, 1e-4) << "position " << p;
    }
  }
  std::cout << "worst relative error " << worst << "\n";
}

TEST(Decoder, PrefillEqualsTokenByToken) {
  auto engine = open_bin();
  const auto& impl = engine->impl();
  const std::vector<std::int32_t> ids = {1, 403, 407, 261, 378, 11, 299, 264, 314, 300};
  auto c1 = impl.decoder->make_cache(), c2 = impl.decoder->make_cache();
  skim::execute::DecoderWorkspace w1(*impl.decoder, 16), w2(*impl.decoder, 16);
  impl.decoder->forward(ids, c1, w1);
  impl.decoder->logits(w1, static_cast<int>(ids.size()) - 1, 1);
  for (auto id : ids) impl.decoder->forward(std::span(&id, 1), c2, w2);
  impl.decoder->logits(w2, 0, 1);
  for (int j = 0; j < impl.llama_config.vocab; ++j) EXPECT_NEAR(w1.logits()[j], w2.logits()[j], 1e-4);
}

TEST(Decoder, SamplingIsReproducibleUnderASeed) {
  auto engine = open_bin();
  auto opts = skim::GenerateOptions().max_tokens(60).temperature(0.9f).top_k(40).top_p(0.9f).seed(42);
  auto a = engine->generate("Once upon a time", opts);
  auto b = engine->generate("Once upon a time", opts);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.text, b.text);
  auto c = engine->generate("Once upon a time", opts.seed(43));
  EXPECT_NE(a.tokens, c.tokens);
}

TEST(Decoder, CallbackStreamsAndCanStop) {
  auto engine = open_bin();
  std::string streamed;
  int calls = 0;
  auto g = engine->generate("", skim::GenerateOptions().max_tokens(100), [&](std::string_view piece, std::int32_t) {
    streamed += piece;
    return ++calls < 10;
  });
  EXPECT_EQ(calls, 10);
  EXPECT_EQ(g.tokens.size(), 10u);
  EXPECT_EQ(g.stop, skim::Generation::Stop::callback);
  EXPECT_EQ(streamed, g.text);
}

TEST(Decoder, SessionKeepsTheConversation) {
  auto engine = open_bin();
  auto session = engine->session();
  auto first = session.generate("", skim::GenerateOptions().max_tokens(100));
  auto second = session.generate("", skim::GenerateOptions().max_tokens(156));
  auto tokens = first.tokens;
  tokens.insert(tokens.end(), second.tokens.begin(), second.tokens.end());
  EXPECT_EQ(tokens, expected_greedy());
  session.reset();
  EXPECT_EQ(session.generate("", skim::GenerateOptions().max_tokens(100)).tokens, first.tokens);
}

TEST(Decoder, PromptLongerThanTheContextIsAnError) {
  auto engine = open_bin();  // context 512
  std::string prompt;
  for (int i = 0; i < 400; ++i) prompt += "the cat sat. ";
  expect_error([&] { engine->generate(prompt); }, ErrorCode::invalid_argument, {"context of 512"});
}

TEST(Decoder, ScoreGivesAPlausiblePerplexity) {
  auto engine = open_bin();
  auto session = engine->session();
  auto s = session.score("Once upon a time, there was a little girl named Lily. She loved to play outside.");
  ASSERT_GT(s.tokens, 10u);
  const double ppl = std::exp(s.negative_log_likelihood / s.tokens);
  EXPECT_GT(ppl, 1.0);
  EXPECT_LT(ppl, 30.0);  // stories260K is weak but far better than uniform (512)
}

TEST(Decoder, EncoderCallsOnADecoderAreClearErrors) {
  auto engine = open_bin();
  expect_error([&] { engine->classify("hello"); }, ErrorCode::invalid_argument, {"decoder"});
}

TEST(Decoder, LlamaCheckpointWithoutTokenizerIsNamed) {
  const TemporaryDirectory dir;
  fs::copy_file(stories / "stories260K.bin", dir / "model.bin");
  expect_error([&] { skim::Engine::open(dir / "model.bin"); }, ErrorCode::invalid_argument, {"tokenizer"});
}

namespace {

// stories260K.gguf rewritten to `path` with the metadata keys starting with
// `drop_prefix` left out and general.architecture set to `architecture`.
fs::path gguf_without(const fs::path& path, const std::string& drop_prefix, const std::string& architecture = "llama") {
  skim::format::GgufFile source(stories / "stories260K.gguf");
  std::vector<skim::format::GgufMetadataEntry> metadata;
  for (const auto& e : source.metadata()) {
    if (e.key.rfind(drop_prefix, 0) == 0 || e.key == "general.alignment") continue;
    metadata.push_back(e);
    if (e.key == "general.architecture") metadata.back().value.value = architecture;
  }
  std::vector<skim::format::GgufTensorToWrite> tensors;
  for (const auto& t : source.tensors()) tensors.push_back({t.name, t.dtype, t.shape, t.bytes});
  skim::format::write_gguf(path, metadata, tensors);
  return path;
}

}  // namespace

TEST(Decoder, GgufWithoutTokenizerMetadataNamesTheKey) {
  const TemporaryDirectory dir;
  const auto path = gguf_without(dir / "notokenizer.gguf", "tokenizer.");
  expect_error([&] { skim::Engine::open(path); }, ErrorCode::model, {"tokenizer.ggml.model"});
}

TEST(Decoder, GgufWithoutHyperparametersNamesTheKey) {
  const TemporaryDirectory dir;
  const auto path = gguf_without(dir / "nohparams.gguf", "llama.");
  expect_error([&] { skim::Engine::open(path); }, ErrorCode::model, {"llama.embedding_length"});
}

TEST(Decoder, GgufOfAnotherArchitectureIsUnsupported) {
  const TemporaryDirectory dir;
  const auto path = gguf_without(dir / "gpt2.gguf", "nothing.", "gpt2");
  expect_error([&] { skim::Engine::open(path); }, ErrorCode::unsupported, {"gpt2"});
}

TEST(Decoder, DecodingAnUnknownIdIsAnError) {
  auto engine = open_bin();
  const auto& tok = *engine->impl().sentencepiece;
  expect_error([&] { tok.decode_piece(1, 512); }, ErrorCode::invalid_argument, {"512"});
  // Byte tokens that never form a character decode to U+FFFD, never garbage.
  std::size_t replaced = 0;
  const std::int32_t lone_continuation = tok.byte_to_id(0x80);
  EXPECT_EQ(tok.decode(std::vector<std::int32_t>{lone_continuation}, &replaced), "\xEF\xBF\xBD");
  EXPECT_EQ(replaced, 1u);
}

namespace {

// IEEE half from float, round to nearest even (normal range is enough here:
// Q8_0 scales are max|x|/127 of real weights).
std::uint16_t to_half(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const int exponent = static_cast<int>((x >> 23) & 0xFF) - 127 + 15;
  std::uint32_t mantissa = x & 0x7FFFFFu;
  if (exponent <= 0) return static_cast<std::uint16_t>(sign);  // flush tiny scales to zero
  std::uint32_t half = (static_cast<std::uint32_t>(exponent) << 10) | (mantissa >> 13);
  const std::uint32_t rest = mantissa & 0x1FFFu;
  if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;
  return static_cast<std::uint16_t>(sign | half);
}

}  // namespace

// GGUF Q8_0 runs end to end: a stories260K with its Q8_0-compatible weights
// quantized gives exactly what an F32 file holding the dequantized values
// gives (dequantization is exact, so any difference is a bug).
TEST(Decoder, Q8_0GgufMatchesItsDequantizedF32Twin) {
  skim::testing::TemporaryDirectory dir;
  skim::format::GgufFile source(stories / "stories260K.gguf");
  std::vector<skim::format::GgufMetadataEntry> metadata;
  for (const auto& e : source.metadata())
    if (e.key != "general.alignment") metadata.push_back(e);
  std::vector<std::vector<std::byte>> storage;
  storage.reserve(2 * source.tensors().size());  // references into it must stay valid
  std::vector<skim::format::GgufTensorToWrite> q8, f32;
  int quantized = 0;
  for (const auto& t : source.tensors()) {
    const auto values = skim::format::to_f32(t);
    if (t.shape.size() != 2 || t.shape.back() % 32 != 0) {
      q8.push_back({t.name, t.dtype, t.shape, t.bytes});
      f32.push_back({t.name, t.dtype, t.shape, t.bytes});
      continue;
    }
    auto& blocks = storage.emplace_back(values.size() / 32 * 34);
    auto& dequantized = storage.emplace_back(values.size() * 4);
    for (std::size_t b = 0; b < values.size() / 32; ++b) {
      float amax = 0;
      for (int i = 0; i < 32; ++i) amax = std::max(amax, std::abs(values[b * 32 + i]));
      const std::uint16_t d16 = to_half(amax / 127.f);
      std::memcpy(blocks.data() + b * 34, &d16, 2);
      const float d = skim::format::to_f32({"scale", skim::format::DType::f16, {1},
                                            std::as_bytes(std::span(&d16, 1)), "test"})[0];
      for (int i = 0; i < 32; ++i) {
        const auto q = static_cast<std::int8_t>(d == 0 ? 0 : std::lround(values[b * 32 + i] / d));
        std::memcpy(blocks.data() + b * 34 + 2 + i, &q, 1);
        const float v = d * q;
        std::memcpy(dequantized.data() + (b * 32 + i) * 4, &v, 4);
      }
    }
    q8.push_back({t.name, skim::format::DType::q8_0, t.shape, blocks});
    f32.push_back({t.name, skim::format::DType::f32, t.shape, dequantized});
    ++quantized;
  }
  EXPECT_GT(quantized, 20);
  skim::format::write_gguf(dir / "q8.gguf", metadata, q8);
  skim::format::write_gguf(dir / "f32.gguf", metadata, f32);
  // Widened to f32 (an exact conversion), the Q8_0 file is its f32 twin.
  auto widened = skim::Engine::open(dir / "q8.gguf", skim::Options().threads(1).weight_precision(skim::WeightPrecision::f32));
  auto twin = skim::Engine::open(dir / "f32.gguf", skim::Options().threads(1));
  const auto b = twin->generate("Once upon a time", skim::GenerateOptions().max_tokens(64));
  EXPECT_EQ(widened->generate("Once upon a time", skim::GenerateOptions().max_tokens(64)).tokens, b.tokens);
  EXPECT_FALSE(b.text.empty());

  // By default Q8_0 stays Q8_0 and runs in int8 with activations quantized
  // per 32 values, as llama.cpp runs it: not bit-identical, but the story
  // is the same and the likelihood of real text within a percent.
  auto as_stored = skim::Engine::open(dir / "q8.gguf", skim::Options().threads(2));
  const auto a = as_stored->generate("Once upon a time", skim::GenerateOptions().max_tokens(64));
  EXPECT_EQ(a.tokens, b.tokens);
  // The opening of a TinyStories validation story (Eldan & Li 2023,
  // CDLA-Sharing-1.0; see tests/data/README.md).
  const std::string text =
      "Once upon a time, in a big forest, there lived a rhinoceros named Roxy. Roxy loved to climb. She climbed "
      "trees, rocks, and hills. One day, Roxy found an icy hill. She had never seen anything like it before. It "
      "was shiny and cold, and she wanted to climb it.";
  auto q8_session = as_stored->session();
  auto f32_session = twin->session();
  const auto nll_q8 = q8_session.score(text), nll_f32 = f32_session.score(text);
  ASSERT_EQ(nll_q8.tokens, nll_f32.tokens);
  EXPECT_NEAR(nll_q8.negative_log_likelihood, nll_f32.negative_log_likelihood,
              0.01 * nll_f32.negative_log_likelihood);
  EXPECT_NE(nll_q8.negative_log_likelihood, nll_f32.negative_log_likelihood);  // int8 really ran
}

// The row-subset interface of the decoder's blocks (what Mixture-of-Depths
// builds on): every row as an index list is the dense path; unselected rows
// keep their state while the cache stays complete.
TEST(Decoder, RowSelectionOfEveryRowEqualsTheDensePath) {
  auto engine = open_bin();
  const auto& impl = engine->impl();
  const auto& decoder = *impl.decoder;
  const int D = decoder.config().dim, layers = decoder.config().layers;
  const std::vector<std::int32_t> tokens = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376};
  const int rows = static_cast<int>(tokens.size());
  skim::execute::DecoderWorkspace dense_ws(decoder, 16), routed_ws(decoder, 16);
  auto dense_cache = decoder.make_cache(), routed_cache = decoder.make_cache();
  const auto dense = decoder.forward(tokens, dense_cache, dense_ws);
  std::vector<std::int32_t> all(rows);
  for (int r = 0; r < rows; ++r) all[r] = r;
  std::vector<skim::execute::RowSelection> every(layers, skim::execute::RowSelection::only(all));
  const auto routed = decoder.forward(tokens, routed_cache, routed_ws, every);
  EXPECT_DOUBLE_EQ(routed.executed, dense.executed);
  for (int i = 0; i < rows * D; ++i)
    ASSERT_NEAR(routed_ws.hidden()[i], dense_ws.hidden()[i], 1e-5) << i;
}

TEST(Decoder, UnselectedRowsRideTheResidualAndStillFillTheCache) {
  auto engine = open_bin();
  const auto& decoder = *engine->impl().decoder;
  const int D = decoder.config().dim, layers = decoder.config().layers, KV = decoder.config().kv_width();
  const std::vector<std::int32_t> tokens = {1, 403, 407, 261, 378, 432};
  const int rows = static_cast<int>(tokens.size());
  // Skip every block for rows 2 and 4 (nothing but embeddings reach the end),
  // route the rest through all of them.
  const std::vector<std::int32_t> picked = {0, 1, 3, 5};
  std::vector<skim::execute::RowSelection> sel(layers, skim::execute::RowSelection::only(picked));
  skim::execute::DecoderWorkspace ws(decoder, 16);
  auto cache = decoder.make_cache();
  const auto f = decoder.forward(tokens, cache, ws, sel);
  EXPECT_LT(f.executed, f.dense);
  EXPECT_EQ(cache.length(), rows);
  skim::execute::DecoderWorkspace embed_ws(decoder, 16);
  auto scratch_cache = decoder.make_cache();
  std::vector<skim::execute::RowSelection> none(layers, skim::execute::RowSelection::only({}));
  decoder.forward(tokens, scratch_cache, embed_ws, none);  // every row skips every block: embeddings
  for (int r : {2, 4})
    for (int j = 0; j < D; ++j) ASSERT_EQ(ws.hidden()[r * D + j], embed_ws.hidden()[r * D + j]);
  bool changed = false;
  for (int j = 0; j < D; ++j) changed |= ws.hidden()[3 * D + j] != embed_ws.hidden()[3 * D + j];
  EXPECT_TRUE(changed);
  // Keys of the skipped rows are in the cache too (non-zero), at every layer.
  for (int l = 0; l < layers; ++l)
    for (int r : {2, 4}) {
      float norm = 0;
      for (int j = 0; j < KV; ++j) norm += std::abs(cache.keys(l)[r * KV + j]);
      EXPECT_GT(norm, 0.f) << "layer " << l << " row " << r;
    }
}

// Causal Mixture-of-Depths: a token's routing depends on itself and the past
// only, so prefill and token-by-token decoding make the same decisions and
// give the same states.
TEST(Decoder, CausalRoutingAgreesBetweenPrefillAndDecoding) {
  auto engine = open_bin();
  const auto& impl = engine->impl();
  const auto& decoder = *impl.decoder;
  std::ifstream in(stories / "expected_greedy_from_bos_256.txt");
  std::stringstream text;
  text << in.rdbuf();
  std::vector<std::vector<std::int32_t>> sequences;
  for (std::size_t at = 0; at + 200 < text.str().size(); at += 100)  // overlapping windows of the story
    sequences.push_back(impl.sentencepiece->encode(text.str().substr(at, 300), true, false));
  nlohmann::json report;
  const auto routing = skim::calibration::fit_decoder_routers(decoder, sequences, {2, 3}, 0.5, report);
  ASSERT_EQ(routing.blocks.size(), 2u);
  const std::vector<std::int32_t> tokens = sequences[0];
  const int D = decoder.config().dim, rows = static_cast<int>(tokens.size());
  for (auto scorer : {skim::execute::mod::Scorer::learned, skim::execute::mod::Scorer::random}) {
    const skim::execute::mod::TokenRouting routed(routing, scorer, 0, false, 3);
    skim::execute::DecoderWorkspace prefill_ws(decoder, 128), step_ws(decoder, 128);
    auto prefill_cache = decoder.make_cache(), step_cache = decoder.make_cache();
    const auto f = decoder.forward(tokens, prefill_cache, prefill_ws, routed);
    EXPECT_LT(f.executed, f.dense);
    for (int r = 0; r < rows; ++r) {
      decoder.forward(std::span(tokens).subspan(r, 1), step_cache, step_ws, routed);
      for (int j = 0; j < D; ++j)
        ASSERT_NEAR(step_ws.hidden()[j], prefill_ws.hidden()[r * D + j], 1e-4) << "position " << r;
    }
  }
}
