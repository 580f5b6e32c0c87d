// Trained (distilled) ACM learners for a decoder: the SwiGLU learners that
// bench/fixtures/distill_acm.py distilled for stories260K on TinyStories
// (tests/data/acm-distilled-decoder: layers 1 and 3), loaded beside a copy of
// stories260K.gguf by Engine::open and scored against that script's float64
// PyTorch (tests/reference/llama_reference.py) negative log likelihoods.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <skim/skim.hpp>
#include <string>
#include <vector>

#include "engine/router.hpp"
#include "format/safetensors.hpp"
#include "format/safetensors_writer.hpp"
#include "tensor_edit.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using skim::ErrorCode;
using skim::testing::edit_tensors;
using skim::testing::expect_error;

namespace {

const fs::path kPackage = fs::path(SKIM_TEST_DATA_DIR) / "acm-distilled-decoder";
const fs::path kModel = fs::path(SKIM_TEST_DATA_DIR) / "models" / "stories260K" / "stories260K.gguf";
const std::string kJson = "stories260K.gguf.skim.json", kTensors = "stories260K.gguf.skim.safetensors";

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

// A copy of stories260K.gguf with the distilled package beside it.
class AcmDistilledDecoder : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(skim::testing::fresh_temp_dir("acm-distilled-decoder"));
    fs::copy_file(kModel, model());
    for (const auto& name : {kJson, kTensors}) fs::copy_file(kPackage / name, *dir_ / name);
    reference_ = new nlohmann::json(read_json(kPackage / "reference.json"));
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
    delete reference_;
  }
  static fs::path model() { return *dir_ / "stories260K.gguf"; }
  static int learners() { return read_json(*dir_ / kJson)["acm"]["layers"][0]["learners"].get<int>(); }

  // Each reference case's negative log likelihood under `options` against
  // the reference's `field` (with k for the uniform ones).
  static void expect_matches(const skim::Options& options, const std::function<double(const nlohmann::json&)>& expected,
                             const std::string& what) {
    auto engine = skim::Engine::open(model(), skim::Options(options).threads(1));
    auto session = engine->session();
    ASSERT_FALSE((*reference_)["cases"].empty());
    for (const auto& c : (*reference_)["cases"]) {
      const auto s = session.score(c["text"].get<std::string>());
      ASSERT_EQ(s.tokens, c["tokens"].get<std::size_t>()) << what << ": " << c["text"];
      const double want = expected(c);
      // Per position, to 1e-4 (float32 against float64).
      EXPECT_NEAR(s.negative_log_likelihood, want, 1e-4 * static_cast<double>(s.tokens)) << what << ": " << c["text"];
    }
  }

  static fs::path* dir_;
  static nlohmann::json* reference_;
};
fs::path* AcmDistilledDecoder::dir_ = nullptr;
nlohmann::json* AcmDistilledDecoder::reference_ = nullptr;

TEST_F(AcmDistilledDecoder, ThePackageHoldsSwiGluLearners) {
  const skim::PackageModel shape{{}, skim::model_content_hash(model()), 5, 64, 172, skim::execute::acm::Activation::swiglu};
  const auto package = skim::read_package(skim::package_files(model()), shape);
  ASSERT_TRUE(package.acm.has_value());
  ASSERT_EQ(package.acm->layers.size(), 2u);
  EXPECT_EQ(package.acm->layers[0].layer, 1);
  EXPECT_EQ(package.acm->layers[1].layer, 3);
  for (const auto& l : package.acm->layers) {
    ASSERT_EQ(static_cast<int>(l.learner_weights.size()), l.learners);
    for (const auto& w : l.learner_weights) {
      const std::size_t width = w.down.size() / 64;
      EXPECT_GE(width, 1u);
      EXPECT_EQ(w.up.size(), 2 * width * 64);  // gate rows, then up rows
      EXPECT_TRUE(w.up_bias.empty());
    }
  }
  const auto engine = skim::Engine::open(model());
  EXPECT_EQ(engine->info().acm_layers, (std::vector<int>{1, 3}));
  EXPECT_EQ(engine->info().acm_learners, learners());
  EXPECT_DOUBLE_EQ(engine->info().acm_budget, (*reference_)["budget"].get<double>());
}

TEST_F(AcmDistilledDecoder, DenseMatchesPyTorch) {
  // ACM off: the reference's tokens and the dense model agree.
  expect_matches(skim::Options().acm(false), [](const auto& c) { return c["dense_nll"].template get<double>(); }, "dense");
}

TEST_F(AcmDistilledDecoder, EveryPositionAtUniformKMatchesPyTorch) {
  const int N = learners();
  for (int k = 1; k <= N; ++k)
    expect_matches(skim::Options().acm_gate(skim::AcmGate::uniform).acm_budget(double(k) / N),
                   [k](const auto& c) { return c["uniform_nll"][std::to_string(k)].template get<double>(); },
                   "uniform k " + std::to_string(k));
}

TEST_F(AcmDistilledDecoder, TheLearnedGateMatchesPyTorch) {
  // The package's own budget: its grid point, thresholds as PyTorch used them.
  expect_matches(skim::Options(), [](const auto& c) { return c["gate_nll"].template get<double>(); }, "learned gate");
}

TEST_F(AcmDistilledDecoder, BadSwiGluLearnersAreNamed) {
  const fs::path dir = skim::testing::fresh_temp_dir("acm-distilled-decoder-bad");
  fs::copy_file(kModel, dir / "stories260K.gguf");
  for (const auto& name : {kJson, kTensors}) fs::copy_file(kPackage / name, dir / name);
  const fs::path tensors = dir / kTensors;
  const auto original = skim::testing::read_file_bytes(tensors);
  auto restore = [&] { skim::testing::write_file_bytes(tensors, original); };
  auto open = [&] { skim::Engine::open(dir / "stories260K.gguf"); };
  const std::string learner = "acm.layer.1.learner.";

  // An up projection with gate rows only (a GELU learner's shape): an odd row count.
  edit_tensors(tensors, [&](auto& t, auto& bytes) {
    if (t.name == learner + "0.up.weight") {
      t.shape[0] /= 2;
      bytes.resize(bytes.size() / 2);
    }
    return true;
  });
  expect_error(open, ErrorCode::model, {kTensors, learner + "0.up.weight", "43 rows", "gate rows then its up rows"});
  restore();
  // Gate and up rows for a learner narrower than its down projection.
  edit_tensors(tensors, [&](auto& t, auto& bytes) {
    if (t.name == learner + "2.up.weight") {
      t.shape[0] -= 2;
      bytes.resize(bytes.size() - 2 * 64 * 4);  // F32
    }
    return true;
  });
  expect_error(open, ErrorCode::model, {learner + "2.down.weight", "expected [64, 42]", "learner 2 is 42 wide"});
  restore();
  // An up bias, which SwiGLU learners do not take.
  skim::format::TensorToWrite bias{learner + "1.up.bias", skim::format::DType::f32, {43}, {}};
  edit_tensors(tensors, [](auto&, auto&) { return true; }, {{bias, std::vector<std::byte>(43 * 4)}});
  expect_error(open, ErrorCode::model, {learner + "1.up.bias", "SwiGLU", "no up bias"});
  restore();
  skim::Engine::open(dir / "stories260K.gguf");  // restored: opens
  fs::remove_all(dir);
}

}  // namespace
