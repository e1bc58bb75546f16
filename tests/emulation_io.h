// File I/O shared by the host-emulation harnesses of the CUDA kernel bodies
// (tests/cuda_*emulation_harness.cpp): raw float64 storage in and out, NaN for "never written".
#pragma once

#include <cstdint>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace emulation {

const double kNaN = std::numeric_limits<double>::quiet_NaN();

// count float64 values from path; throws on a missing or short file.
inline std::vector<double> read_doubles(const std::string& path, int64_t count) {
  std::vector<double> v(count);
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  f.read(reinterpret_cast<char*>(v.data()), count * static_cast<int64_t>(sizeof(double)));
  if (f.gcount() != count * static_cast<int64_t>(sizeof(double))) {
    throw std::runtime_error("short read: " + path);
  }
  return v;
}

inline void write_doubles(const std::string& path, const std::vector<double>& v) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(double));
  if (!f) throw std::runtime_error("cannot write " + path);
}

}  // namespace emulation
