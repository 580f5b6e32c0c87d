#pragma once
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "format/mapped_file.hpp"
#include "format/tensor.hpp"
#include "format/tensor_source.hpp"

namespace skim::format {

// One .safetensors file: 8-byte little-endian header length, a JSON header,
// then the data section. Every check the format allows is made at open time
// (header bounds, JSON, dtypes, shape × dtype = byte range, ranges inside the
// data section, no overlaps), so a TensorView handed out is always in bounds.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::filesystem::path& path);  // throws skim::Error

  const std::string& path() const noexcept { return file_.path(); }
  const std::vector<TensorView>& tensors() const noexcept { return tensors_; }
  const TensorView* find(const std::string& name) const noexcept;
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }

 private:
  MappedFile file_;
  std::vector<TensorView> tensors_;  // in data-section order
  std::map<std::string, std::size_t> index_by_name_;  // name → position in tensors_
  std::map<std::string, std::string> metadata_;
};

// All tensors of a checkpoint: `model.safetensors`, or the shards listed by
// `model.safetensors.index.json` (weight_map: tensor name → shard file).
// require() (from TensorSource) names the tensor and the directory or file.
class TensorStore : public TensorSource {
 public:
  static TensorStore open_directory(const std::filesystem::path& dir);  // throws
  static TensorStore open_file(const std::filesystem::path& file);      // throws

  const TensorView* find(const std::string& name) const noexcept override;
  std::vector<std::string> names() const override;
  const std::string& source() const noexcept override { return source_; }

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> by_name_;
  std::string source_;  // directory or file path, for messages
};

}  // namespace skim::format
