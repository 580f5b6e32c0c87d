// The encoder path end to end on a small random model: API behaviour,
// batching invariance, the row-subset interface, and bad input.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <fstream>
#include <thread>
#include <numeric>
#include <skim/skim.hpp>

#include "engine/engine_impl.hpp"
#include "random_bert.hpp"
#include "test_support.hpp"

using skim::ErrorCode;
using namespace skim::testing;
namespace fs = std::filesystem;

namespace {

class TinyModel : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { dir_ = skim::testing::write_tiny_bert(skim::testing::fresh_temp_dir("tiny")); }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  static fs::path dir_;
};
fs::path TinyModel::dir_;

}  // namespace

TEST_F(TinyModel, ClassifyReturnsALabelWithItsCost) {
  auto engine = skim::Engine::open(dir_, skim::Options().threads(1));
  EXPECT_EQ(engine->info().labels.size(), 3u);
  auto a = engine->classify("turn on the lights");
  EXPECT_EQ(a.label, "label_" + std::to_string(a.label_id));
  EXPECT_GT(a.score, 0.f);
  EXPECT_LE(a.score, 1.f);
  EXPECT_EQ(a.route, skim::Route::transformer);
  EXPECT_EQ(a.tokens, 6u);  // [CLS] turn on the lights [SEP]
  EXPECT_GT(a.cost.flops, 0);
  EXPECT_DOUBLE_EQ(a.cost.flops, a.cost.dense_flops);
  EXPECT_GT(a.cost.seconds, 0);
  EXPECT_FALSE(a.truncated);
  ASSERT_EQ(a.logits.size(), 3u);
}

TEST_F(TinyModel, BatchOfMixedLengthsMatchesOneByOne) {
  auto engine = skim::Engine::open(dir_);
  auto session = engine->session();
  std::vector<std::string> texts = {"turn off the lights", "what", "set an alarm for tomorrow please",
                                    "how are you?", "play music"};
  auto batch = session.classify(texts);
  for (std::size_t i = 0; i < texts.size(); ++i) {
    auto single = session.classify(texts[i]);
    EXPECT_EQ(batch[i].label_id, single.label_id);
    for (std::size_t j = 0; j < single.logits.size(); ++j)
      EXPECT_NEAR(batch[i].logits[j], single.logits[j], 1e-5 * (1 + std::abs(single.logits[j])));
  }
  // Small max_batch_tokens forces chunking; results stay the same.
  auto chunked = skim::Engine::open(dir_, skim::Options().max_batch_tokens(8))->classify(texts);
  for (std::size_t i = 0; i < texts.size(); ++i) EXPECT_EQ(chunked[i].label_id, batch[i].label_id);
}

TEST_F(TinyModel, ThreadCountDoesNotChangeAnswers) {
  auto one = skim::Engine::open(dir_, skim::Options().threads(1))->classify("what is my balance");
  auto two = skim::Engine::open(dir_, skim::Options().threads(2))->classify("what is my balance");
  for (std::size_t j = 0; j < one.logits.size(); ++j) EXPECT_NEAR(one.logits[j], two.logits[j], 1e-5);
}

TEST_F(TinyModel, RoutingEveryRowEqualsTheDensePath) {
  auto engine = skim::Engine::open(dir_);
  const auto& impl = engine->impl();
  skim::execute::TokenBatch batch;
  batch.clear();
  batch.add(std::vector<std::int32_t>{2, 5, 6, 8, 3});
  batch.add(std::vector<std::int32_t>{2, 10, 11, 12, 13, 14, 3});
  const int H = impl.encoder->hidden_size();
  skim::execute::EncoderWorkspace dense(*impl.encoder, 64, 16), routed(*impl.encoder, 64, 16);
  impl.encoder->encode(batch, dense);
  std::vector<std::int32_t> all(batch.rows());
  std::iota(all.begin(), all.end(), 0);
  std::vector<skim::execute::RowSelection> sel(impl.bert_config.num_hidden_layers, skim::execute::RowSelection::only(all));
  auto flops = impl.encoder->encode(batch, routed, sel);
  EXPECT_DOUBLE_EQ(flops.executed, flops.dense);
  for (int i = 0; i < batch.rows() * H; ++i) ASSERT_NEAR(dense.hidden()[i], routed.hidden()[i], 1e-6) << i;
}

TEST_F(TinyModel, UnselectedRowsRideTheResidual) {
  auto engine = skim::Engine::open(dir_);
  const auto& impl = engine->impl();
  skim::execute::TokenBatch batch;
  batch.clear();
  batch.add(std::vector<std::int32_t>{2, 5, 6, 8, 3});
  const int H = impl.encoder->hidden_size();
  skim::execute::EncoderWorkspace ws(*impl.encoder, 64, 16);
  impl.encoder->encode(batch, ws);
  std::vector<float> before(ws.hidden(), ws.hidden() + batch.rows() * H);
  std::vector<std::int32_t> picked = {0, 3};
  auto f = impl.encoder->layer_forward(1, batch, ws, skim::execute::RowSelection::only(picked));
  EXPECT_LT(f.executed, f.dense);
  for (int r : {1, 2, 4})
    for (int j = 0; j < H; ++j) ASSERT_EQ(ws.hidden()[r * H + j], before[r * H + j]);
  bool changed = false;
  for (int j = 0; j < H; ++j) changed |= ws.hidden()[3 * H + j] != before[3 * H + j];
  EXPECT_TRUE(changed);
}

TEST_F(TinyModel, EmbedGivesAHiddenSizeVector) {
  auto e = skim::Engine::open(dir_)->embed("play music");
  EXPECT_EQ(e.values.size(), 32u);
  EXPECT_EQ(e.tokens, 4u);
}

TEST_F(TinyModel, LongTextIsTruncatedAndSaysSo) {
  auto engine = skim::Engine::open(dir_);
  std::string text;
  for (int i = 0; i < 40; ++i) text += "turn on ";
  auto a = engine->classify(text);
  EXPECT_TRUE(a.truncated);
  EXPECT_EQ(a.tokens, 16u);  // the model's max_position_embeddings
  auto b = skim::Engine::open(dir_, skim::Options().max_sequence_length(8))->classify(text);
  EXPECT_TRUE(b.truncated);
  EXPECT_EQ(b.tokens, 8u);
}

TEST_F(TinyModel, EmptyOrBlankTextIsRejectedNamingTheInput) {
  auto engine = skim::Engine::open(dir_);
  expect_error([&] { engine->classify(""); }, ErrorCode::invalid_argument, {"input 0 is empty"});
  std::vector<std::string> texts = {"play music", " \t "};
  expect_error([&] { engine->classify(texts); }, ErrorCode::invalid_argument, {"input 1"});
}

TEST_F(TinyModel, InvalidUtf8IsRejectedWithItsByteOffset) {
  auto engine = skim::Engine::open(dir_);
  expect_error([&] { engine->classify("play \xC3\x28 music"); }, ErrorCode::text, {"byte 5"});
}

TEST(EngineOpen, MissingDirectoryOrVocabulary) {
  expect_error([] { skim::Engine::open("/nonexistent/skim-model"); }, ErrorCode::io, {"/nonexistent/skim-model"});
  const TemporaryDirectory temp;
  const auto dir = skim::testing::write_tiny_bert(temp.path());
  fs::remove(dir / "vocab.txt");
  expect_error([&] { skim::Engine::open(dir); }, ErrorCode::model, {"no vocabulary"});
}

TEST(EngineOpen, MissingOrMisshapenTensorIsNamed) {
  skim::testing::TinyBertSpec missing;
  missing.edit = [](const std::string& n, auto&) { return n != "bert.encoder.layer.1.output.dense.weight"; };
  const TemporaryDirectory temp;
  auto dir = skim::testing::write_tiny_bert(temp / "missing", missing);
  expect_error([&] { skim::Engine::open(dir); }, ErrorCode::model, {"bert.encoder.layer.1.output.dense.weight"});

  skim::testing::TinyBertSpec wrong;
  wrong.edit = [](const std::string& n, std::vector<std::int64_t>& shape) {
    if (n == "classifier.weight") shape = {4, 32};
    return true;
  };
  dir = skim::testing::write_tiny_bert(temp / "wrongshape", wrong);
  expect_error([&] { skim::Engine::open(dir); }, ErrorCode::model, {"classifier.weight"});
}

TEST(EngineOpen, UnknownModelTypeIsUnsupported) {
  const TemporaryDirectory temp;
  const auto dir = skim::testing::write_tiny_bert(temp.path());
  std::ifstream in(dir / "config.json");
  std::string cfg((std::istreambuf_iterator<char>(in)), {});
  in.close();
  cfg.replace(cfg.find("\"bert\""), 6, "\"gpt2\"");
  std::ofstream(dir / "config.json") << cfg;
  expect_error([&] { skim::Engine::open(dir); }, ErrorCode::unsupported, {"gpt2"});
}

TEST_F(TinyModel, OneEngineServesManyThreads) {
  auto engine = skim::Engine::open(dir_, skim::Options().threads(1));
  const std::vector<std::string> texts = {"turn on the lights", "what is my balance", "play music please"};
  std::vector<skim::Answer> expected;
  for (const auto& t : texts) expected.push_back(engine->classify(t));
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      auto session = engine->session();
      for (int i = 0; i < 50; ++i) {
        const std::size_t k = (i + t) % texts.size();
        auto a = (i % 2) ? session.classify(texts[k]) : engine->classify(texts[k]);
        for (std::size_t j = 0; j < a.logits.size(); ++j)
          if (std::abs(a.logits[j] - expected[k].logits[j]) > 1e-5f) ++mismatches;
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(ShippedModels, PretrainedEncoderEmbedsAndClassifierClassifies) {
  const fs::path models = fs::path(SKIM_SOURCE_DIR) / "examples" / "models";
  auto mini = skim::Engine::open(models / "skim-bert-mini");
  EXPECT_TRUE(mini->info().labels.empty());
  auto e = mini->embed("turn off the kitchen lights");
  ASSERT_EQ(e.values.size(), mini->info().hidden_size);
  for (float v : e.values) ASSERT_TRUE(std::isfinite(v));
  auto clinc = skim::Engine::open(models / "clinc150-bert");
  EXPECT_EQ(clinc->info().labels.size(), 151u);
  EXPECT_EQ(clinc->classify("please set an alarm for seven tomorrow morning").label, "alarm");
}
