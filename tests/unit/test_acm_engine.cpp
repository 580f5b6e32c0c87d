// Adaptive Computation Modules through the public API: gates fitted in one
// call (alone and with MoD), the package, ACM off = dense, the gates a user
// can pick, and bad input.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <skim/skim.hpp>

#include "engine/router.hpp"
#include "package_copy.hpp"
#include "random_bert.hpp"
#include "test_support.hpp"

using skim::ErrorCode;
using namespace skim::testing;
namespace fs = std::filesystem;

class AcmEngine : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    TinyBertSpec spec;
    spec.layers = 4;
    dir_ = write_tiny_bert(fresh_temp_dir("acm"), spec);
    dense_dir_ = write_tiny_bert(fresh_temp_dir("acm-dense"), spec);  // the same model, never calibrated
    report_ = skim::calibrate(dir_, {}, tiny_texts(150), skim::CalibrateOptions().acm_budget(0.5).threads(1));
  }
  static void TearDownTestSuite() {
    fs::remove_all(dir_);
    fs::remove_all(dense_dir_);
  }
  static fs::path dir_, dense_dir_;
  static skim::CalibrationReport report_;
  const std::vector<std::string> texts_ = {"turn on the lights", "what is my balance please",
                                           "play music for you set an alarm for tomorrow"};
};
fs::path AcmEngine::dir_, AcmEngine::dense_dir_;
skim::CalibrationReport AcmEngine::report_;

TEST_F(AcmEngine, FitsGatesInOneCallAndTheEngineRunsThem) {
  EXPECT_FALSE(report_.has_proposer);
  EXPECT_EQ(report_.acm_layers, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(report_.acm_learners, 4);  // 64-wide FFNs: the floor of 4
  EXPECT_LT(report_.acm_ffn_flops_share, 0.8);
  EXPECT_GT(report_.acm_ffn_flops_share, 0.2);

  auto engine = skim::Engine::open(dir_, skim::Options().threads(1));
  EXPECT_EQ(engine->info().acm_layers.size(), 4u);
  EXPECT_EQ(engine->info().acm_budget, 0.5);
  double ffn = 0, dense_ffn = 0;
  for (const auto& a : engine->classify(texts_)) {
    ffn += a.cost.ffn_flops, dense_ffn += a.cost.dense_ffn_flops;
    EXPECT_LT(a.cost.ffn_flops, a.cost.dense_ffn_flops + 1);
    EXPECT_LT(a.cost.flops - a.cost.ffn_flops, a.cost.dense_flops - a.cost.dense_ffn_flops + 1);
  }
  EXPECT_LT(ffn, 0.9 * dense_ffn);
  std::ifstream in(dir_ / "skim.json");
  const auto j = nlohmann::json::parse(in);
  EXPECT_EQ(j["acm"]["learners"], "partition");
  EXPECT_EQ(j["acm"]["layers"].size(), 4u);
  EXPECT_EQ(j["acm"]["budget_grid"].size(), 4u * 7 + 1);  // every step of the greedy allocation
  EXPECT_FALSE(j.contains("mod"));
}

TEST_F(AcmEngine, AcmOffIsTheDensePathBitForBitAndAllLearnersAreTheFfn) {
  const auto off = skim::Engine::open(dir_, skim::Options().threads(1).acm(false))->classify(texts_);
  const auto dense = skim::Engine::open(dense_dir_, skim::Options().threads(1))->classify(texts_);
  for (std::size_t i = 0; i < texts_.size(); ++i) {
    EXPECT_EQ(off[i].logits, dense[i].logits);
    EXPECT_EQ(off[i].cost.ffn_flops, off[i].cost.dense_ffn_flops);
  }
  // Budget 1: every token runs every learner, which sum to the FFN (up to
  // the order of the sums).
  for (auto gate : {skim::AcmGate::learned, skim::AcmGate::uniform, skim::AcmGate::oracle}) {
    const auto full = skim::Engine::open(dir_, skim::Options().threads(1).acm_budget(1.0).acm_gate(gate))->classify(texts_);
    for (std::size_t i = 0; i < texts_.size(); ++i)
      for (std::size_t k = 0; k < dense[i].logits.size(); ++k)
        EXPECT_NEAR(full[i].logits[k], dense[i].logits[k], 1e-4 * (1 + std::abs(dense[i].logits[k])));
  }
}

TEST_F(AcmEngine, EveryGateMeetsLowerBudgetsWithFewerFlops) {
  for (auto gate : {skim::AcmGate::learned, skim::AcmGate::uniform, skim::AcmGate::oracle}) {
    double last = 1e300;
    for (double budget : {0.9, 0.5, 0.25}) {
      const auto answers =
          skim::Engine::open(dir_, skim::Options().threads(1).acm_budget(budget).acm_gate(gate))->classify(texts_);
      double ffn = 0;
      for (const auto& a : answers) ffn += a.cost.ffn_flops;
      EXPECT_LE(ffn, last) << "gate " << static_cast<int>(gate) << " budget " << budget;
      last = ffn;
    }
  }
}

TEST_F(AcmEngine, CombinesWithModInOneCommand) {
  const fs::path dir = write_tiny_bert(fresh_temp_dir("acm-mod"), [] {
    TinyBertSpec spec;
    spec.layers = 4;
    return spec;
  }());
  const auto report = skim::calibrate(
      dir, {}, tiny_texts(150), skim::CalibrateOptions().mod_capacity(0.5).mod_layers({1, 2, 3}).acm_budget(0.5).threads(1));
  EXPECT_FALSE(report.mod_layers.empty());
  EXPECT_EQ(report.acm_layers.size(), 4u);
  auto engine = skim::Engine::open(dir, skim::Options().threads(1));
  EXPECT_FALSE(engine->info().mod_blocks.empty());
  EXPECT_FALSE(engine->info().acm_layers.empty());
  const auto both = engine->classify(texts_[2]);
  const auto mod_only = skim::Engine::open(dir, skim::Options().threads(1).acm(false))->classify(texts_[2]);
  const auto acm_only = skim::Engine::open(dir, skim::Options().threads(1).mod(false))->classify(texts_[2]);
  EXPECT_LT(both.cost.flops, mod_only.cost.flops);
  EXPECT_LT(both.cost.flops, acm_only.cost.flops);
  std::ifstream in(dir / "skim.json");
  const auto j = nlohmann::json::parse(in);
  EXPECT_TRUE(j["acm"]["fit"]["with_mod"].get<bool>());
  fs::remove_all(dir);
}

TEST_F(AcmEngine, BadGatesAreNamed) {
  PackageCopy package(dir_, "acm-bad");
  const fs::path& dir = package.dir();
  const auto& j = package.original();
  auto write = [&](const nlohmann::json& value) { package.write(value); };
  auto bad = j;
  bad["acm"]["budget"] = 1.5;
  write(bad);
  expect_error([&] { skim::Engine::open(dir); }, ErrorCode::format, {"acm.budget", "outside (0, 1]"});
  bad = j;
  bad["acm"]["layers"][0]["learners"] = 65;
  write(bad);
  expect_error([&] { skim::Engine::open(dir); }, ErrorCode::format, {"acm.layers[0]", "65 learners", "width 64"});
  bad = j;
  bad["acm"]["layers"][1]["layer"] = 0;
  write(bad);
  expect_error([&] { skim::Engine::open(dir); }, ErrorCode::format, {"acm.layers[1]", "ascending"});
  bad = j;
  bad["acm"]["layers"][0]["learners"] = 5;  // the tensors hold 4
  write(bad);
  expect_error([&] { skim::Engine::open(dir); }, ErrorCode::model, {"acm.layer.0.gate.weight", "[5, 32]"});
  // Gates whose width is not the model's hidden size.
  TinyBertSpec wider;
  wider.layers = 4;
  wider.hidden = 48;
  package.replace_model(wider);
  expect_error([&] { skim::Engine::open(dir); }, ErrorCode::model, {"acm.layer.0.gate.weight", "[4, 48]"});
  // And for another model altogether.
  write(j);
  expect_error([&] { skim::Engine::open(dir); }, ErrorCode::model, {"another model"});
}

TEST_F(AcmEngine, BadBudgetsLearnersAndTooLittleDataAreClearErrors) {
  expect_error([] { skim::Options().acm_budget(1.5); }, ErrorCode::invalid_argument, {"outside (0, 1]"});
  expect_error([] { skim::CalibrateOptions().acm_budget(0); }, ErrorCode::invalid_argument, {"outside (0, 1]"});
  const fs::path out = fresh_temp_dir("acm-out");
  const auto rows = tiny_texts(150);
  expect_error([&] { skim::calibrate(dense_dir_, {}, rows, skim::CalibrateOptions().acm_budget(0.5).acm_learners(65).out(out)); },
               ErrorCode::invalid_argument, {"65 learners", "width 64"});
  expect_error([&] { skim::calibrate(dense_dir_, {}, rows, skim::CalibrateOptions().acm_budget(0.5).acm_layers({4}).out(out)); },
               ErrorCode::invalid_argument, {"ACM layer 4", "0–3"});
  expect_error([&] { skim::calibrate(dense_dir_, {}, tiny_texts(5), skim::CalibrateOptions().acm_budget(0.5).out(out)); },
               ErrorCode::invalid_argument, {"needs at least 165"});
  fs::remove_all(out);
}
