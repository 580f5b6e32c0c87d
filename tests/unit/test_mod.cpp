// Mixture-of-Depths token routing: the selection rule, routers fitted from
// forward passes, the package, MoD off = dense, and bad input.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <skim/skim.hpp>

#include "engine/engine_impl.hpp"
#include "engine/router.hpp"
#include "execute/mod/token_routing.hpp"
#include "package_copy.hpp"
#include "random_bert.hpp"
#include "test_support.hpp"

using skim::ErrorCode;
using skim::execute::TokenBatch;
using namespace skim::execute::mod;
using namespace skim::testing;
namespace fs = std::filesystem;

namespace {

TokenBatch two_sequences() {
  TokenBatch batch;
  batch.clear();
  batch.add(std::vector<std::int32_t>{2, 5, 6, 7, 3});  // rows 0–4
  batch.add(std::vector<std::int32_t>{2, 9, 3});        // rows 5–7
  return batch;
}

}  // namespace

TEST(ModSelection, KeepsTheBestScoredShareOfEachSequenceAndItsFirstToken) {
  EXPECT_EQ(tokens_to_keep(5, 0.5), 3);
  EXPECT_EQ(tokens_to_keep(3, 0.5), 2);
  EXPECT_EQ(tokens_to_keep(8, 0.25), 2);
  EXPECT_EQ(tokens_to_keep(1, 0.1), 1);
  EXPECT_EQ(tokens_to_keep(4, 1.0), 4);
  Routing routing;
  routing.blocks.push_back({1, 0.5, {}, 0.f});
  const TokenBatch batch = two_sequences();
  RoutingScratch scratch(16);
  // The oracle reads the scores the caller measured.
  scratch.scores = {0.0f, 0.9f, 0.1f, 0.8f, 0.7f, 0.0f, 0.2f, 0.3f};
  const TokenRouting keep_first(routing, Scorer::oracle, 0, true);
  EXPECT_TRUE(keep_first.select(0, nullptr, 4, batch, scratch).all);  // layer 0 is not routed
  auto sel = keep_first.select(1, nullptr, 4, batch, scratch);
  ASSERT_FALSE(sel.all);
  // Sequence 1: 3 of 5 = [CLS] + the two best (rows 1, 3); sequence 2: 2 of 3 = [CLS] + row 7.
  EXPECT_EQ(std::vector<std::int32_t>(sel.rows.begin(), sel.rows.end()), (std::vector<std::int32_t>{0, 1, 3, 5, 7}));
  const TokenRouting free_choice(routing, Scorer::oracle, 0, false);
  sel = free_choice.select(1, nullptr, 4, batch, scratch);
  EXPECT_EQ(std::vector<std::int32_t>(sel.rows.begin(), sel.rows.end()), (std::vector<std::int32_t>{1, 3, 4, 6, 7}));
  // A capacity override applies to every routed block.
  const TokenRouting full(routing, Scorer::oracle, 1.0, true);
  sel = full.select(1, nullptr, 4, batch, scratch);
  EXPECT_EQ(sel.rows.size(), 8u);
}

TEST(ModSelection, RandomScoresDependOnTheTextNotOnItsBatch) {
  Routing routing;
  routing.blocks.push_back({0, 0.5, {}, 0.f});
  const TokenRouting random(routing, Scorer::random, 0, true, 42);
  RoutingScratch scratch(16);
  TokenBatch alone;
  alone.clear();
  alone.add(std::vector<std::int32_t>{2, 9, 3});
  const auto a = random.select(0, nullptr, 4, alone, scratch);
  const std::vector<std::int32_t> first(a.rows.begin(), a.rows.end());
  const auto b = random.select(0, nullptr, 4, two_sequences(), scratch);  // the same text as the batch's second
  std::vector<std::int32_t> second;
  for (auto r : b.rows)
    if (r >= 5) second.push_back(r - 5);
  EXPECT_EQ(first, second);
}

class ModEngine : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    TinyBertSpec spec;
    spec.layers = 4;
    dir_ = write_tiny_bert(fresh_temp_dir("mod"), spec);
    dense_dir_ = write_tiny_bert(fresh_temp_dir("mod-dense"), spec);  // the same model, never calibrated
    const auto rows = tiny_texts(120);
    report_ = skim::calibrate(dir_, {}, rows, skim::CalibrateOptions().mod_capacity(0.5).mod_layers({1, 2, 3}).threads(1));
  }
  static void TearDownTestSuite() {
    fs::remove_all(dir_);
    fs::remove_all(dense_dir_);
  }
  static fs::path dir_, dense_dir_;
  static skim::CalibrationReport report_;
};
fs::path ModEngine::dir_, ModEngine::dense_dir_;
skim::CalibrationReport ModEngine::report_;

TEST_F(ModEngine, FitsRoutersInOneCallAndTheEngineRunsThem) {
  EXPECT_FALSE(report_.has_proposer);
  ASSERT_FALSE(report_.mod_layers.empty());
  double sum = 0;
  for (double c : report_.mod_capacities) sum += c;
  sum += 3 - report_.mod_capacities.size();  // blocks left dense count as capacity 1
  EXPECT_LE(sum / 3, 0.5 + 1e-9);
  EXPECT_LT(report_.mod_flops_share, 1.0);

  auto engine = skim::Engine::open(dir_, skim::Options().threads(1));
  ASSERT_EQ(engine->info().mod_blocks.size(), report_.mod_layers.size());
  const auto a = engine->classify("set an alarm for tomorrow please how are you");
  EXPECT_LT(a.cost.flops, a.cost.dense_flops);
  // The skim.json section names the semantics and each block.
  std::ifstream in(dir_ / "skim.json");
  const auto j = nlohmann::json::parse(in);
  EXPECT_EQ(j["mod"]["semantics"], "post_hoc");
  EXPECT_EQ(j["mod"]["layers"].size(), report_.mod_layers.size());
  EXPECT_FALSE(j.contains("proposer"));
}

TEST_F(ModEngine, ModOffIsTheDensePathBitForBit) {
  const std::vector<std::string> texts = {"turn on the lights", "what is my balance please", "play music for you"};
  auto off = skim::Engine::open(dir_, skim::Options().threads(1).mod(false))->classify(texts);
  auto dense = skim::Engine::open(dense_dir_, skim::Options().threads(1))->classify(texts);
  for (std::size_t i = 0; i < texts.size(); ++i) {
    EXPECT_EQ(off[i].logits, dense[i].logits);
    EXPECT_EQ(off[i].cost.flops, off[i].cost.dense_flops);
  }
  // Capacity 1 runs every token through every block: dense up to the
  // gather/scatter path's rounding.
  auto full = skim::Engine::open(dir_, skim::Options().threads(1).mod_capacity(1.0))->classify(texts);
  for (std::size_t i = 0; i < texts.size(); ++i)
    for (std::size_t j = 0; j < dense[i].logits.size(); ++j)
      EXPECT_NEAR(full[i].logits[j], dense[i].logits[j], 1e-5 * (1 + std::abs(dense[i].logits[j])));
}

TEST_F(ModEngine, OracleAndRandomScorersRunAtTheSameCapacities) {
  const std::string text = "what is my balance please turn off the lights";
  const auto learned = skim::Engine::open(dir_, skim::Options().threads(1))->classify(text);
  for (auto scorer : {skim::ModRouter::oracle, skim::ModRouter::random}) {
    const auto a = skim::Engine::open(dir_, skim::Options().threads(1).mod_router(scorer))->classify(text);
    EXPECT_EQ(a.cost.dense_flops, learned.cost.dense_flops);
    EXPECT_LT(a.cost.flops, a.cost.dense_flops);
  }
}

TEST_F(ModEngine, APackageForAnotherModelIsRefused) {
  TinyBertSpec other;
  other.layers = 4;
  other.seed = 8;
  const fs::path dir = write_tiny_bert(fresh_temp_dir("mod-other"), other);
  fs::copy_file(dir_ / "skim.json", dir / "skim.json");
  fs::copy_file(dir_ / "skim.safetensors", dir / "skim.safetensors");
  expect_error([&] { skim::Engine::open(dir); }, ErrorCode::model, {"skim.json", "another model"});
  fs::remove_all(dir);
}

TEST_F(ModEngine, BadRoutersAreNamed) {
  PackageCopy package(dir_, "mod-bad");
  const fs::path& dir = package.dir();
  const auto& j = package.original();
  auto bad = j;
  bad["mod"]["layers"][0]["capacity"] = 1.5;
  package.write(bad);
  expect_error([&] { skim::Engine::open(dir); }, ErrorCode::format, {"mod.layers[0]", "outside (0, 1]"});
  bad = j;
  bad["mod"]["layers"][0]["layer"] = 9;
  package.write(bad);
  expect_error([&] { skim::Engine::open(dir); }, ErrorCode::format, {"layer 9", "4 layers"});
  bad = j;
  bad["mod"]["semantics"] = "native";
  package.write(bad);
  expect_error([&] { skim::Engine::open(dir); }, ErrorCode::format, {"mod.semantics", "native"});
  // A router whose width is not the model's hidden size.
  TinyBertSpec wider;
  wider.layers = 4;
  wider.hidden = 48;
  package.replace_model(wider);
  expect_error([&] { skim::Engine::open(dir); }, ErrorCode::model, {"mod.layer.", "hidden size is 48"});
}

TEST_F(ModEngine, BadTargetsAndTooLittleDataAreClearErrors) {
  expect_error([] { skim::Options().mod_capacity(1.5); }, ErrorCode::invalid_argument, {"outside (0, 1]"});
  expect_error([] { skim::CalibrateOptions().mod_capacity(0); }, ErrorCode::invalid_argument, {"outside (0, 1]"});
  expect_error([] { skim::CalibrateOptions().mod_flops(-0.5); }, ErrorCode::invalid_argument, {"outside (0, 1]"});
  const fs::path out = fresh_temp_dir("mod-out");
  const auto rows = tiny_texts(120);
  expect_error([&] { skim::calibrate(dense_dir_, {}, rows, skim::CalibrateOptions().mod_capacity(0.5).mod_layers({7}).out(out)); },
               ErrorCode::invalid_argument, {"layer 7", "0–3"});
  // By default the first two and the last block are never routed: a 2-layer model has none left.
  const fs::path shallow = write_tiny_bert(fresh_temp_dir("mod-shallow"));
  expect_error([&] { skim::calibrate(shallow, {}, rows, skim::CalibrateOptions().mod_capacity(0.5).out(out)); },
               ErrorCode::invalid_argument, {"none to route", "--mod-layers"});
  expect_error([&] { skim::calibrate(dense_dir_, {}, tiny_texts(5), skim::CalibrateOptions().mod_capacity(0.5).mod_layers({1}).out(out)); },
               ErrorCode::invalid_argument, {"needs at least 165"});
  expect_error([&] { skim::calibrate(dense_dir_, {}, rows, skim::CalibrateOptions().out(out)); },
               ErrorCode::invalid_argument, {"empty training set"});
  fs::remove_all(out);
  fs::remove_all(shallow);
}
