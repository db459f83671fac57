// Sample and blend indices for packed GPT-style training (wrapped by megacode/data/indices.py).
//
// Arrays built here (T is int32 or int64, chosen by the wrapper from the largest value):
//   document order   T[E * N]        E epochs of the N split documents, each epoch its own
//                                    permutation drawn from the stream (seed, epoch + 1)
//   shuffle index    T[n]            a permutation of 0..n-1 from the stream (seed, 0)
//   sample index     T[M + 1, 2]     row i = (position k in the document order, token offset) of
//                                    global token i * seq_length in the concatenation of the
//                                    documents in that order; sample i is the seq_length + 1
//                                    tokens from row i to row i + 1 inclusive, so consecutive
//                                    samples overlap by one token (inputs / shifted labels).
//                                    Offsets always point at a real token (empty documents are
//                                    skipped), the same rows Megatron-Core's build_sample_idx gives.
//   blend index      int16[n], int64[n]  dataset of sample s and its running sample count there:
//                                    s goes to the dataset furthest below weight * (s + 1).
//
// Random numbers: SplitMix64 (Steele et al. 2014). A stream (seed, id) starts from
// state = seed XOR id * 0xD1B54A32D192ED03, advanced once; bounded draws use Lemire's
// multiply-shift with rejection, so results are identical on every platform and compiler
// (std::shuffle and std::uniform_int_distribution are not). Fisher-Yates runs i = n-1 .. 1,
// swapping a[i] with a[draw(i + 1)]. tests/data/test_indices.py re-implements this in Python.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace py = pybind11;

namespace {

class SplitMix64 {
 public:
  SplitMix64(uint64_t seed, uint64_t stream) : state_(seed ^ (stream * 0xD1B54A32D192ED03ULL)) { next(); }

  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }

  // Uniform integer in [0, n), n >= 1, without modulo bias.
  uint64_t below(uint64_t n) {
    unsigned __int128 m = static_cast<unsigned __int128>(next()) * n;
    uint64_t low = static_cast<uint64_t>(m);
    if (low < n) {
      const uint64_t threshold = (0 - n) % n;
      while (low < threshold) {
        m = static_cast<unsigned __int128>(next()) * n;
        low = static_cast<uint64_t>(m);
      }
    }
    return static_cast<uint64_t>(m >> 64);
  }

 private:
  uint64_t state_;
};

template <typename T>
void fisher_yates(T* a, int64_t n, SplitMix64& rng) {
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i) + 1));
    std::swap(a[i], a[j]);
  }
}

// docs: [N] document ids; returns T[num_epochs * N], epoch e a permutation of docs.
template <typename T>
py::array_t<T> build_document_order(py::array_t<int64_t, py::array::c_style | py::array::forcecast> docs,
                                    int64_t num_epochs, uint64_t seed) {
  if (num_epochs < 1) throw std::invalid_argument("num_epochs must be >= 1, got " + std::to_string(num_epochs));
  const int64_t n = docs.shape(0);
  py::array_t<T> out(static_cast<py::ssize_t>(n * num_epochs));
  const int64_t* src = docs.data();
  T* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    for (int64_t e = 0; e < num_epochs; ++e) {
      T* epoch = dst + e * n;
      for (int64_t i = 0; i < n; ++i) epoch[i] = static_cast<T>(src[i]);
      SplitMix64 rng(seed, static_cast<uint64_t>(e) + 1);
      fisher_yates(epoch, n, rng);
    }
  }
  return out;
}

// Returns a permutation of 0..n-1 from the stream (seed, stream).
template <typename T>
py::array_t<T> build_shuffle_index(int64_t n, uint64_t seed, uint64_t stream) {
  if (n < 0) throw std::invalid_argument("shuffle size must be >= 0, got " + std::to_string(n));
  py::array_t<T> out(static_cast<py::ssize_t>(n));
  T* a = out.mutable_data();
  {
    py::gil_scoped_release release;
    for (int64_t i = 0; i < n; ++i) a[i] = static_cast<T>(i);
    SplitMix64 rng(seed, stream);
    fisher_yates(a, n, rng);
  }
  return out;
}

// sizes: [num documents] int32 token counts indexed by document id; order: T[K] document ids.
// Returns T[num_samples + 1, 2] (see the header). Each id is checked against len(sizes) before
// its size is read, and running off the end of the order (too few tokens) raises.
template <typename T>
py::array_t<T> build_sample_index(py::array_t<int32_t, py::array::c_style | py::array::forcecast> sizes_arr,
                                  py::array_t<T, py::array::c_style | py::array::forcecast> order_arr,
                                  int64_t seq_length, int64_t num_samples) {
  if (seq_length < 1) throw std::invalid_argument("seq_length must be >= 1, got " + std::to_string(seq_length));
  if (num_samples < 0) throw std::invalid_argument("num_samples must be >= 0, got " + std::to_string(num_samples));
  const int32_t* sizes = sizes_arr.data();
  const T* order = order_arr.data();
  const int64_t K = order_arr.shape(0);
  const int64_t num_docs = sizes_arr.shape(0);
  py::array_t<T> out({static_cast<py::ssize_t>(num_samples + 1), static_cast<py::ssize_t>(2)});
  T* rows = out.mutable_data();
  bool ran_out = false;
  int64_t bad_id = -1, bad_pos = -1;
  {
    py::gil_scoped_release release;
    int64_t k = 0;        // position in the document order
    int64_t offset = 0;   // token offset inside document order[k]
    int64_t need = 0;     // tokens still to advance before the next row
    for (int64_t i = 0; i <= num_samples; ++i) {
      // Advance `need` tokens, landing on a real token (skips empty documents).
      while (true) {
        if (k >= K) { ran_out = true; break; }
        // The document sizes are looked up in shuffled order: prefetch a few ahead, the
        // random reads into a large sizes array otherwise dominate the loop.
        if (k + 16 < K) __builtin_prefetch(sizes + order[k + 16]);
        const int64_t doc = static_cast<int64_t>(order[k]);
        if (doc < 0 || doc >= num_docs) { bad_id = doc; bad_pos = k; break; }
        const int64_t rest = static_cast<int64_t>(sizes[doc]) - offset;
        if (need < rest) { offset += need; break; }
        need -= rest;
        ++k;
        offset = 0;
      }
      if (ran_out || bad_pos >= 0) break;
      rows[2 * i] = static_cast<T>(k);
      rows[2 * i + 1] = static_cast<T>(offset);
      need = seq_length;
    }
  }
  if (bad_pos >= 0)
    throw std::invalid_argument("document order position " + std::to_string(bad_pos) + " holds id " +
                                std::to_string(bad_id) + ", outside [0, " + std::to_string(num_docs) + ")");
  if (ran_out)
    throw std::invalid_argument("document order holds too few tokens for " + std::to_string(num_samples) +
                                " samples of " + std::to_string(seq_length) + " + 1 tokens");
  return out;
}

// The blend loop for D datasets known at compile time (D <= 8 covers every recipe mix): the
// running counts live in registers, which makes the loop-carried dependency through them
// several times shorter than through memory. D = 0 is the generic version.
template <int D>
void blend_loop(const double* w_in, int64_t num_datasets, int64_t n, int16_t* __restrict di,
                int64_t* __restrict dsi) {
  constexpr int64_t kMax = D > 0 ? D : 1;
  const int64_t nd = D > 0 ? D : num_datasets;
  std::vector<double> w_dyn, taken_dyn;
  double w_fix[kMax], taken_fix[kMax];
  double* w = w_fix;
  double* taken = taken_fix;  // counts as doubles: exact below 2^53 samples
  if (D == 0) {
    w_dyn.assign(w_in, w_in + nd);
    taken_dyn.assign(static_cast<size_t>(nd), 0.0);
    w = w_dyn.data();
    taken = taken_dyn.data();
  } else {
    for (int64_t d = 0; d < nd; ++d) { w_fix[d] = w_in[d]; taken_fix[d] = 0.0; }
  }
  for (int64_t s = 0; s < n; ++s) {
    const double target = static_cast<double>(s + 1);
    int64_t best = 0;
    double best_gap = w[0] * target - taken[0];
    for (int64_t d = 1; d < nd; ++d) {
      const double gap = w[d] * target - taken[d];
      if (gap > best_gap) { best_gap = gap; best = d; }
    }
    di[s] = static_cast<int16_t>(best);
    dsi[s] = static_cast<int64_t>(taken[best]);
    taken[best] += 1.0;
  }
}

// weights: [D] positive, summing to 1. Returns (dataset index int16[n], sample index int64[n]).
py::tuple build_blend_index(py::array_t<double, py::array::c_style | py::array::forcecast> weights_arr,
                            int64_t n) {
  const int64_t D = weights_arr.shape(0);
  if (D < 1 || D > std::numeric_limits<int16_t>::max())
    throw std::invalid_argument("number of datasets must be in [1, 32767], got " + std::to_string(D));
  if (n < 0) throw std::invalid_argument("num_samples must be >= 0, got " + std::to_string(n));
  const std::vector<double> w(weights_arr.data(), weights_arr.data() + D);
  py::array_t<int16_t> dataset_index(static_cast<py::ssize_t>(n));
  py::array_t<int64_t> dataset_sample_index(static_cast<py::ssize_t>(n));
  int16_t* di = dataset_index.mutable_data();
  int64_t* dsi = dataset_sample_index.mutable_data();
  {
    py::gil_scoped_release release;
    switch (D) {
      case 1: blend_loop<1>(w.data(), D, n, di, dsi); break;
      case 2: blend_loop<2>(w.data(), D, n, di, dsi); break;
      case 3: blend_loop<3>(w.data(), D, n, di, dsi); break;
      case 4: blend_loop<4>(w.data(), D, n, di, dsi); break;
      case 5: blend_loop<5>(w.data(), D, n, di, dsi); break;
      case 6: blend_loop<6>(w.data(), D, n, di, dsi); break;
      case 7: blend_loop<7>(w.data(), D, n, di, dsi); break;
      case 8: blend_loop<8>(w.data(), D, n, di, dsi); break;
      default: blend_loop<0>(w.data(), D, n, di, dsi);
    }
  }
  return py::make_tuple(dataset_index, dataset_sample_index);
}

// Reads an int32 or int64 index array element by element (the caches hold either width).
struct IndexView {
  const char* data;
  int itemsize;
  explicit IndexView(const py::array& a) : data(static_cast<const char*>(a.data())), itemsize(static_cast<int>(a.itemsize())) {
    if (itemsize != 4 && itemsize != 8) throw std::invalid_argument("index arrays must be int32 or int64");
    if (!(a.flags() & py::array::c_style)) throw std::invalid_argument("index arrays must be C-contiguous");
  }
  int64_t operator[](int64_t i) const {
    return itemsize == 4 ? reinterpret_cast<const int32_t*>(data)[i] : reinterpret_cast<const int64_t*>(data)[i];
  }
};

// The samples `ids` of a packed dataset as one int64 array [len(ids), seq_length + 1]: sample
// id is row shuffle[id] of the sample index, i.e. the tokens from (order position k0, offset
// off0) to (k1, off1) inclusive, skipping empty documents -- what PackedDataset.__getitem__
// returns, for a whole batch in one call with the GIL released.
//   tokens   T[total tokens] the .bin (T = uint16, int32 or int64); pointers int64[S] in bytes;
//   sizes    int32[S]; order, sample_index [M + 1, 2], shuffle: int32 or int64 (the caches).
template <typename T>
void gather_rows(const T* tokens, int64_t num_tokens, const int64_t* pointers, const int32_t* sizes,
                 const IndexView& order, const IndexView& rows, const IndexView& shuffle, const int64_t* ids,
                 int64_t n, int64_t width, int64_t* out) {
  for (int64_t r = 0; r < n; ++r) {
    const int64_t s = shuffle[ids[r]];
    int64_t k = rows[2 * s], off = rows[2 * s + 1];
    const int64_t k1 = rows[2 * s + 2], off1 = rows[2 * s + 3];
    int64_t* dst = out + r * width;
    int64_t filled = 0;
    while (true) {
      const int64_t doc = order[k];
      const int64_t end = k == k1 ? off1 + 1 : sizes[doc];
      const int64_t first = pointers[doc] / static_cast<int64_t>(sizeof(T)) + off;
      const int64_t len = end - off;
      if (len > 0) {
        if (filled + len > width || first + len > num_tokens)
          throw std::runtime_error("sample " + std::to_string(ids[r]) + " does not fit its row: corrupt index cache?");
        for (int64_t t = 0; t < len; ++t) dst[filled + t] = static_cast<int64_t>(tokens[first + t]);
        filled += len;
      }
      if (k == k1) break;
      ++k;
      off = 0;
    }
    if (filled != width)
      throw std::runtime_error("sample " + std::to_string(ids[r]) + " holds " + std::to_string(filled) +
                               " tokens, not " + std::to_string(width) + ": corrupt index cache?");
  }
}

py::array_t<int64_t> gather_samples(const py::array& tokens, py::array_t<int64_t, py::array::c_style> pointers,
                                    py::array_t<int32_t, py::array::c_style> sizes, const py::array& order,
                                    const py::array& sample_index, const py::array& shuffle,
                                    py::array_t<int64_t, py::array::c_style | py::array::forcecast> ids,
                                    int64_t seq_length) {
  const IndexView order_v(order), rows_v(sample_index), shuffle_v(shuffle);
  const int64_t n = ids.shape(0), width = seq_length + 1;
  const int64_t num_samples = shuffle.shape(0);
  const int64_t* id = ids.data();
  for (int64_t r = 0; r < n; ++r)
    if (id[r] < 0 || id[r] >= num_samples)
      throw py::index_error("sample " + std::to_string(id[r]) + " out of range [0, " + std::to_string(num_samples) + ")");
  if (!(tokens.flags() & py::array::c_style)) throw std::invalid_argument("tokens must be C-contiguous");
  py::array_t<int64_t> out({n, width});
  int64_t* dst = out.mutable_data();
  const char kind = tokens.dtype().kind();
  const int64_t itemsize = tokens.itemsize(), num_tokens = tokens.shape(0);
  {
    py::gil_scoped_release release;
    if (kind == 'u' && itemsize == 2)
      gather_rows(static_cast<const uint16_t*>(tokens.data()), num_tokens, pointers.data(), sizes.data(), order_v,
                  rows_v, shuffle_v, id, n, width, dst);
    else if (kind == 'i' && itemsize == 4)
      gather_rows(static_cast<const int32_t*>(tokens.data()), num_tokens, pointers.data(), sizes.data(), order_v,
                  rows_v, shuffle_v, id, n, width, dst);
    else if (kind == 'i' && itemsize == 8)
      gather_rows(static_cast<const int64_t*>(tokens.data()), num_tokens, pointers.data(), sizes.data(), order_v,
                  rows_v, shuffle_v, id, n, width, dst);
    else
      throw std::invalid_argument("gather reads uint16, int32 or int64 token files");
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(_indices, m) {
  m.doc() = "Document order, sample, shuffle and blend indices (see csrc/indices.cpp)";
  m.def("build_document_order_int32", &build_document_order<int32_t>, py::arg("docs"), py::arg("num_epochs"), py::arg("seed"));
  m.def("build_document_order_int64", &build_document_order<int64_t>, py::arg("docs"), py::arg("num_epochs"), py::arg("seed"));
  m.def("build_shuffle_index_int32", &build_shuffle_index<int32_t>, py::arg("n"), py::arg("seed"), py::arg("stream"));
  m.def("build_shuffle_index_int64", &build_shuffle_index<int64_t>, py::arg("n"), py::arg("seed"), py::arg("stream"));
  m.def("build_sample_index_int32", &build_sample_index<int32_t>, py::arg("sizes"), py::arg("order"),
        py::arg("seq_length"), py::arg("num_samples"));
  m.def("build_sample_index_int64", &build_sample_index<int64_t>, py::arg("sizes"), py::arg("order"),
        py::arg("seq_length"), py::arg("num_samples"));
  m.def("build_blend_index", &build_blend_index, py::arg("weights"), py::arg("num_samples"));
  m.def("gather_samples", &gather_samples, py::arg("tokens"), py::arg("pointers"), py::arg("sizes"), py::arg("order"),
        py::arg("sample_index"), py::arg("shuffle"), py::arg("ids"), py::arg("seq_length"));
}
