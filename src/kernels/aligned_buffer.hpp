#pragma once
// A heap array aligned for AVX-512 loads and zero-initialised (zeroed pad rows
// keep GEMMs over rounded-up row counts free of garbage and denormals).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <span>
#include <utility>

#include <sys/mman.h>

namespace skim::kernels {

template <typename T>
class AlignedBuffer {
 public:
  static constexpr std::size_t alignment = 64;
  AlignedBuffer() = default;
  explicit AlignedBuffer(std::size_t n) { resize(n); }
  ~AlignedBuffer() { release(); }
  AlignedBuffer(AlignedBuffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)),
        mapping_(std::exchange(o.mapping_, nullptr)), mapped_bytes_(std::exchange(o.mapped_bytes_, 0)) {}
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(size_, o.size_);
    std::swap(mapping_, o.mapping_);
    std::swap(mapped_bytes_, o.mapped_bytes_);
    return *this;
  }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  // Discards the contents; the new array is zeroed.
  void resize(std::size_t n) {
    release();
    if (n == 0) return;
    std::size_t bytes = (n * sizeof(T) + alignment - 1) / alignment * alignment;
    data_ = static_cast<T*>(std::aligned_alloc(alignment, bytes));
    if (!data_) throw std::bad_alloc();
    std::memset(static_cast<void*>(data_), 0, bytes);
    size_ = n;
  }

  // For weights streamed on every token: large arrays get fresh pages of
  // their own, 2 MiB aligned, with the kernel asked for transparent huge
  // pages before the first touch maps them. With 4 KiB pages TLB misses cap a
  // streaming read at about half the memory bandwidth (31 vs 56 GB/s on 2
  // threads here). Heap memory will not do: recycled heap pages are already
  // mapped small.
  void resize_for_streaming(std::size_t n) {
    constexpr std::size_t huge_page = std::size_t{2} << 20;
    const std::size_t bytes = n * sizeof(T);
    if (bytes < huge_page) return resize(n);
    release();
    const std::size_t length = (bytes + huge_page - 1) / huge_page * huge_page + huge_page;
    void* map = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED) throw std::bad_alloc();
    mapping_ = map;
    mapped_bytes_ = length;
    const auto address = reinterpret_cast<std::uintptr_t>(map);
    data_ = reinterpret_cast<T*>((address + huge_page - 1) / huge_page * huge_page);
    ::madvise(data_, length - huge_page, MADV_HUGEPAGE);  // advice only: fine where THP is off
    size_ = n;  // anonymous pages read as zero
  }
  // Grows (never shrinks); returns true if it reallocated.
  bool reserve(std::size_t n) {
    if (n <= size_) return false;
    resize(n);
    return true;
  }

  T* data() noexcept { return data_; }
  const T* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  std::span<T> span() noexcept { return {data_, size_}; }
  T& operator[](std::size_t i) noexcept { return data_[i]; }
  const T& operator[](std::size_t i) const noexcept { return data_[i]; }

 private:
  void release() noexcept {
    if (mapping_)
      ::munmap(mapping_, mapped_bytes_);
    else
      std::free(data_);
    data_ = nullptr;
    size_ = 0;
    mapping_ = nullptr;
    mapped_bytes_ = 0;
  }

  T* data_ = nullptr;
  std::size_t size_ = 0;
  void* mapping_ = nullptr;  // set when the array has pages of its own
  std::size_t mapped_bytes_ = 0;
};

}  // namespace skim::kernels
