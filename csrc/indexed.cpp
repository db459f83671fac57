// Megatron-compatible indexed dataset: the .bin writer, the .idx writer and the index validator.
//
// File format (byte-compatible with megatron/core/datasets/indexed_dataset.py, DESIGN.md §3):
//
//   PREFIX.idx, little-endian, no padding:
//     offset 0   char[9]   magic "MMIDIDX\0\0"
//     offset 9   uint64    version, always 1
//     offset 17  uint8     dtype code of the tokens in .bin: uint8=1 int8=2 int16=3 int32=4
//                          int64=5 float64=6 float32=7 uint16=8
//     offset 18  uint64    S, sequence count
//     offset 26  uint64    D, document count (entries of the document index, = documents + 1)
//     offset 34  int32[S]  sequence lengths in tokens
//                int64[S]  byte offset of each sequence in .bin (0, then running sum of
//                          length * itemsize: sequences are contiguous and in order)
//                int64[D]  document index: sequence ids where documents start, 0 first and S last
//                (int8[S]  sequence modes, only in Megatron's multimodal files)
//   PREFIX.bin: the token arrays of all sequences back to back, dtype given by the code.
//
// The Python wrapper (megacode/data/indexed.py) owns file names (temporaries, renames), the
// memory maps and the error class; this file does the loops that touch every token or entry,
// with the GIL released. Index arrays may start at unaligned offsets (34 is not a multiple of
// 4 or 8), so they are read through memcpy.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace py = pybind11;

namespace {

constexpr char kMagic[9] = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
constexpr uint64_t kVersion = 1;

// dtypes compared by type number, not identity: arrays unpickled in another process carry
// their own dtype object.
inline bool same_dtype(const py::dtype& a, const py::dtype& b) { return a.num() == b.num(); }

// Itemsize of a Megatron dtype code, 0 for an unknown code.
size_t itemsize_of(int code) {
  switch (code) {
    case 1: case 2: return 1;
    case 3: case 8: return 2;
    case 4: case 7: return 4;
    case 5: case 6: return 8;
    default: return 0;
  }
}

template <typename T>
T load(const char* base, int64_t i) {
  T v;
  std::memcpy(&v, base + i * static_cast<int64_t>(sizeof(T)), sizeof(T));
  return v;
}

// Converts int32/int64 tokens to the dataset dtype T, refusing values T cannot hold (a uint16
// dataset given a token id >= 65536 would otherwise wrap silently into a wrong token).
template <typename T, typename Src>
bool convert_checked(const Src* src, T* dst, int64_t n, int64_t* bad_pos) {
  const int64_t lo = static_cast<int64_t>(std::numeric_limits<T>::min());
  const int64_t hi = static_cast<int64_t>(std::numeric_limits<T>::max());
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = static_cast<int64_t>(src[i]);
    if (v < lo || v > hi) { *bad_pos = i; return false; }
    dst[i] = static_cast<T>(v);
  }
  return true;
}

// Streams tokens into PREFIX.bin (under whatever name the wrapper chose) and keeps the
// per-sequence lengths for the .idx written at the end.
class BinWriter {
 public:
  BinWriter(const std::string& path, int code) : path_(path), code_(code), itemsize_(itemsize_of(code)) {
    if (itemsize_ == 0 || code == 6 || code == 7)
      throw std::invalid_argument("token dtype code " + std::to_string(code) + " is not an integer dtype");
    file_ = std::fopen(path.c_str(), "wb");
    if (!file_) throw std::runtime_error(path + ": cannot open for writing: " + std::strerror(errno));
  }
  ~BinWriter() { if (file_) std::fclose(file_); }

  // tokens: [sum(lengths)] in the dataset dtype, int32 or int64; lengths: [n] int64, one per sequence.
  void add(py::array tokens, py::array_t<int64_t, py::array::c_style | py::array::forcecast> lengths) {
    if (!file_) throw std::runtime_error(path_ + ": writer already closed");
    if (tokens.ndim() != 1) throw std::invalid_argument("tokens must be 1-D, got ndim=" + std::to_string(tokens.ndim()));
    if (!(tokens.flags() & py::array::c_style)) throw std::invalid_argument("tokens must be contiguous");
    const int64_t n_tok = tokens.shape(0);
    const int64_t n_seq = lengths.shape(0);
    const int64_t* len = lengths.data();
    int64_t total = 0;
    for (int64_t i = 0; i < n_seq; ++i) {
      if (len[i] < 0 || len[i] > std::numeric_limits<int32_t>::max())
        throw std::invalid_argument("length " + std::to_string(len[i]) + " of sequence " + std::to_string(i) +
                                    " is outside [0, 2^31)");
      total += len[i];
    }
    if (total != n_tok)
      throw std::invalid_argument("lengths sum to " + std::to_string(total) + " but tokens has " +
                                  std::to_string(n_tok) + " entries");
    const bool native = static_cast<size_t>(tokens.itemsize()) == itemsize_ && same_kind(tokens.dtype());
    const bool from32 = same_dtype(tokens.dtype(), py::dtype::of<int32_t>());
    if (!native && !from32 && !same_dtype(tokens.dtype(), py::dtype::of<int64_t>()))
      throw std::invalid_argument("tokens must be int32, int64 or the dataset dtype");

    std::string error;
    {
      py::gil_scoped_release release;
      if (native) {
        write_bytes(tokens.data(), n_tok * itemsize_, &error);
      } else if (from32) {
        write_converted(static_cast<const int32_t*>(tokens.data()), n_tok, &error);
      } else {
        write_converted(static_cast<const int64_t*>(tokens.data()), n_tok, &error);
      }
    }
    if (!error.empty()) throw std::invalid_argument(error);
    lengths_.reserve(lengths_.size() + static_cast<size_t>(n_seq));
    for (int64_t i = 0; i < n_seq; ++i) lengths_.push_back(static_cast<int32_t>(len[i]));
    num_tokens_ += n_tok;
  }

  // Lengths as int32, for write_index.
  py::array_t<int32_t> lengths() const {
    py::array_t<int32_t> out(static_cast<py::ssize_t>(lengths_.size()));
    int32_t* o = out.mutable_data();
    if (!lengths_.empty()) std::memcpy(o, lengths_.data(), lengths_.size() * sizeof(int32_t));
    return out;
  }

  void close() {
    if (!file_) return;
    const bool ok = std::fflush(file_) == 0;
    const bool closed = std::fclose(file_) == 0;
    file_ = nullptr;
    if (!ok || !closed) throw std::runtime_error(path_ + ": write failed: " + std::strerror(errno));
  }

  int64_t num_sequences() const { return static_cast<int64_t>(lengths_.size()); }
  int64_t num_tokens() const { return num_tokens_; }

 private:
  bool same_kind(const py::dtype& dt) const {
    switch (code_) {
      case 1: return same_dtype(dt, py::dtype::of<uint8_t>());
      case 2: return same_dtype(dt, py::dtype::of<int8_t>());
      case 3: return same_dtype(dt, py::dtype::of<int16_t>());
      case 4: return same_dtype(dt, py::dtype::of<int32_t>());
      case 5: return same_dtype(dt, py::dtype::of<int64_t>());
      case 8: return same_dtype(dt, py::dtype::of<uint16_t>());
      default: return false;
    }
  }

  void write_bytes(const void* data, int64_t nbytes, std::string* error) {
    if (nbytes > 0 && std::fwrite(data, 1, static_cast<size_t>(nbytes), file_) != static_cast<size_t>(nbytes))
      *error = path_ + ": write failed: " + std::strerror(errno);
  }

  template <typename T, typename Src>
  void write_as(const Src* src, int64_t n, std::string* error) {
    constexpr int64_t kChunk = 1 << 16;  // tokens per conversion buffer (128-512 KiB)
    std::vector<T> buf(static_cast<size_t>(std::min<int64_t>(n, kChunk)));
    for (int64_t start = 0; start < n && error->empty(); start += kChunk) {
      const int64_t m = std::min(kChunk, n - start);
      int64_t bad = -1;
      if (!convert_checked<T, Src>(src + start, buf.data(), m, &bad)) {
        std::ostringstream msg;
        msg << "token " << src[start + bad] << " at flat position " << (start + bad)
            << " does not fit the dataset dtype (code " << code_ << ")";
        *error = msg.str();
        return;
      }
      write_bytes(buf.data(), m * static_cast<int64_t>(sizeof(T)), error);
    }
  }

  template <typename Src>
  void write_converted(const Src* src, int64_t n, std::string* error) {
    switch (code_) {
      case 1: write_as<uint8_t, Src>(src, n, error); break;
      case 2: write_as<int8_t, Src>(src, n, error); break;
      case 3: write_as<int16_t, Src>(src, n, error); break;
      case 4: write_as<int32_t, Src>(src, n, error); break;
      case 5: write_as<int64_t, Src>(src, n, error); break;
      case 8: write_as<uint16_t, Src>(src, n, error); break;
    }
  }

  std::string path_;
  int code_;
  size_t itemsize_;
  std::FILE* file_ = nullptr;
  std::vector<int32_t> lengths_;
  int64_t num_tokens_ = 0;
};

// Writes a complete .idx file. lengths: [S] int32; document_indices: [D] int64.
void write_index(const std::string& path, int code,
                 py::array_t<int32_t, py::array::c_style | py::array::forcecast> lengths,
                 py::array_t<int64_t, py::array::c_style | py::array::forcecast> document_indices) {
  const size_t itemsize = itemsize_of(code);
  if (itemsize == 0) throw std::invalid_argument("unknown dtype code " + std::to_string(code));
  const uint64_t S = static_cast<uint64_t>(lengths.shape(0));
  const uint64_t D = static_cast<uint64_t>(document_indices.shape(0));
  const int32_t* len = lengths.data();
  const int64_t* doc = document_indices.data();
  std::string error;
  {
    py::gil_scoped_release release;
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) {
      error = path + ": cannot open for writing: " + std::strerror(errno);
    } else {
      const uint8_t code8 = static_cast<uint8_t>(code);
      bool ok = std::fwrite(kMagic, 1, 9, f) == 9 && std::fwrite(&kVersion, 8, 1, f) == 1 &&
                std::fwrite(&code8, 1, 1, f) == 1 && std::fwrite(&S, 8, 1, f) == 1 &&
                std::fwrite(&D, 8, 1, f) == 1 && (S == 0 || std::fwrite(len, 4, S, f) == S);
      // Byte pointers: running sum of length * itemsize, written in chunks.
      std::vector<int64_t> ptr(static_cast<size_t>(std::min<uint64_t>(S, 1 << 16)));
      int64_t running = 0;
      for (uint64_t start = 0; ok && start < S; start += ptr.size()) {
        const uint64_t m = std::min<uint64_t>(ptr.size(), S - start);
        for (uint64_t i = 0; i < m; ++i) {
          ptr[i] = running;
          running += static_cast<int64_t>(len[start + i]) * static_cast<int64_t>(itemsize);
        }
        ok = std::fwrite(ptr.data(), 8, m, f) == m;
      }
      ok = ok && (D == 0 || std::fwrite(doc, 8, D, f) == D);
      ok = (std::fclose(f) == 0) && ok;
      if (!ok) error = path + ": write failed: " + std::strerror(errno);
    }
  }
  if (!error.empty()) throw std::runtime_error(error);
}

// Checks an opened index against itself and the .bin size. Arrays are raw buffers (possibly
// unaligned memory-mapped views): lengths [S] int32, pointers [S] int64, docs [D] int64.
// Returns "" when consistent, else a message naming the first inconsistency.
std::string validate(py::buffer lengths_buf, py::buffer pointers_buf, py::buffer docs_buf,
                     int64_t S, int64_t D, int64_t itemsize, int64_t bin_size) {
  py::buffer_info li = lengths_buf.request(), pi = pointers_buf.request(), di = docs_buf.request();
  if (li.size * li.itemsize < S * 4 || pi.size * pi.itemsize < S * 8 || di.size * di.itemsize < D * 8)
    throw std::invalid_argument("validate: buffers shorter than the counts");
  const char* L = static_cast<const char*>(li.ptr);
  const char* P = static_cast<const char*>(pi.ptr);
  const char* Dp = static_cast<const char*>(di.ptr);
  std::ostringstream msg;
  {
    py::gil_scoped_release release;
    // Pass 1: lengths alone must account for every byte of .bin (catches a truncated .bin
    // or a wrong dtype code before any pointer is looked at).
    int64_t total = 0;
    for (int64_t i = 0; i < S; ++i) {
      const int32_t len = load<int32_t>(L, i);
      if (len < 0) { msg << "sequence " << i << " has negative length " << len; break; }
      total += len;
    }
    if (msg.tellp() == 0 && total * itemsize != bin_size)
      msg << "the .bin holds " << bin_size << " bytes but the sequence lengths in the .idx add up to "
          << total << " tokens x " << itemsize << " bytes = " << total * itemsize << " bytes";
    // Pass 2: pointers in bounds and monotone. Pass 3: contiguous (Megatron writes them as the
    // running sum of length * itemsize, so any other value is corruption). Monotonicity gets
    // its own pass so that swapped pointers are reported as such.
    for (int64_t i = 0; i < S && msg.tellp() == 0; ++i) {
      const int32_t len = load<int32_t>(L, i);
      const int64_t ptr = load<int64_t>(P, i);
      if (ptr < 0 || ptr > bin_size || len * itemsize > bin_size - ptr) {
        msg << "pointer of sequence " << i << " is out of bounds: byte " << ptr << " + " << len << " tokens x "
            << itemsize << " bytes exceeds the .bin size " << bin_size;
      } else if (i > 0 && ptr < load<int64_t>(P, i - 1)) {
        msg << "pointers are not monotone: sequence " << i << " starts at byte " << ptr
            << " before sequence " << (i - 1) << " at byte " << load<int64_t>(P, i - 1);
      }
    }
    int64_t expected = 0;  // byte offset where sequence i must start
    for (int64_t i = 0; i < S && msg.tellp() == 0; ++i) {
      const int64_t ptr = load<int64_t>(P, i);
      if (ptr != expected)
        msg << "pointer of sequence " << i << " is byte " << ptr << " but the lengths before it end at byte "
            << expected;
      expected += load<int32_t>(L, i) * itemsize;
    }
    if (msg.tellp() == 0) {
      if (D < 1) {
        msg << "document index is empty (it must hold at least the leading 0)";
      } else if (load<int64_t>(Dp, 0) != 0) {
        msg << "document index starts at " << load<int64_t>(Dp, 0) << ", not 0";
      } else if (load<int64_t>(Dp, D - 1) != S) {
        msg << "document index ends at " << load<int64_t>(Dp, D - 1) << ", not at the sequence count " << S;
      } else {
        for (int64_t j = 1; j < D; ++j) {
          if (load<int64_t>(Dp, j) < load<int64_t>(Dp, j - 1)) {
            msg << "document index is not monotone at entry " << j << ": " << load<int64_t>(Dp, j) << " after "
                << load<int64_t>(Dp, j - 1);
            break;
          }
        }
      }
    }
  }
  return msg.str();
}

}  // namespace

PYBIND11_MODULE(_indexed, m) {
  m.doc() = "Megatron-compatible indexed dataset writer and index validator (see csrc/indexed.cpp)";
  m.def("itemsize_of", &itemsize_of, "Bytes per token of a dtype code; 0 for an unknown code.");
  m.def("write_index", &write_index, py::arg("path"), py::arg("code"), py::arg("lengths"),
        py::arg("document_indices"), "Write a .idx file (pointers computed from lengths).");
  m.def("validate", &validate, py::arg("lengths"), py::arg("pointers"), py::arg("document_indices"),
        py::arg("sequence_count"), py::arg("document_count"), py::arg("itemsize"), py::arg("bin_size"),
        "Check an index against itself and the .bin size; returns '' or the first problem.");
  py::class_<BinWriter>(m, "BinWriter")
      .def(py::init<const std::string&, int>(), py::arg("path"), py::arg("code"))
      .def("add", &BinWriter::add, py::arg("tokens"), py::arg("lengths"))
      .def("lengths", &BinWriter::lengths)
      .def("close", &BinWriter::close)
      .def_property_readonly("num_sequences", &BinWriter::num_sequences)
      .def_property_readonly("num_tokens", &BinWriter::num_tokens);
}
