// Trained ACM learners ("learners": "distilled"): learners from their own
// weights, and skim running the learners and gates that
// bench/fixtures/distill_acm.py distilled for the CLINC150 model, against
// that script's float64 PyTorch outputs (tests/data/acm-distilled).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <skim/skim.hpp>
#include <string>
#include <vector>

#include "engine/router.hpp"
#include "execute/acm/adaptive_ffn.hpp"
#include "execute/acm/ffn_learners.hpp"
#include "execute/bert_encoder.hpp"
#include "format/hf_config.hpp"
#include "format/safetensors.hpp"
#include "format/safetensors_writer.hpp"
#include "package_copy.hpp"
#include "tensor_edit.hpp"
#include "test_support.hpp"

using namespace skim::execute::acm;
using skim::ErrorCode;
using skim::testing::expect_error;
namespace fs = std::filesystem;

using skim::testing::edit_tensors;
using skim::testing::random_vector;

namespace {

// Learner `w` on input x, output o, in double.
double learner_output(const FfnWeights& w, Activation activation, const float* x, int H, int o) {
  const int width = static_cast<int>(w.down.size()) / H;
  double sum = w.down_bias.empty() ? 0 : w.down_bias[o];
  for (int n = 0; n < width; ++n) {
    double a = w.up_bias.empty() ? 0 : w.up_bias[n];
    for (int j = 0; j < H; ++j) a += double(w.up[static_cast<std::size_t>(n) * H + j]) * x[j];
    if (activation == Activation::gelu) {
      a = 0.5 * a * (1 + std::erf(a / std::sqrt(2.0)));
    } else {
      double u = 0;
      for (int j = 0; j < H; ++j) u += double(w.up[static_cast<std::size_t>(n + width) * H + j]) * x[j];
      a = a / (1 + std::exp(-a)) * u;
    }
    sum += a * w.down[static_cast<std::size_t>(o) * width + n];
  }
  return sum;
}

void check_explicit(Activation activation, std::vector<int> widths, bool biases, const std::vector<int>& rows_for) {
  const int H = 24, rows = 9, parts = activation == Activation::swiglu ? 2 : 1;
  std::vector<FfnWeights> weights;
  for (std::size_t i = 0; i < widths.size(); ++i) {
    FfnWeights w;
    const std::uint32_t seed = 10 * static_cast<std::uint32_t>(i);
    w.up = random_vector(static_cast<std::size_t>(parts) * widths[i] * H, seed + 1, 0.2f);
    w.down = random_vector(static_cast<std::size_t>(H) * widths[i], seed + 2, 0.2f);
    if (biases) {
      w.up_bias = random_vector(widths[i], seed + 3, 0.1f);
      w.down_bias = random_vector(H, seed + 4, 0.1f);
    }
    weights.push_back(std::move(w));
  }
  skim::kernels::Backend backend;
  skim::kernels::Scratch scratch(backend);
  const FfnLearners learners(backend, activation, weights, H);
  ASSERT_EQ(learners.learners(), static_cast<int>(widths.size()));
  for (std::size_t i = 0; i < widths.size(); ++i) EXPECT_EQ(learners.width(static_cast<int>(i)), widths[i]);
  const std::size_t padded = static_cast<std::size_t>(skim::kernels::Linear::padded_rows(rows)) * H;
  const auto x = random_vector(padded, 7, 1.f);
  auto y = random_vector(padded, 8, 1.f);
  const auto before = y;
  std::vector<float> buffer(learners.scratch_floats(rows));
  learners(x.data(), y.data(), rows_for, scratch, buffer.data());
  for (int r = 0; r < rows; ++r) {
    int k = 0;
    while (k < learners.learners() && rows_for[k] > r) ++k;
    for (int o = 0; o < H; ++o) {
      double expect = before[static_cast<std::size_t>(r) * H + o];
      for (int i = 0; i < k; ++i) expect += learner_output(weights[i], activation, x.data() + r * H, H, o);
      ASSERT_NEAR(y[static_cast<std::size_t>(r) * H + o], expect, 1e-4 * (1 + std::abs(expect)))
          << "row " << r << " (k " << k << ") out " << o;
    }
  }
}

const fs::path kPackage = fs::path(SKIM_TEST_DATA_DIR) / "acm-distilled";
const fs::path kModel = fs::path(SKIM_SOURCE_DIR) / "examples" / "models" / "clinc150-bert";

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}

double max_abs_diff(const std::vector<float>& skim, const std::vector<double>& reference) {
  EXPECT_EQ(skim.size(), reference.size());
  double worst = 0;
  for (std::size_t i = 0; i < std::min(skim.size(), reference.size()); ++i)
    worst = std::max(worst, std::abs(double(skim[i]) - reference[i]));
  return worst;
}

// The CLINC150 model's files with the distilled package beside them.
class AcmDistilled : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = skim::testing::fresh_temp_dir("acm-distilled");
    for (const char* name : {"config.json", "model.safetensors", "vocab.txt"}) fs::copy_file(kModel / name, dir_ / name);
    for (const char* name : {"skim.json", "skim.safetensors"}) fs::copy_file(kPackage / name, dir_ / name);
    reference_ = read_json(kPackage / "reference.json");
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }

  // What one pass of the execute layer did: per adaptive layer the gate's
  // scores (rows × N) and the learners each row ran, and the logits.
  struct Pass {
    std::vector<std::vector<float>> scores;
    std::vector<std::vector<int>> k;
    std::vector<std::vector<float>> logits;  // per sequence
  };

  // The package read and packed as Engine::open does, run over `sequences`
  // as one batch with the learned gate at the package's budget.
  static Pass run_learned(const std::vector<std::vector<std::int32_t>>& sequences) {
    const auto config = skim::format::read_encoder_config(dir_ / "config.json");
    skim::kernels::Backend backend;
    const auto store = skim::format::TensorStore::open_directory(dir_);
    const skim::execute::BertEncoder encoder(config, store, backend);
    const auto package = skim::read_package(skim::package_files(dir_), {config.id2label, skim::model_content_hash(dir_),
                                                   config.num_hidden_layers, config.hidden_size, config.intermediate_size});
    EXPECT_TRUE(package.acm.has_value());
    const WidthGating gating = build_width_gating(
        *package.acm, [&](int layer) { return skim::execute::BertEncoder::ffn_weights(store, config, layer); },
        Activation::gelu, config.hidden_size, config.intermediate_size, backend, skim::kernels::WeightPrecision::f32);
    const WidthRouting routing(gating, Gate::learned);
    for (std::size_t i = 0; i < gating.layers.size(); ++i)  // the package budget is a grid point: ε exact
      EXPECT_EQ(routing.find(gating.layers[i].layer()).second->log_epsilon,
                reference_["log_epsilon"][i].get<float>());

    skim::execute::TokenBatch batch;
    batch.clear();
    for (const auto& s : sequences) batch.add(s);
    skim::execute::EncoderWorkspace ws(encoder, batch.rows(), config.max_position_embeddings, &gating);
    encoder.embed(batch, ws);
    Pass pass;
    for (int l = 0; l < config.num_hidden_layers; ++l) {
      encoder.layer_forward(l, batch, ws, skim::execute::RowSelection::every_row(), &routing);
      const auto [adaptive, rule] = routing.find(l);
      if (!adaptive) continue;
      const int N = adaptive->learners();
      const auto& s = ws.width_scratch();
      pass.scores.emplace_back(s.scores.data(), s.scores.data() + static_cast<std::size_t>(batch.rows()) * N);
      pass.k.emplace_back(s.k.begin(), s.k.begin() + batch.rows());
    }
    encoder.classify_head(batch, ws);
    for (int s = 0; s < batch.sequences(); ++s)
      pass.logits.emplace_back(ws.logits() + static_cast<std::size_t>(s) * encoder.num_labels(),
                               ws.logits() + static_cast<std::size_t>(s + 1) * encoder.num_labels());
    return pass;
  }

  // Gate scores, k after padding and logits of `pass` against the reference's.
  static void expect_matches(const Pass& pass, const nlohmann::json& layers, const std::vector<std::vector<double>>& logits,
                             const std::string& what) {
    ASSERT_EQ(pass.scores.size(), layers.size()) << what;
    for (std::size_t i = 0; i < layers.size(); ++i) {
      std::vector<double> scores;
      for (const auto& row : layers[i]["scores"])
        for (double v : row) scores.push_back(v);
      EXPECT_LE(max_abs_diff(pass.scores[i], scores), 1e-4) << what << ", layer " << layers[i]["layer"];
      EXPECT_EQ(pass.k[i], layers[i]["k_run"].get<std::vector<int>>()) << what << ", layer " << layers[i]["layer"];
    }
    ASSERT_EQ(pass.logits.size(), logits.size());
    for (std::size_t s = 0; s < logits.size(); ++s)
      EXPECT_LE(max_abs_diff(pass.logits[s], logits[s]), 1e-4) << what << ", sequence " << s;
  }

  static fs::path dir_;
  static nlohmann::json reference_;
};
fs::path AcmDistilled::dir_;
nlohmann::json AcmDistilled::reference_;

}  // namespace

TEST(AcmDistilledLearners, LearnersOfTheirOwnWidthsSumTheirOutputs) {
  // Widths that differ and sum to no FFN's; each row gets its first k learners.
  check_explicit(Activation::gelu, {3, 17, 40}, true, {9, 9, 9});
  check_explicit(Activation::gelu, {3, 17, 40}, true, {9, 6, 2});
  check_explicit(Activation::gelu, {8, 8}, false, {9, 4});
  check_explicit(Activation::swiglu, {5, 12, 7, 20}, false, {9, 9, 5, 1});
}

TEST(AcmDistilledLearners, BadWeightsAreNamed) {
  skim::kernels::Backend backend;
  std::vector<FfnWeights> weights(2);
  for (auto& w : weights) {
    w.up = random_vector(6 * 16, 1, 0.1f);
    w.down = random_vector(16 * 6, 2, 0.1f);
  }
  expect_error([&] { FfnLearners(backend, Activation::gelu, std::span<const FfnWeights>(), 16); },
               ErrorCode::invalid_argument, {"no learners"});
  weights[1].down.resize(16 * 5);
  expect_error([&] { FfnLearners(backend, Activation::gelu, weights, 16); }, ErrorCode::model,
               {"learner 1", "hidden size 16"});
  weights[1].down.resize(16 * 6);
  weights[0].down_bias.assign(15, 0.f);
  expect_error([&] { FfnLearners(backend, Activation::gelu, weights, 16); }, ErrorCode::model, {"learner 0"});
}

TEST_F(AcmDistilled, ThePackageHoldsTrainedLearners) {
  const auto j = read_json(dir_ / "skim.json");
  EXPECT_EQ(j["acm"]["learners"], "distilled");
  EXPECT_EQ(j["acm"]["gate"], "ridge_log_error");
  auto engine = skim::Engine::open(dir_, skim::Options().threads(1));
  EXPECT_EQ(engine->info().acm_layers.size(), j["acm"]["layers"].size());
  EXPECT_EQ(engine->info().acm_budget, j["acm"]["budget"].get<double>());
  // No neuron order: the learners are not a partition of the model's FFN,
  // and all of them together differ from it.
  const auto store = skim::format::TensorStore::open_file(dir_ / "skim.safetensors");
  EXPECT_EQ(store.find("acm.layer." + std::to_string(engine->info().acm_layers[0]) + ".order"), nullptr);
  const auto all = skim::Engine::open(dir_, skim::Options().threads(1).acm_gate(skim::AcmGate::uniform).acm_budget(1.0))
                       ->classify(reference_["cases"][0]["text"].get<std::string>());
  const auto dense = skim::Engine::open(dir_, skim::Options().threads(1).acm(false))
                         ->classify(reference_["cases"][0]["text"].get<std::string>());
  EXPECT_NE(all.logits, dense.logits);
}

TEST_F(AcmDistilled, EveryTokenAtUniformKMatchesPyTorch) {
  const auto& cases = reference_["cases"];
  ASSERT_GE(cases.size(), 4u);
  const int N = static_cast<int>(cases[0]["uniform_logits"].size());
  ASSERT_GE(N, 2);
  for (int k = 1; k <= N; ++k) {
    auto engine = skim::Engine::open(
        dir_, skim::Options().threads(1).acm_gate(skim::AcmGate::uniform).acm_budget(double(k) / N));
    for (const auto& c : cases) {
      const auto answer = engine->classify(c["text"].get<std::string>());
      EXPECT_EQ(answer.tokens, c["ids"].size()) << c["text"];
      const auto expect = c["uniform_logits"][std::to_string(k)].get<std::vector<double>>();
      EXPECT_LE(max_abs_diff(answer.logits, expect), 1e-4) << "k " << k << ": " << c["text"];
    }
  }
}

TEST_F(AcmDistilled, TheLearnedGateMatchesPyTorchTokenByToken) {
  // Alone: gate scores, each token's k (after skim's row padding, which the
  // reference replicates) and logits, through the execute layer and the Engine.
  auto engine = skim::Engine::open(dir_, skim::Options().threads(1));
  bool some_token_skips = false;
  for (const auto& c : reference_["cases"]) {
    const auto ids = c["ids"].get<std::vector<std::int32_t>>();
    const auto expect = c["gate"]["logits"].get<std::vector<double>>();
    expect_matches(run_learned({ids}), c["gate"]["layers"], {expect}, c["text"].get<std::string>());
    EXPECT_LE(max_abs_diff(engine->classify(c["text"].get<std::string>()).logits, expect), 1e-4) << c["text"];
    for (const auto& l : c["gate"]["layers"])
      for (int k : l["k_run"]) some_token_skips |= k < static_cast<int>(l["scores"][0].size());
  }
  EXPECT_TRUE(some_token_skips);  // the gate does decide something
}

TEST_F(AcmDistilled, TheLearnedGateOnABatchPadsRowsAsPyTorchReplicates) {
  std::vector<std::vector<std::int32_t>> sequences;
  for (const auto& c : reference_["cases"]) sequences.push_back(c["ids"].get<std::vector<std::int32_t>>());
  const auto& batch = reference_["batch"];
  bool padded = false;  // some row runs more learners than its gate asked for
  for (const auto& l : batch["layers"])
    for (std::size_t r = 0; r < l["k_run"].size(); ++r) padded |= l["k_run"][r] != l["k_gate"][r];
  EXPECT_TRUE(padded);
  expect_matches(run_learned(sequences), batch["layers"], batch["logits"].get<std::vector<std::vector<double>>>(),
                 "batch");
}

TEST_F(AcmDistilled, ReadWriteRoundTrip) {
  const skim::PackageModel model{{}, skim::model_content_hash(dir_), 4, 256, 1024};
  const auto config = skim::format::read_encoder_config(dir_ / "config.json");
  auto original = skim::read_package(skim::package_files(dir_), {config.id2label, model.hash, 4, 256, 1024});
  skim::testing::TemporaryDirectory out;
  for (const char* name : {"config.json", "model.safetensors", "vocab.txt"}) fs::copy_file(dir_ / name, out / name);
  skim::write_package(skim::package_files(out.path()), original);
  const auto again = skim::read_package(skim::package_files(out.path()), {config.id2label, model.hash, 4, 256, 1024});
  EXPECT_EQ(read_json(out / "skim.json")["acm"]["learners"], "distilled");
  ASSERT_EQ(again.acm->layers.size(), original.acm->layers.size());
  for (std::size_t i = 0; i < again.acm->layers.size(); ++i) {
    const auto &a = again.acm->layers[i], &b = original.acm->layers[i];
    ASSERT_EQ(a.learner_weights.size(), b.learner_weights.size());
    for (std::size_t j = 0; j < a.learner_weights.size(); ++j) {
      EXPECT_EQ(a.learner_weights[j].up, b.learner_weights[j].up);
      EXPECT_EQ(a.learner_weights[j].up_bias, b.learner_weights[j].up_bias);
      EXPECT_EQ(a.learner_weights[j].down, b.learner_weights[j].down);
      EXPECT_EQ(a.learner_weights[j].down_bias, b.learner_weights[j].down_bias);
    }
    EXPECT_EQ(a.gate_weight, b.gate_weight);
    EXPECT_EQ(a.corrections, b.corrections);
  }
}

TEST_F(AcmDistilled, BadPackagesAreNamed) {
  skim::testing::PackageCopy package(dir_, "acm-distilled-bad");
  const fs::path& dir = package.dir();
  const auto& j = package.original();
  const int layer = j["acm"]["layers"][0]["layer"];
  const int N = j["acm"]["layers"][0]["learners"];
  const std::string learner = "acm.layer." + std::to_string(layer) + ".learner.";
  const fs::path tensors = dir / "skim.safetensors";
  const auto original_tensors = skim::testing::read_file_bytes(tensors);
  auto restore = [&] { skim::testing::write_file_bytes(tensors, original_tensors); };
  auto open = [&] { skim::Engine::open(dir); };

  auto bad = j;
  bad["acm"]["learners"] = "trained";
  package.write(bad);
  expect_error(open, ErrorCode::format, {"skim.json", "acm.learners", "\"trained\"", "partition or distilled"});
  // More learners listed than stored, and fewer.
  bad = j;
  bad["acm"]["layers"][0]["learners"] = N + 1;
  package.write(bad);
  expect_error(open, ErrorCode::format, {"skim.safetensors", "no tensor '" + learner + std::to_string(N) + ".up.weight'"});
  bad["acm"]["layers"][0]["learners"] = N - 1;
  package.write(bad);
  expect_error(open, ErrorCode::model,
               {"skim.safetensors", learner + std::to_string(N - 1) + ".", "not one of the " + std::to_string(N - 1) + " learners"});
  package.write(j);

  // A missing tensor.
  edit_tensors(dir / "skim.safetensors", [&](auto& t, auto&) { return t.name != learner + "1.down.weight"; });
  expect_error(open, ErrorCode::format, {"skim.safetensors", "no tensor '" + learner + "1.down.weight'"});
  restore();
  // A learner whose width is not the model's hidden size.
  edit_tensors(dir / "skim.safetensors", [&](auto& t, auto& bytes) {
    if (t.name == learner + "2.up.weight") {
      t.shape = {t.shape[0] * 2, t.shape[1] / 2};
    }
    (void)bytes;
    return true;
  });
  expect_error(open, ErrorCode::model, {"skim.safetensors", learner + "2.up.weight", "[512, 128]", "hidden size is 256"});
  restore();
  // Up and down disagreeing on the learner's width.
  edit_tensors(dir / "skim.safetensors", [&](auto& t, auto& bytes) {
    if (t.name == learner + "0.down.weight") {
      t.shape[1] -= 1;
      bytes.resize(bytes.size() - static_cast<std::size_t>(t.shape[0]) * 2);  // F16
    }
    return true;
  });
  expect_error(open, ErrorCode::model, {learner + "0.down.weight", "expected [256, 256]", "learner 0 is 256 wide"});
  restore();
  // A non-finite weight.
  edit_tensors(dir / "skim.safetensors", [&](auto& t, auto& bytes) {
    if (t.name == learner + "3.up.bias") {
      const std::uint16_t inf = 0x7c00;  // F16 +inf
      std::memcpy(bytes.data() + 2 * 5, &inf, 2);
    }
    return true;
  });
  expect_error(open, ErrorCode::format, {"skim.safetensors", learner + "3.up.bias", "not finite"});
  restore();
  // A learner stored in a dtype skim does not widen here.
  edit_tensors(dir / "skim.safetensors", [&](auto& t, auto& bytes) {
    if (t.name == learner + "1.up.weight") {
      t.dtype = skim::format::DType::bf16;
    }
    (void)bytes;
    return true;
  });
  expect_error(open, ErrorCode::format, {learner + "1.up.weight", "expected F16 or F32"});
  restore();
  skim::Engine::open(dir);  // restored: opens
}
