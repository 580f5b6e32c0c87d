#include "format/tensor_source.hpp"

#include "skim/error.hpp"

namespace skim::format {

TensorSource::~TensorSource() = default;

const TensorView& TensorSource::require(const std::string& name,
                                        const std::vector<std::int64_t>& shape) const {
  const TensorView* view = find(name);
  if (view == nullptr) {
    throw Error(ErrorCode::model, "tensor '" + name + "' not found in " + source());
  }
  if (view->shape != shape) {
    throw Error(ErrorCode::model, view->file + ": tensor '" + name + "' has shape " +
                                      view->shape_string() + " but " + shape_string(shape) +
                                      " was expected");
  }
  return *view;
}

}  // namespace skim::format
