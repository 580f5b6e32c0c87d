// The meaning-first router end to end on the shipped CLINC150 model: a
// package from skim::calibrate, routes and costs, the failure modes the
// router must survive, and bad packages and calibration input.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>

#include "skim/skim.hpp"
#include "test_support.hpp"

namespace skim {
namespace {

namespace fs = std::filesystem;
using testing::expect_error;

const fs::path kModel = fs::path(SKIM_SOURCE_DIR) / "examples/models/clinc150-bert";
const fs::path kData = fs::path(SKIM_TEST_DATA_DIR);

// The shipped model's files, linked into a fresh directory so a test can
// write its own skim.json beside them.
void link_model(const fs::path& dir) {
  for (const char* name : {"config.json", "model.safetensors", "vocab.txt"})
    fs::create_symlink(fs::absolute(kModel / name), dir / name);
}

std::vector<LabelledText> train_rows() { return read_labelled(kData / "propose/clinc150_subset_train.tsv"); }
std::vector<LabelledText> heldout_rows() { return read_labelled(kData / "propose/clinc150_subset_heldout.tsv"); }

// ε = 10%, δ = 5% on the 500 held-out utterances: enough data to certify
// a proposer that knows 20 of the model's 150 intents.
CalibrateOptions test_options() { return CalibrateOptions().epsilon(0.1).delta(0.05).threads(2); }

// A model directory calibrated for the RouterTest suite (calibration runs
// the transformer over 500 utterances and trains the proposer: ~2 s).
CalibrationReport calibrate_certified(const fs::path& dir) {
  link_model(dir);
  return calibrate(dir, train_rows(), heldout_rows(), test_options());
}

// Where ctest keeps the suite's package (tests/CMakeLists.txt): its fixture,
// RouterPackage.CalibrationCertifiesAndWritesThePackage, writes it once per
// run, so the suite's processes (one per test) do not each calibrate again.
// Unset when the binary runs on its own: the suite then calibrates its own.
std::optional<fs::path> shared_package() {
  const char* dir = std::getenv("SKIM_ROUTER_TEST_PACKAGE");
  if (!dir) return std::nullopt;
  return fs::path(dir);
}

TEST(RouterPackage, CalibrationCertifiesAndWritesThePackage) {
  // The shared package is made in a fresh directory beside its place and
  // renamed into it once whole and checked: a reader sees all of it or none.
  const auto shared = shared_package();
  std::optional<testing::TemporaryDirectory> scratch;
  const fs::path dir = shared ? fs::path(shared->string() + ".tmp-" + std::to_string(::getpid())) : scratch.emplace().path();
  if (shared) {
    fs::remove_all(*shared);  // a failed run must not leave an old one behind
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  const CalibrationReport report = calibrate_certified(dir);
  const Certificate& c = report.certificate;
  EXPECT_TRUE(c.certified) << c.reason;
  EXPECT_EQ(c.n, 500u);
  EXPECT_LE(c.upper_bound, 0.1 + 1e-9);
  EXPECT_GT(c.coverage, 0.2);
  EXPECT_FALSE(c.data_hash.empty());
  EXPECT_NE(c.proposer_version.find("ngram-"), std::string::npos);
  EXPECT_EQ(report.skim_json, dir / "skim.json");
  EXPECT_TRUE(fs::exists(report.skim_json));
  EXPECT_TRUE(fs::exists(report.skim_safetensors));
  EXPECT_GT(report.transformer_accuracy, 0.7);  // 20% of these rows are out of scope
  EXPECT_GT(report.proposer_accuracy, 0.8);
  if (!shared) return;
  if (!HasFailure()) {
    std::error_code error;
    fs::rename(dir, *shared, error);  // fails if another run published first: theirs serves as well
    EXPECT_TRUE(fs::exists(*shared / "skim.json")) << "cannot rename " << dir << " to " << *shared << ": " << error.message();
  }
  fs::remove_all(dir);
}

// The calibrated model directory the whole suite shares: ctest's, else one
// calibrated here, once per process.
class RouterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const auto shared = shared_package();
    if (shared && fs::exists(*shared / "skim.json")) {
      dir_ = *shared;
      return;
    }
    own_dir_ = std::make_unique<testing::TemporaryDirectory>();
    dir_ = own_dir_->path();
    const Certificate c = calibrate_certified(dir_).certificate;
    ASSERT_TRUE(c.certified) << c.reason;
  }
  static void TearDownTestSuite() { own_dir_.reset(); }
  static std::shared_ptr<const Engine> open(double shadow_rate = 0.05) {
    return Engine::open(dir_, Options().threads(2).shadow_rate(shadow_rate));
  }
  static fs::path skim_json() { return dir_ / "skim.json"; }
  static fs::path skim_safetensors() { return dir_ / "skim.safetensors"; }
  static inline fs::path dir_;
  static inline std::unique_ptr<testing::TemporaryDirectory> own_dir_;  // unless ctest's
};

TEST(RouterTransformer, IsDeterministicOnRepeatedAndBatchedCalls) {
  // The gate measures disagreement against the transformer's own answers,
  // so those must not depend on when or with what else a text is run.
  auto engine = Engine::open(kModel, Options().threads(2).router(false));
  std::vector<std::string> texts;
  for (const auto& row : heldout_rows()) texts.push_back(row.text);
  texts.resize(120);
  const std::vector<Answer> batched = engine->classify(texts);
  for (std::size_t i = 0; i < texts.size(); ++i) {
    const Answer once = engine->classify(texts[i]);
    const Answer again = engine->classify(texts[i]);
    // Bit for bit: each row's GEMMs reduce in the same order whatever the
    // batch, and attention's per-thread scratch keeps its alignment.
    EXPECT_EQ(once.logits, again.logits) << texts[i];
    EXPECT_EQ(once.logits, batched[i].logits) << texts[i];
  }
}

TEST_F(RouterTest, RoutesEveryPathAndAccountsItsCost) {
  auto engine = open();
  EXPECT_EQ(engine->stats().state, GateState::normal);
  std::map<Route, int> routes;
  for (const auto& row : heldout_rows()) {
    const Answer a = engine->classify(row.text);
    ++routes[a.route];
    EXPECT_GT(a.cost.dense_flops, 0) << row.text;
    EXPECT_GT(a.cost.seconds, 0) << row.text;
    if (a.route == Route::transformer) EXPECT_DOUBLE_EQ(a.cost.flops, a.cost.dense_flops);
    if (a.route == Route::proposer && !a.shadowed) EXPECT_LT(a.cost.flops, a.cost.dense_flops / 100);
  }
  EXPECT_GT(routes[Route::proposer], 100);
  EXPECT_GT(routes[Route::transformer], 10);
  EXPECT_EQ(engine->stats().accepted, static_cast<std::uint64_t>(routes[Route::proposer]));
  // A repeat of a transformer-answered text is an exact cache hit.
  const auto& heldout = heldout_rows();
  for (const auto& row : heldout) {
    if (engine->classify(row.text).route != Route::transformer) continue;
    const Answer again = engine->classify(row.text);
    EXPECT_EQ(again.route, Route::cache);
    EXPECT_EQ(again.cost.flops, 0);
    break;
  }
  const RouterStats s = engine->stats();
  EXPECT_GE(s.calls, 501u);
  EXPECT_GE(s.cache_hits, 1u);
}

TEST_F(RouterTest, OutOfDomainInputIsNotAcceptedFromTheProposer) {
  auto engine = open();
  for (const char* text : {"xqzv kjhwq plmnb trsdf", "asdfgh jkl qwerty uiop zxcvbn", "今日は天気がいいですね",
                           "Привет, как у тебя дела сегодня?", "¿Dónde está la biblioteca más cercana?",
                           "the quantum chromodynamics of gluon plasma", "qwe"}) {
    const Answer a = engine->classify(text);
    EXPECT_NE(a.route, Route::proposer) << text;
  }
  expect_error([&] { engine->classify(""); }, ErrorCode::invalid_argument, {"empty"});
  expect_error([&] { engine->classify("   "); }, ErrorCode::invalid_argument, {"no tokens"});
  expect_error([&] { engine->classify(std::string("bad \xff utf8")); }, ErrorCode::text, {"input 0"});
}

// A package whose certificate failed for want of data: the gate accepts
// nothing and every request runs the transformer (and fills the cache).
void calibrate_uncertified(const fs::path& dir) {
  link_model(dir);
  auto heldout = heldout_rows();
  heldout.resize(60);
  calibrate(dir, train_rows(), heldout, CalibrateOptions().epsilon(0.01).threads(2));
}

TEST(RouterCache, NeverServesAMinimalEditOrAnotherTenant) {
  testing::TemporaryDirectory dir;
  calibrate_uncertified(dir.path());
  auto engine = Engine::open(dir.path(), Options().threads(2));
  const std::string on = "turn on the lights in the kitchen";
  const std::string off = "turn off the lights in the kitchen";
  const Answer first = engine->classify(on, Request().tenant("a"));
  EXPECT_EQ(first.route, Route::transformer);
  const Answer again = engine->classify(on, Request().tenant("a"));
  EXPECT_EQ(again.route, Route::cache);
  EXPECT_EQ(again.label, first.label);
  EXPECT_EQ(again.score, first.score);
  EXPECT_EQ(engine->classify("  Turn ON the   lights in the KITCHEN ", Request().tenant("a")).route,
            Route::cache);  // the same normalized text
  EXPECT_NE(engine->classify(off, Request().tenant("a")).route, Route::cache);
  EXPECT_NE(engine->classify(on, Request().tenant("b")).route, Route::cache);
}

TEST_F(RouterTest, MovieReviewsAreNotAcceptedFromAnIntentProposer) {
  // SST-2 sentences replayed into the CLINC150 model: another domain, which
  // the proposer's coverage check keeps away from the gate.
  auto engine = open(1.0);
  const auto reviews = read_labelled(kData / "router/sst2_dev.tsv");
  std::size_t accepted = 0;
  for (const auto& row : reviews) accepted += engine->classify(row.text).route == Route::proposer;
  EXPECT_LE(accepted, reviews.size() / 100);
}

TEST_F(RouterTest, ShiftToOutOfScopeRequestsAlarmsAndFallsBackToTheTransformer) {
  // CLINC150's own shift: calibrated where 20% of requests are out of scope,
  // then a stream of nothing but out-of-scope requests (real test
  // utterances), every accepted proposal shadowed (π = 1). The proposals the
  // gate still lets through disagree with the transformer far above ε, the
  // e-process crosses 1/α, and the gate then executes everything while it
  // collects a fresh calibration set.
  auto engine = open(1.0);
  const auto shifted = read_labelled(kData / "router/clinc150_oos_test.tsv");
  std::size_t i = 0;
  for (; i < shifted.size() && engine->stats().alarms == 0; ++i) engine->classify(shifted[i].text);
  const RouterStats at_alarm = engine->stats();
  ASSERT_EQ(at_alarm.alarms, 1u) << "no alarm after " << i << " requests, " << at_alarm.accepted << " accepted, "
                                 << at_alarm.shadow_disagreements << " disagreements";
  EXPECT_EQ(at_alarm.state, GateState::collecting);
  std::size_t after_alarm = 0;
  for (const char* suffix : {" please", " thanks"})
    for (const auto& row : heldout_rows()) after_alarm += engine->classify(row.text + suffix).route == Route::proposer;
  EXPECT_EQ(after_alarm, 0u);
  // 1000 fresh samples later (the window: the original calibration set's
  // size, at least 1000), the gate has recalibrated on them and answers again.
  const RouterStats back = engine->stats();
  EXPECT_EQ(back.recalibrations, 1u);
  EXPECT_GE(back.shadowed, at_alarm.shadowed);  // life-long counters survive the new certificate
  EXPECT_GT(at_alarm.shadow_disagreements, 0u);
  EXPECT_EQ(back.state, GateState::normal);
  EXPECT_TRUE(back.certificate.certified);
}

TEST(RouterCalibrate, TooLittleCalibrationDataIsUncertifiedAndRunsTheTransformer) {
  testing::TemporaryDirectory dir;
  calibrate_uncertified(dir.path());
  auto engine = Engine::open(dir.path(), Options().threads(2));
  const Certificate c = engine->stats().certificate;
  EXPECT_FALSE(c.certified);
  EXPECT_NE(c.reason.find("too little calibration data"), std::string::npos) << c.reason;
  EXPECT_EQ(engine->stats().state, GateState::collecting);
  for (const auto& row : heldout_rows()) EXPECT_EQ(engine->classify(row.text).route, Route::transformer);
}

TEST_F(RouterTest, APackageForAnotherModelOrCorruptedIsRejected) {
  testing::TemporaryDirectory dir;
  link_model(dir.path());
  fs::copy_file(skim_safetensors(), dir / "skim.safetensors");
  {
    std::ifstream in(skim_json());
    auto j = nlohmann::json::parse(in);
    j["model_hash"] = "0123456789abcdef";
    std::ofstream(dir / "skim.json") << j.dump(1);
  }
  expect_error([&] { Engine::open(dir.path()); }, ErrorCode::model, {"skim.json", "another model", "skim-calibrate"});
  // The package is read while anything in it may be used (MoD routers and ACM gates too).
  expect_error([&] { Engine::open(dir.path(), Options().router(false)); }, ErrorCode::model, {"another model"});
  expect_error([&] { Engine::open(dir.path(), Options().router(false).mod(false)); }, ErrorCode::model,
               {"another model"});
  EXPECT_NO_THROW(Engine::open(dir.path(), Options().router(false).mod(false).acm(false)));

  fs::copy_file(skim_json(), dir / "skim.json", fs::copy_options::overwrite_existing);
  auto bytes = testing::read_file_bytes(dir / "skim.safetensors");
  bytes.resize(bytes.size() / 2);
  testing::write_file_bytes(dir / "skim.safetensors", bytes);
  expect_error([&] { Engine::open(dir.path()); }, ErrorCode::format, {"skim.safetensors"});

  std::ofstream(dir / "skim.json") << "{\"format\": \"skim-package\", ";
  expect_error([&] { Engine::open(dir.path()); }, ErrorCode::format, {"skim.json"});
}

TEST_F(RouterTest, ANewProposerVoidsTheCertificate) {
  testing::TemporaryDirectory dir;
  link_model(dir.path());
  fs::copy_file(skim_safetensors(), dir / "skim.safetensors");
  std::ifstream in(skim_json());
  auto j = nlohmann::json::parse(in);
  j["rules"] = nlohmann::json::array({{{"label", "oos"}, {"keywords", {"bitcoin"}}}});
  std::ofstream(dir / "skim.json") << j.dump(1);
  auto engine = Engine::open(dir.path());
  EXPECT_FALSE(engine->stats().certificate.certified);
  EXPECT_NE(engine->stats().certificate.reason.find("void"), std::string::npos);
  EXPECT_EQ(engine->classify("how do I go about bitcoin mining").route, Route::rule);
}

TEST(RouterCalibrate, DistillationAddsTransformerLabelledUtterancesToTheProposersTraining) {
  testing::TemporaryDirectory dir;
  link_model(dir.path());
  {
    std::ofstream pool(dir / "pool.txt");
    pool << "i want to find a place to eat in san jose\n\ncan you book me a table for two at seven\r\n"
            "what time does the coffee shop open\n";
  }
  const auto report = calibrate(dir.path(), train_rows(), heldout_rows(), test_options().distill(dir / "pool.txt"));
  EXPECT_EQ(report.distill_rows, 3u);  // the blank line is skipped, nothing else
  const auto plain = calibrate(dir.path(), train_rows(), heldout_rows(), test_options());
  EXPECT_NE(report.certificate.proposer_version, plain.certificate.proposer_version);
  expect_error([&] { calibrate(dir.path(), train_rows(), heldout_rows(), test_options().distill(dir / "absent.txt")); },
               ErrorCode::io, {"absent.txt"});
}

TEST(RouterCalibrateInput, BadInputIsAClearError) {
  testing::TemporaryDirectory dir;
  link_model(dir.path());
  auto train = train_rows();
  auto calib = heldout_rows();
  calib[7].label = "no_such_intent";
  expect_error([&] { calibrate(dir.path(), train, calib, test_options()); }, ErrorCode::invalid_argument,
               {"calibration row 8", "no_such_intent"});
  expect_error([&] { calibrate(dir.path(), train, {}, test_options()); }, ErrorCode::invalid_argument,
               {"empty calibration set"});
  expect_error([&] { CalibrateOptions().epsilon(0); }, ErrorCode::invalid_argument, {"epsilon"});
  expect_error([&] { CalibrateOptions().delta(1.5); }, ErrorCode::invalid_argument, {"delta"});
  std::ofstream(dir / "rules.json") << R"([{"label": "balance", "regex": "("}])";
  expect_error([&] { calibrate(dir.path(), train, heldout_rows(), test_options().rules(dir / "rules.json")); },
               ErrorCode::format, {"rule 0", "regex"});
}

}  // namespace
}  // namespace skim
