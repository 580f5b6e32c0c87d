#pragma once
// A copy of a calibrated model directory whose skim.json a test edits, to
// check that the Engine names what is wrong in a package.
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/router.hpp"
#include "random_bert.hpp"

namespace skim::testing {

class PackageCopy {
 public:
  PackageCopy(const std::filesystem::path& calibrated, const std::string& name) : dir_(fresh_temp_dir(name)) {
    for (const auto& entry : std::filesystem::directory_iterator(calibrated))
      std::filesystem::copy_file(entry.path(), dir_ / entry.path().filename());
    std::ifstream in(dir_ / "skim.json");
    original_ = nlohmann::json::parse(in);
  }
  ~PackageCopy() {
    std::filesystem::remove_all(dir_);
    if (!other_.empty()) std::filesystem::remove_all(other_);
  }
  PackageCopy(const PackageCopy&) = delete;
  PackageCopy& operator=(const PackageCopy&) = delete;

  const std::filesystem::path& dir() const noexcept { return dir_; }
  // skim.json as calibrated.
  const nlohmann::json& original() const noexcept { return original_; }
  void write(const nlohmann::json& value) const { std::ofstream(dir_ / "skim.json") << value.dump(); }
  // Puts another model's files in place of the calibrated one's and writes
  // skim.json as calibrated but stamped with that model's hash, so what
  // fails is the package's shape, not its hash. Returns that skim.json.
  nlohmann::json replace_model(const TinyBertSpec& spec) {
    other_ = write_tiny_bert(fresh_temp_dir(dir_.filename().string() + "-other"), spec);
    for (const char* name : {"config.json", "model.safetensors", "vocab.txt"})
      std::filesystem::copy_file(other_ / name, dir_ / name, std::filesystem::copy_options::overwrite_existing);
    nlohmann::json stamped = original_;
    stamped["model_hash"] = model_content_hash(dir_);
    write(stamped);
    return stamped;
  }

 private:
  std::filesystem::path dir_, other_;
  nlohmann::json original_;
};

}  // namespace skim::testing
