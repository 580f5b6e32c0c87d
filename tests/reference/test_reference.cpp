// skim against PyTorch. The fixtures hold token ids and logits written by
// tests/reference/bert_reference.py (an independent float64 BERT in torch);
// skim must produce the same ids and, per input, logits within
// max|skim − ref| / max|ref| ≤ 1e-4 with the same argmax.
//   SKIM_REFERENCE_MODEL   model directory
//   SKIM_REFERENCE_FIXTURE reference JSON (cases, batches)
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <skim/skim.hpp>

#include "engine/engine_impl.hpp"

namespace {

struct Case {
  std::string text;
  std::vector<std::int32_t> ids;
  std::vector<double> logits;
};

double relative_error(const std::vector<float>& got, const std::vector<double>& want) {
  double diff = 0, scale = 0;
  for (std::size_t j = 0; j < want.size(); ++j) {
    diff = std::max(diff, std::abs(double(got[j]) - want[j]));
    scale = std::max(scale, std::abs(want[j]));
  }
  return diff / scale;
}

std::size_t argmax(const std::vector<double>& v) { return std::max_element(v.begin(), v.end()) - v.begin(); }

class Reference : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* model = std::getenv("SKIM_REFERENCE_MODEL");
    const char* fixture = std::getenv("SKIM_REFERENCE_FIXTURE");
    ASSERT_TRUE(model && fixture) << "set SKIM_REFERENCE_MODEL and SKIM_REFERENCE_FIXTURE";
    std::ifstream in(fixture);
    ASSERT_TRUE(in) << "cannot read " << fixture;
    auto j = nlohmann::json::parse(in);
    for (const auto& c : j.at("cases"))
      cases.push_back({c.at("text"), c.at("ids").get<std::vector<std::int32_t>>(), c.at("logits").get<std::vector<double>>()});
    for (const auto& b : j.at("batches")) batches.push_back(b.get<std::vector<std::size_t>>());
    engine = skim::Engine::open(model, skim::Options().threads(2).router(false));  // the transformer itself
  }
  std::vector<Case> cases;
  std::vector<std::vector<std::size_t>> batches;
  std::shared_ptr<const skim::Engine> engine;
};

TEST_F(Reference, TokenIdsMatch) {
  ASSERT_FALSE(cases.empty());
  const auto& tok = *engine->impl().wordpiece;
  for (const auto& c : cases) EXPECT_EQ(tok.encode(c.text, engine->info().max_sequence_length).ids, c.ids) << c.text;
}

TEST_F(Reference, LogitsMatchOneByOne) {
  auto session = engine->session();
  double worst = 0;
  for (const auto& c : cases) {
    auto a = session.classify(c.text);
    const double err = relative_error(a.logits, c.logits);
    worst = std::max(worst, err);
    EXPECT_LE(err, 1e-4) << c.text;
    EXPECT_EQ(static_cast<std::size_t>(a.label_id), argmax(c.logits)) << c.text;
  }
  std::cout << cases.size() << " inputs, worst relative error " << worst << "\n";
}

TEST_F(Reference, LogitsMatchInMixedLengthBatches) {
  ASSERT_FALSE(batches.empty());
  auto session = engine->session();
  for (const auto& batch : batches) {
    std::vector<std::string> texts;
    for (auto i : batch) texts.push_back(cases.at(i).text);
    auto answers = session.classify(texts);
    for (std::size_t k = 0; k < batch.size(); ++k) {
      const auto& c = cases[batch[k]];
      EXPECT_LE(relative_error(answers[k].logits, c.logits), 1e-4) << c.text;
      EXPECT_EQ(static_cast<std::size_t>(answers[k].label_id), argmax(c.logits)) << c.text;
    }
  }
}

}  // namespace
