// A decoder's package from skim::calibrate_text (stories260K on TinyStories
// documents): adaptive FFNs (ACM, SwiGLU) and post-hoc Mixture-of-Depths
// routers written beside a single-file model, loaded by Engine::open and used
// by score(); with every learner, or with ACM off, the dense decoder's
// results; a package for another model, an encoder, a native checkpoint and
// empty requests refused with clear errors.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <skim/skim.hpp>

#include "engine/engine_impl.hpp"
#include "engine/router.hpp"
#include "random_bert.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using skim::ErrorCode;
using namespace skim::testing;

namespace {

const fs::path data = SKIM_TEST_DATA_DIR;
const fs::path stories = data / "models" / "stories260K";

// The first 60 documents fit, the last 20 are held out.
struct Documents {
  std::vector<std::string> fit, held_out;
};
const Documents& documents() {
  static const Documents d = [] {
    const auto all = skim::read_documents(data / "tinystories" / "valid_first100.txt");
    Documents out;
    out.fit.assign(all.begin(), all.begin() + 60);
    out.held_out.assign(all.begin() + 80, all.end());
    return out;
  }();
  return d;
}

// Copies of stories260K calibrated on first use, once per test process
// (each test runs in its own): stories260K.gguf with ACM gates at budget
// 0.6; stories260K.bin (and its tokenizer) with MoD routers in layers 1–3 at
// capacity 0.75 and ACM gates at 0.8 with refitted prefixes, fitted on the
// routed model.
class AcmDecoder : public ::testing::Test {
 protected:
  static void TearDownTestSuite() {
    if (dir_) fs::remove_all(*dir_);
    delete dir_;
    dir_ = nullptr;
  }
  static const fs::path& dir() {
    if (!dir_) dir_ = new fs::path(fresh_temp_dir("AcmDecoder"));
    return *dir_;
  }
  static fs::path gguf() {
    static const fs::path model = [] {
      const fs::path m = dir() / "stories260K.gguf";
      fs::copy_file(stories / "stories260K.gguf", m);
      skim::calibrate_text(m, documents().fit, skim::CalibrateOptions().acm_budget(0.6).threads(2));
      return m;
    }();
    return model;
  }
  static fs::path bin() {
    static const fs::path model = [] {
      const fs::path m = dir() / "stories260K.bin";
      fs::copy_file(stories / "stories260K.bin", m);
      fs::copy_file(stories / "tok512.bin", dir() / "tok512.bin");
      skim::calibrate_text(m, documents().fit,
                           skim::CalibrateOptions().mod_capacity(0.75).mod_layers({1, 2, 3}).acm_budget(0.8).acm_refit(true).threads(2));
      return m;
    }();
    return model;
  }

  static skim::Perplexity held_out(const fs::path& model, const skim::Options& options) {
    auto engine = skim::Engine::open(model, skim::Options(options).threads(2));
    return engine->session().perplexity(documents().held_out);
  }

  static fs::path* dir_;
};
fs::path* AcmDecoder::dir_ = nullptr;

TEST_F(AcmDecoder, EveryLearnerOrAcmOffIsTheDenseDecoder) {
  const fs::path model = gguf();
  const auto dense = held_out(stories / "stories260K.gguf", skim::Options());  // no package there
  const auto off = held_out(model, skim::Options().acm(false));
  EXPECT_EQ(off.negative_log_likelihood, dense.negative_log_likelihood);
  EXPECT_EQ(off.cost.flops, dense.cost.flops);
  // Every learner: the FFN as a sum over its neuron groups, equal up to rounding.
  const auto whole = held_out(gguf(), skim::Options().acm_gate(skim::AcmGate::uniform).acm_budget(1));
  EXPECT_NEAR(whole.negative_log_likelihood, dense.negative_log_likelihood, 1e-5 * dense.negative_log_likelihood);
  EXPECT_DOUBLE_EQ(whole.cost.ffn_flops, dense.cost.dense_ffn_flops);
  EXPECT_GT(dense.cost.dense_ffn_flops, 0);
  EXPECT_EQ(dense.cost.ffn_flops, dense.cost.dense_ffn_flops);
}

TEST_F(AcmDecoder, PackageBesideTheFileSavesFfnFlopsOnHeldOutDocuments) {
  const fs::path model = gguf();
  EXPECT_TRUE(fs::exists(dir() / "stories260K.gguf.skim.json"));
  EXPECT_TRUE(fs::exists(dir() / "stories260K.gguf.skim.safetensors"));
  const auto engine = skim::Engine::open(model);
  EXPECT_EQ(engine->info().acm_layers, (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_EQ(engine->info().acm_learners, 4);  // FFN width 172 / 256, at least 4
  EXPECT_DOUBLE_EQ(engine->info().acm_budget, 0.6);
  EXPECT_TRUE(engine->info().mod_blocks.empty());

  const auto dense = held_out(gguf(), skim::Options().acm(false));
  const auto adaptive = held_out(gguf(), skim::Options());
  const double share = adaptive.cost.ffn_flops / adaptive.cost.dense_ffn_flops;
  // The gates were fitted to use 60% of the width on the fitting documents;
  // on held-out ones the share stays near (gate FLOPs included).
  EXPECT_GT(share, 0.45);
  EXPECT_LT(share, 0.8);
  EXPECT_LT(adaptive.cost.flops, dense.cost.flops);
  EXPECT_EQ(adaptive.cost.dense_flops, dense.cost.dense_flops);
  // Less width costs quality (stories260K's narrow FFNs use every neuron;
  // bench/acm/README.md has the curve), but it stays finite.
  EXPECT_TRUE(std::isfinite(adaptive.perplexity));
  EXPECT_GT(adaptive.perplexity, dense.perplexity);
  // A wider budget at run time spends more and loses less.
  const auto wider = held_out(gguf(), skim::Options().acm_budget(0.9));
  EXPECT_GT(wider.cost.ffn_flops, adaptive.cost.ffn_flops);
  EXPECT_LT(wider.perplexity, adaptive.perplexity);
}

TEST_F(AcmDecoder, ModRoutersAndAcmGatesTogether) {
  const auto engine = skim::Engine::open(bin());
  // Capacity 0.75 is the mean over layers 1–3, allocated greedily by measured
  // sensitivity: a block left whole is not routed, the others run below 0.75
  // to make up for it.
  const auto& blocks = engine->info().mod_blocks;
  ASSERT_FALSE(blocks.empty());
  double capacity_sum = 3.0 - static_cast<double>(blocks.size());  // blocks left whole
  for (const auto& block : blocks) {
    EXPECT_TRUE(block.layer >= 1 && block.layer <= 3) << block.layer;
    EXPECT_LT(block.capacity, 1.0);
    capacity_sum += block.capacity;
  }
  EXPECT_NEAR(capacity_sum / 3, 0.75, 1e-9);
  // The report holds each eligible block's measured sensitivity, rising as its capacity falls.
  {
    std::ifstream in(dir() / "stories260K.bin.skim.json");
    const auto allocation = nlohmann::json::parse(in)["mod"]["fit"]["allocation"];
    ASSERT_EQ(allocation.size(), 3u);
    for (const auto& block : allocation) {
      const auto& levels = block["sensitivity"];
      EXPECT_EQ(levels.front()["output_change"].get<double>(), 0.0);
      EXPECT_GT(levels.back()["output_change"].get<double>(), levels[1]["output_change"].get<double>());
      EXPECT_GT(levels.back()["flops_saved_share"].get<double>(), levels[1]["flops_saved_share"].get<double>());
    }
  }
  EXPECT_EQ(engine->info().acm_layers.size(), 5u);
  const auto dense = held_out(bin(), skim::Options().mod(false).acm(false));
  const auto routed = held_out(bin(), skim::Options().acm(false));
  const auto both = held_out(bin(), skim::Options());
  EXPECT_LT(routed.cost.flops, dense.cost.flops);
  EXPECT_LT(both.cost.flops, routed.cost.flops);
  EXPECT_LT(both.cost.ffn_flops, routed.cost.ffn_flops);
  EXPECT_TRUE(std::isfinite(both.perplexity));
  // Refitted prefixes: the package says so, and every learner is still the FFN.
  std::ifstream in(dir() / "stories260K.bin.skim.json");
  EXPECT_EQ(nlohmann::json::parse(in)["acm"]["down_projection"], "least_squares_refit");
  const auto whole = held_out(bin(), skim::Options().acm_gate(skim::AcmGate::uniform).acm_budget(1));
  EXPECT_NEAR(whole.negative_log_likelihood, routed.negative_log_likelihood, 1e-5 * routed.negative_log_likelihood);
  // The decoder's causal thresholds were fitted for the package's capacity.
  expect_error([&] { skim::Engine::open(bin(), skim::Options().mod_capacity(0.5)); }, ErrorCode::unsupported,
               {"stories260K.bin.skim.json", "mod_capacity"});
}

TEST_F(AcmDecoder, PackageForAnotherModelIsRefused) {
  TemporaryDirectory other;
  // The .gguf's package beside a copy of the .bin: the hash names the mismatch.
  gguf();
  fs::copy_file(stories / "stories260K.bin", other / "stories260K.bin");
  fs::copy_file(stories / "tok512.bin", other / "tok512.bin");
  fs::copy_file(dir() / "stories260K.gguf.skim.json", other / "stories260K.bin.skim.json");
  fs::copy_file(dir() / "stories260K.gguf.skim.safetensors", other / "stories260K.bin.skim.safetensors");
  expect_error([&] { skim::Engine::open(other / "stories260K.bin"); }, ErrorCode::model,
               {"stories260K.bin.skim.json", "another model", "skim-calibrate"});
  // Options::acm and mod off: the package is not read at all.
  EXPECT_NO_THROW(skim::Engine::open(other / "stories260K.bin", skim::Options().acm(false).mod(false)));
}

TEST_F(AcmDecoder, CalibrateTextRefusesWhatItCannotFit) {
  TemporaryDirectory out;
  const fs::path gguf = stories / "stories260K.gguf";
  const auto& docs = documents().fit;
  const auto acm = skim::CalibrateOptions().acm_budget(0.5).out(out.path());
  expect_error([&] { skim::calibrate_text(gguf, docs, skim::CalibrateOptions().out(out.path())); },
               ErrorCode::invalid_argument, {"mod_capacity", "acm_budget"});
  expect_error([&] { skim::calibrate_text(gguf, {}, acm); }, ErrorCode::invalid_argument, {"no calibration documents"});
  expect_error([&] { skim::calibrate_text(data / "models" / "stories-mod-native", docs, acm); },
               ErrorCode::invalid_argument, {"native Mixture-of-Depths"});
  expect_error([&] { skim::calibrate_text(gguf, docs, skim::CalibrateOptions(acm).mod_flops(0.5)); },
               ErrorCode::invalid_argument, {"mod_flops", "decoders"});
  expect_error([&] { skim::calibrate_text(gguf, docs, skim::CalibrateOptions(acm).acm_learners(173)); },
               ErrorCode::invalid_argument, {"173 learners", "172"});
  expect_error([&] { skim::calibrate_text(gguf, std::span(docs).first(1), acm); }, ErrorCode::invalid_argument,
               {"tokens", "needs at least"});
  const fs::path encoder = write_tiny_bert(out / "encoder");
  expect_error([&] { skim::calibrate_text(encoder, docs, acm); }, ErrorCode::invalid_argument, {"encoder"});
  EXPECT_FALSE(fs::exists(out / "stories260K.gguf.skim.json"));  // nothing written by a refused call
}

}  // namespace
