#include "kernels/backend.hpp"

#include <omp.h>

#include <thread>

#include "kernels/dnnl_backend.hpp"

namespace skim::kernels {

Backend::Backend() : impl_(std::make_unique<Impl>()) {}
Backend::~Backend() = default;

Scratch::Scratch(const Backend& backend) : impl_(std::make_unique<Impl>(backend.impl().engine)) {}
Scratch::~Scratch() = default;
Scratch::Scratch(Scratch&&) noexcept = default;
Scratch& Scratch::operator=(Scratch&&) noexcept = default;

int hardware_threads() noexcept {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

void set_thread_count(int n) {
  // oneDNN (built on OpenMP in Debian) and Eigen (compiled with -fopenmp)
  // both read this thread's OpenMP team size, so one call covers both.
  omp_set_num_threads(n > 0 ? n : hardware_threads());
}

}  // namespace skim::kernels
