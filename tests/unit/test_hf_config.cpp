// read_encoder_config over Hugging Face config.json files: a real-looking
// BertForSequenceClassification config reads back; each way a config can be
// wrong yields the documented error code and names the file and the field.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "format/hf_config.hpp"
#include "skim/error.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using skim::ErrorCode;
using skim::format::EncoderConfig;
using skim::format::read_encoder_config;
using namespace skim::testing;

namespace {

// config.json as transformers 4.x saves it for a fine-tuned BERT classifier.
nlohmann::json sequence_classification_config() {
  return nlohmann::json::parse(R"({
    "_name_or_path": "bert-base-uncased",
    "architectures": ["BertForSequenceClassification"],
    "attention_probs_dropout_prob": 0.1,
    "classifier_dropout": null,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "id2label": {"0": "negative", "1": "neutral", "2": "positive"},
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "label2id": {"negative": 0, "neutral": 1, "positive": 2},
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "problem_type": "single_label_classification",
    "torch_dtype": "float32",
    "transformers_version": "4.40.2",
    "type_vocab_size": 2,
    "use_cache": true,
    "vocab_size": 30522
  })");
}

// Each test starts from that config in `json`, edits it, and writes it as
// config.json in a fresh directory.
class HfConfig : public ::testing::Test {
 protected:
  fs::path path() const { return directory_ / "config.json"; }
  fs::path write_text(const std::string& text) const {
    std::ofstream(path()) << text;
    return path();
  }
  fs::path write(const nlohmann::json& config) const { return write_text(config.dump(2)); }

  nlohmann::json json = sequence_classification_config();

 private:
  TemporaryDirectory directory_;
};

// read_encoder_config(path) throws skim::Error with `code`, naming the file and
// every one of `needles`.
void expect_config_error(const fs::path& path, ErrorCode code, std::initializer_list<std::string> needles) {
  std::vector<std::string> all = {path.string()};
  all.insert(all.end(), needles);
  expect_error([&] { read_encoder_config(path); }, code, all);
}

}  // namespace

TEST_F(HfConfig, ReadsBertForSequenceClassification) {
  const EncoderConfig config = read_encoder_config(write(json));
  EXPECT_EQ(config.model_type, "bert");
  EXPECT_EQ(config.architectures, std::vector<std::string>{"BertForSequenceClassification"});
  EXPECT_EQ(config.vocab_size, 30522);
  EXPECT_EQ(config.hidden_size, 768);
  EXPECT_EQ(config.num_hidden_layers, 12);
  EXPECT_EQ(config.num_attention_heads, 12);
  EXPECT_EQ(config.intermediate_size, 3072);
  EXPECT_EQ(config.max_position_embeddings, 512);
  EXPECT_EQ(config.type_vocab_size, 2);
  EXPECT_FLOAT_EQ(config.layer_norm_eps, 1e-12f);
  EXPECT_EQ(config.hidden_act, "gelu");
  EXPECT_EQ(config.pad_token_id, 0);
  EXPECT_EQ(config.id2label, (std::vector<std::string>{"negative", "neutral", "positive"}));
  EXPECT_EQ(config.pooling, "cls");
  EXPECT_TRUE(config.has_pooler);
}

TEST_F(HfConfig, OrdersLabelsByNumericIdAndReadsSkimPooling) {
  json["id2label"] = nlohmann::json::object();
  for (int id = 0; id < 12; ++id) json["id2label"][std::to_string(id)] = "label" + std::to_string(id);
  json.erase("label2id");
  json["num_labels"] = 12;
  json["skim_pooling"] = "mean";
  const EncoderConfig config = read_encoder_config(write(json));
  ASSERT_EQ(config.id2label.size(), 12u);
  EXPECT_EQ(config.id2label[2], "label2");    // not "label10", as string order would give
  EXPECT_EQ(config.id2label[10], "label10");
  EXPECT_EQ(config.pooling, "mean");
}

TEST_F(HfConfig, BertModelWithDefaults) {
  json["architectures"] = {"BertModel"};
  for (const char* field : {"id2label", "label2id", "type_vocab_size", "layer_norm_eps", "hidden_act",
                            "pad_token_id", "position_embedding_type"}) {
    json.erase(field);
  }
  const EncoderConfig config = read_encoder_config(write(json));
  EXPECT_TRUE(config.id2label.empty());
  EXPECT_EQ(config.type_vocab_size, 2);
  EXPECT_FLOAT_EQ(config.layer_norm_eps, 1e-12f);
  EXPECT_EQ(config.hidden_act, "gelu");
  EXPECT_EQ(config.pooling, "cls");
}

TEST_F(HfConfig, NumLabelsWithoutId2LabelNamesLabelsLikeHf) {
  json.erase("id2label");
  json.erase("label2id");
  json["num_labels"] = 2;
  const EncoderConfig config = read_encoder_config(write(json));
  EXPECT_EQ(config.id2label, (std::vector<std::string>{"LABEL_0", "LABEL_1"}));
}

TEST_F(HfConfig, UnknownModelTypeIsUnsupported) {
  json["model_type"] = "gpt2";
  expect_config_error(write(json), ErrorCode::unsupported, {"model_type", "gpt2"});
}

TEST_F(HfConfig, MissingHiddenSizeIsAFormatError) {
  json.erase("hidden_size");
  expect_config_error(write(json), ErrorCode::format, {"'hidden_size'", "missing"});
}

TEST_F(HfConfig, HiddenSizeOfWrongJsonTypeIsAFormatError) {
  json["hidden_size"] = "768";
  expect_config_error(write(json), ErrorCode::format, {"'hidden_size'", "integer"});
}

TEST_F(HfConfig, Id2LabelWithGapIsAModelError) {
  json["id2label"] = {{"0", "negative"}, {"2", "positive"}};
  json.erase("label2id");
  expect_config_error(write(json), ErrorCode::model, {"'id2label'", "no id 1"});
}

TEST_F(HfConfig, Id2LabelWithNonNumericKeyIsAFormatError) {
  json["id2label"] = {{"0", "negative"}, {"one", "positive"}};
  expect_config_error(write(json), ErrorCode::format, {"'id2label'", "'one'"});
}

TEST_F(HfConfig, NumLabelsDisagreeingWithId2LabelIsAModelError) {
  json["num_labels"] = 2;
  expect_config_error(write(json), ErrorCode::model, {"'num_labels'", "3 labels"});
}

TEST_F(HfConfig, BadJsonIsAFormatError) {
  expect_config_error(write_text(R"({"model_type": "bert", "hidden_size": 768,)"), ErrorCode::format,
                      {"not valid JSON"});
}

TEST_F(HfConfig, ConfigThatIsNotAnObjectIsAFormatError) {
  expect_config_error(write_text("[]"), ErrorCode::format, {"expected an object"});
}

TEST_F(HfConfig, HeadsNotDividingHiddenSizeIsAModelError) {
  json["num_attention_heads"] = 10;
  expect_config_error(write(json), ErrorCode::model, {"hidden_size 768", "num_attention_heads 10"});
}

TEST_F(HfConfig, TanhGeluIsUnsupported) {
  json["hidden_act"] = "gelu_new";
  expect_config_error(write(json), ErrorCode::unsupported, {"'hidden_act'", "gelu_new"});
}

TEST_F(HfConfig, RelativePositionEmbeddingsAreUnsupported) {
  json["position_embedding_type"] = "relative_key";
  expect_config_error(write(json), ErrorCode::unsupported, {"'position_embedding_type'", "relative_key"});
}

TEST_F(HfConfig, UnknownSkimPoolingIsUnsupported) {
  json["skim_pooling"] = "max";
  expect_config_error(write(json), ErrorCode::unsupported, {"'skim_pooling'", "max"});
}

TEST_F(HfConfig, NonPositiveLayerCountIsAModelError) {
  json["num_hidden_layers"] = 0;
  expect_config_error(write(json), ErrorCode::model, {"'num_hidden_layers'"});
}

TEST_F(HfConfig, MissingFileIsAnIoError) {
  expect_config_error(path(), ErrorCode::io, {"No such file"});
}
