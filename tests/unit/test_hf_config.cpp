// read_encoder_config over Hugging Face config.json files: a real-looking
// BertForSequenceClassification config reads back; each way a config can be
// wrong yields the documented error code and names the file and the field.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <string>

#include <nlohmann/json.hpp>

#include "format/hf_config.hpp"
#include "skim/error.hpp"

namespace fs = std::filesystem;
using skim::Error;
using skim::ErrorCode;
using skim::format::EncoderConfig;
using skim::format::read_encoder_config;

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

class ConfigFile {
 public:
  ConfigFile() {
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    static int counter = 0;
    directory_ = fs::temp_directory_path() /
                 ("skim_config_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" +
                  (test != nullptr ? test->name() : "test"));
    fs::remove_all(directory_);
    fs::create_directories(directory_);
  }
  ~ConfigFile() {
    std::error_code ignored;
    fs::remove_all(directory_, ignored);
  }
  fs::path write_text(const std::string& text) const {
    const fs::path path = directory_ / "config.json";
    std::ofstream(path) << text;
    return path;
  }
  fs::path write(const nlohmann::json& config) const { return write_text(config.dump(2)); }
  fs::path path() const { return directory_ / "config.json"; }

 private:
  fs::path directory_;
};

void expect_config_error(const fs::path& path, ErrorCode code, std::initializer_list<std::string> needles) {
  try {
    read_encoder_config(path);
  } catch (const Error& error) {
    EXPECT_EQ(error.code(), code) << "code " << skim::to_string(error.code()) << ": " << error.what();
    EXPECT_NE(std::string(error.what()).find(path.string()), std::string::npos)
        << "message lacks the path: " << error.what();
    for (const std::string& needle : needles) {
      EXPECT_NE(std::string(error.what()).find(needle), std::string::npos)
          << "message lacks \"" << needle << "\": " << error.what();
    }
    return;
  }
  ADD_FAILURE() << "no skim::Error thrown (expected " << skim::to_string(code) << ")";
}

}  // namespace

TEST(HfConfig, ReadsBertForSequenceClassification) {
  ConfigFile file;
  const EncoderConfig config = read_encoder_config(file.write(sequence_classification_config()));
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

TEST(HfConfig, OrdersLabelsByNumericIdAndReadsSkimPooling) {
  ConfigFile file;
  nlohmann::json json = sequence_classification_config();
  json["id2label"] = nlohmann::json::object();
  for (int id = 0; id < 12; ++id) json["id2label"][std::to_string(id)] = "label" + std::to_string(id);
  json.erase("label2id");
  json["num_labels"] = 12;
  json["skim_pooling"] = "mean";
  const EncoderConfig config = read_encoder_config(file.write(json));
  ASSERT_EQ(config.id2label.size(), 12u);
  EXPECT_EQ(config.id2label[2], "label2");    // not "label10", as string order would give
  EXPECT_EQ(config.id2label[10], "label10");
  EXPECT_EQ(config.pooling, "mean");
}

TEST(HfConfig, BertModelWithDefaults) {
  ConfigFile file;
  nlohmann::json json = sequence_classification_config();
  json["architectures"] = {"BertModel"};
  for (const char* field : {"id2label", "label2id", "type_vocab_size", "layer_norm_eps", "hidden_act",
                            "pad_token_id", "position_embedding_type"}) {
    json.erase(field);
  }
  const EncoderConfig config = read_encoder_config(file.write(json));
  EXPECT_TRUE(config.id2label.empty());
  EXPECT_EQ(config.type_vocab_size, 2);
  EXPECT_FLOAT_EQ(config.layer_norm_eps, 1e-12f);
  EXPECT_EQ(config.hidden_act, "gelu");
  EXPECT_EQ(config.pooling, "cls");
}

TEST(HfConfig, NumLabelsWithoutId2LabelNamesLabelsLikeHf) {
  ConfigFile file;
  nlohmann::json json = sequence_classification_config();
  json.erase("id2label");
  json.erase("label2id");
  json["num_labels"] = 2;
  const EncoderConfig config = read_encoder_config(file.write(json));
  EXPECT_EQ(config.id2label, (std::vector<std::string>{"LABEL_0", "LABEL_1"}));
}

TEST(HfConfig, UnknownModelTypeIsUnsupported) {
  ConfigFile file;
  nlohmann::json json = sequence_classification_config();
  json["model_type"] = "gpt2";
  expect_config_error(file.write(json), ErrorCode::unsupported, {"model_type", "gpt2"});
}

TEST(HfConfig, MissingHiddenSizeIsAFormatError) {
  ConfigFile file;
  nlohmann::json json = sequence_classification_config();
  json.erase("hidden_size");
  expect_config_error(file.write(json), ErrorCode::format, {"'hidden_size'", "missing"});
}

TEST(HfConfig, HiddenSizeOfWrongJsonTypeIsAFormatError) {
  ConfigFile file;
  nlohmann::json json = sequence_classification_config();
  json["hidden_size"] = "768";
  expect_config_error(file.write(json), ErrorCode::format, {"'hidden_size'", "integer"});
}

TEST(HfConfig, Id2LabelWithGapIsAModelError) {
  ConfigFile file;
  nlohmann::json json = sequence_classification_config();
  json["id2label"] = {{"0", "negative"}, {"2", "positive"}};
  json.erase("label2id");
  expect_config_error(file.write(json), ErrorCode::model, {"'id2label'", "no id 1"});
}

TEST(HfConfig, Id2LabelWithNonNumericKeyIsAFormatError) {
  ConfigFile file;
  nlohmann::json json = sequence_classification_config();
  json["id2label"] = {{"0", "negative"}, {"one", "positive"}};
  expect_config_error(file.write(json), ErrorCode::format, {"'id2label'", "'one'"});
}

TEST(HfConfig, NumLabelsDisagreeingWithId2LabelIsAModelError) {
  ConfigFile file;
  nlohmann::json json = sequence_classification_config();
  json["num_labels"] = 2;
  expect_config_error(file.write(json), ErrorCode::model, {"'num_labels'", "3 labels"});
}

TEST(HfConfig, BadJsonIsAFormatError) {
  ConfigFile file;
  expect_config_error(file.write_text(R"({"model_type": "bert", "hidden_size": 768,)"), ErrorCode::format,
                      {"not valid JSON"});
}

TEST(HfConfig, ConfigThatIsNotAnObjectIsAFormatError) {
  ConfigFile file;
  expect_config_error(file.write_text("[]"), ErrorCode::format, {"expected an object"});
}

TEST(HfConfig, HeadsNotDividingHiddenSizeIsAModelError) {
  ConfigFile file;
  nlohmann::json json = sequence_classification_config();
  json["num_attention_heads"] = 10;
  expect_config_error(file.write(json), ErrorCode::model, {"hidden_size 768", "num_attention_heads 10"});
}

TEST(HfConfig, TanhGeluIsUnsupported) {
  ConfigFile file;
  nlohmann::json json = sequence_classification_config();
  json["hidden_act"] = "gelu_new";
  expect_config_error(file.write(json), ErrorCode::unsupported, {"'hidden_act'", "gelu_new"});
}

TEST(HfConfig, RelativePositionEmbeddingsAreUnsupported) {
  ConfigFile file;
  nlohmann::json json = sequence_classification_config();
  json["position_embedding_type"] = "relative_key";
  expect_config_error(file.write(json), ErrorCode::unsupported, {"'position_embedding_type'", "relative_key"});
}

TEST(HfConfig, UnknownSkimPoolingIsUnsupported) {
  ConfigFile file;
  nlohmann::json json = sequence_classification_config();
  json["skim_pooling"] = "max";
  expect_config_error(file.write(json), ErrorCode::unsupported, {"'skim_pooling'", "max"});
}

TEST(HfConfig, NonPositiveLayerCountIsAModelError) {
  ConfigFile file;
  nlohmann::json json = sequence_classification_config();
  json["num_hidden_layers"] = 0;
  expect_config_error(file.write(json), ErrorCode::model, {"'num_hidden_layers'"});
}

TEST(HfConfig, MissingFileIsAnIoError) {
  ConfigFile file;
  expect_config_error(file.path(), ErrorCode::io, {"No such file"});
}
