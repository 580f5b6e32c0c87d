#pragma once
// The one place that owns the kernel libraries' global objects: the oneDNN
// CPU engine, and per-thread streams and scratchpads. Everything else in
// skim passes a Backend/Scratch along without knowing what is inside.
#include <cstddef>
#include <memory>

namespace skim::kernels {

class Backend {
 public:
  Backend();
  ~Backend();
  struct Impl;
  const Impl& impl() const noexcept { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// Per-thread execution state: a oneDNN stream and the scratchpad memory that
// GEMM primitives need (user-managed, so primitives can run concurrently
// from several sessions and nothing is allocated per call once warm).
class Scratch {
 public:
  explicit Scratch(const Backend& backend);
  ~Scratch();
  Scratch(Scratch&&) noexcept;
  Scratch& operator=(Scratch&&) noexcept;
  struct Impl;
  Impl& impl() noexcept { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// Sets the worker-thread count for oneDNN and Eigen on the calling thread
// (both run on the same OpenMP runtime); n ≤ 0 means one per core.
void set_thread_count(int n);
int hardware_threads() noexcept;

}  // namespace skim::kernels
