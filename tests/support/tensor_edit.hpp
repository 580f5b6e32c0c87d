#pragma once
// Rewrites a safetensors file tensor by tensor, for tests that check how a
// loader names a bad tensor.
#include <cstddef>
#include <filesystem>
#include <functional>
#include <utility>
#include <vector>

#include "format/safetensors.hpp"
#include "format/safetensors_writer.hpp"

namespace skim::testing {

// Every tensor of `file` passes through `edit` (tensor, bytes → keep it?),
// `add` tensors are appended, and the file is written again as a skim package.
inline void edit_tensors(const std::filesystem::path& file,
                         const std::function<bool(format::TensorToWrite&, std::vector<std::byte>&)>& edit,
                         std::vector<std::pair<format::TensorToWrite, std::vector<std::byte>>> add = {}) {
  std::vector<format::TensorToWrite> tensors;
  std::vector<std::vector<std::byte>> storage;
  {
    const auto store = format::TensorStore::open_file(file);
    const auto names = store.names();
    storage.reserve(names.size() + add.size());
    for (const auto& name : names) {
      const auto* t = store.find(name);
      auto& bytes = storage.emplace_back(t->bytes.begin(), t->bytes.end());
      format::TensorToWrite w{name, t->dtype, t->shape, {}};
      if (!edit(w, bytes)) continue;
      w.bytes = bytes;
      tensors.push_back(std::move(w));
    }
    for (auto& [w, bytes] : add) {
      w.bytes = storage.emplace_back(std::move(bytes));
      tensors.push_back(w);
    }
  }
  format::write_safetensors(file, tensors, {{"format", "skim-package"}});
}

}  // namespace skim::testing
