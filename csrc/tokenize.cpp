// megacode._tokenize: the exact SentencePiece BPE encoder of spm_bpe.h, driven from Python.
//
// Encoding runs with the GIL released, on `num_threads` C++ threads for a batch. Each thread
// borrows an EncodeState (scratch buffers and its word cache) from the encoder's pool, so calls
// from several Python threads are safe and caches stay warm between calls. The Python wrapper
// (megacode/tokenizer/fast.py) checks arguments and ranges; this layer only converts.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <exception>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "jsonl_scan.h"
#include "spm_bpe.h"

namespace py = pybind11;
using megacode::spm::BpeEncoder;
using megacode::spm::EncodeState;

namespace {

class Encoder {
 public:
  Encoder(const py::bytes& model, size_t cache_entries, size_t linear_max_symbols)
      : cache_entries_(cache_entries), linear_max_symbols_(linear_max_symbols) {
    std::string data = model;
    try {
      enc_ = std::make_unique<BpeEncoder>(data);
    } catch (const std::invalid_argument& e) {
      throw py::value_error(e.what());
    }
  }

  int vocab_size() const { return enc_->vocab_size(); }
  bool byte_fallback() const { return enc_->byte_fallback(); }

  // One text -> list of ids. `prefix_id`/`suffix_id` < 0 mean none (BOS / EOS are added by id).
  py::list encode(const py::str& text, bool dummy_prefix, int prefix_id, int suffix_id) {
    Py_ssize_t n = 0;
    const char* p = PyUnicode_AsUTF8AndSize(text.ptr(), &n);
    if (p == nullptr) throw py::error_already_set();  // e.g. a lone surrogate
    std::vector<int32_t> ids;
    {
      py::gil_scoped_release nogil;
      auto st = acquire();
      if (prefix_id >= 0) ids.push_back(prefix_id);
      enc_->encode(std::string_view(p, static_cast<size_t>(n)), dummy_prefix, st.get(), &ids);
      if (suffix_id >= 0) ids.push_back(suffix_id);
      release(std::move(st));
    }
    py::list out(ids.size());
    for (size_t i = 0; i < ids.size(); ++i) out[i] = py::int_(ids[i]);
    return out;
  }

  // Many texts -> (tokens [sum(lengths)] int32, lengths [n] int64), in input order.
  py::tuple encode_batch(const py::sequence& texts, int num_threads, bool dummy_prefix, int prefix_id,
                         int suffix_id) {
    const size_t n = static_cast<size_t>(py::len(texts));
    std::vector<py::object> keep(n);  // owns the str objects whose UTF-8 buffers we read
    std::vector<std::string_view> views(n);
    for (size_t i = 0; i < n; ++i) {
      keep[i] = texts[i];
      if (!PyUnicode_Check(keep[i].ptr()))
        throw py::type_error("texts[" + std::to_string(i) + "] is not a str");
      Py_ssize_t len = 0;
      const char* p = PyUnicode_AsUTF8AndSize(keep[i].ptr(), &len);
      if (p == nullptr) {
        PyErr_Clear();
        throw py::value_error("texts[" + std::to_string(i) + "] cannot be encoded as UTF-8 (lone surrogate?)");
      }
      views[i] = std::string_view(p, static_cast<size_t>(len));
    }
    // Each thread appends to its own buffer; spans[i] = (thread, offset, length) of text i.
    const size_t threads = std::max<size_t>(1, std::min<size_t>(num_threads, n));
    std::vector<std::vector<int32_t>> bufs(threads);
    struct Span { uint32_t thread; size_t offset, length; };
    std::vector<Span> spans(n);
    {
      py::gil_scoped_release nogil;
      std::atomic<size_t> next{0};
      std::exception_ptr failure;
      std::mutex failure_mu;
      auto work = [&](uint32_t t) {
        try {
          auto st = acquire();
          auto& buf = bufs[t];
          for (size_t i = next++; i < n; i = next++) {
            const size_t start = buf.size();
            if (prefix_id >= 0) buf.push_back(prefix_id);
            enc_->encode(views[i], dummy_prefix, st.get(), &buf);
            if (suffix_id >= 0) buf.push_back(suffix_id);
            spans[i] = Span{t, start, buf.size() - start};
          }
          release(std::move(st));
        } catch (...) {
          std::lock_guard<std::mutex> lock(failure_mu);
          failure = std::current_exception();
        }
      };
      std::vector<std::thread> pool;
      for (uint32_t t = 1; t < threads; ++t) pool.emplace_back(work, t);
      work(0);
      for (auto& th : pool) th.join();
      if (failure) std::rethrow_exception(failure);
    }
    size_t total = 0;
    for (const Span& s : spans) total += s.length;
    py::array_t<int32_t> tokens(static_cast<py::ssize_t>(total));
    py::array_t<int64_t> lengths(static_cast<py::ssize_t>(n));
    int32_t* dst = tokens.mutable_data();
    int64_t* len = lengths.mutable_data();
    for (size_t i = 0; i < n; ++i) {
      const Span& s = spans[i];
      std::copy_n(bufs[s.thread].data() + s.offset, s.length, dst);
      dst += s.length;
      len[i] = static_cast<int64_t>(s.length);
    }
    return py::make_tuple(tokens, lengths);
  }

  // A chunk of JSONL (whole lines; a last line may lack its '\n') -> (status uint8 [lines],
  // [tokens int32 per key], [lengths int64 per key], meta int64 [kept docs, meta keys, 2]).
  // status[i]: 0 kept (document j of the arrays is the j-th kept line), 1 blank, 2 for Python
  // to judge (jsonl_scan.h). meta: each metadata key's JSON text in `data` as [begin, end), or
  // -1 -1 when the line lacks it. One thread, GIL released throughout: preprocessing threads
  // run chunks side by side.
  py::tuple encode_jsonl(const py::bytes& data, const std::vector<std::string>& keys,
                         const std::vector<std::string>& meta_keys, bool dummy_prefix, int prefix_id,
                         int suffix_id) {
    char* buffer = nullptr;
    Py_ssize_t size = 0;
    if (PyBytes_AsStringAndSize(data.ptr(), &buffer, &size) != 0) throw py::error_already_set();
    if (keys.empty()) throw py::value_error("encode_jsonl needs at least one key");
    const size_t nkeys = keys.size();
    std::vector<uint8_t> status;
    std::vector<std::vector<int32_t>> tokens(nkeys);
    std::vector<std::vector<int64_t>> lengths(nkeys);
    std::vector<int64_t> meta;  // [kept docs * meta keys * 2]
    {
      py::gil_scoped_release nogil;
      for (auto& t : tokens) t.reserve(static_cast<size_t>(size) / 3);  // ~3.4 bytes per token on code
      auto st = acquire();
      megacode::jsonl::LineFields fields;
      std::string_view rest(buffer, static_cast<size_t>(size));
      while (!rest.empty()) {
        const size_t cut = rest.find('\n');
        const std::string_view line = rest.substr(0, cut);
        rest = cut == std::string_view::npos ? std::string_view() : rest.substr(cut + 1);
        const auto verdict = megacode::jsonl::scan_line(line, keys, meta_keys, &fields);
        status.push_back(verdict);
        if (verdict != megacode::jsonl::kKept) continue;
        const int64_t line_offset = line.data() - buffer;
        for (const int64_t pos : fields.meta) meta.push_back(pos < 0 ? -1 : line_offset + pos);
        for (size_t k = 0; k < nkeys; ++k) {
          auto& buf = tokens[k];
          const size_t start = buf.size();
          if (prefix_id >= 0) buf.push_back(prefix_id);
          enc_->encode(fields.values[k], dummy_prefix, st.get(), &buf);
          if (suffix_id >= 0) buf.push_back(suffix_id);
          lengths[k].push_back(static_cast<int64_t>(buf.size() - start));
        }
      }
      release(std::move(st));
    }
    py::array_t<uint8_t> status_array(static_cast<py::ssize_t>(status.size()));
    std::copy(status.begin(), status.end(), status_array.mutable_data());
    py::list token_arrays, length_arrays;
    for (size_t k = 0; k < nkeys; ++k) {
      py::array_t<int32_t> t(static_cast<py::ssize_t>(tokens[k].size()));
      std::copy(tokens[k].begin(), tokens[k].end(), t.mutable_data());
      py::array_t<int64_t> l(static_cast<py::ssize_t>(lengths[k].size()));
      std::copy(lengths[k].begin(), lengths[k].end(), l.mutable_data());
      token_arrays.append(t);
      length_arrays.append(l);
    }
    const py::ssize_t nmeta = static_cast<py::ssize_t>(meta_keys.size());
    py::array_t<int64_t> meta_array({static_cast<py::ssize_t>(lengths[0].size()), nmeta, py::ssize_t{2}});
    std::copy(meta.begin(), meta.end(), meta_array.mutable_data());
    return py::make_tuple(status_array, token_arrays, length_arrays, meta_array);
  }

  // Source files (one document each) -> (status uint8 [files], sizes int64 [files], tokens int32,
  // lengths int64 [kept files]). status 0: read, non-empty, strict UTF-8 and encoded (document j
  // is the j-th kept file); 2: for Python to judge (unreadable, empty or not UTF-8: it reads
  // the file again and names the reason). sizes: bytes read, -1 when the file could not be read.
  // GIL released throughout.
  py::tuple encode_files(const std::string& root, const std::vector<std::string>& paths, bool dummy_prefix,
                         int prefix_id, int suffix_id) {
    const size_t n = paths.size();
    std::vector<uint8_t> status(n, megacode::jsonl::kPython);
    std::vector<int64_t> sizes(n, -1), lengths;
    std::vector<int32_t> tokens;
    {
      py::gil_scoped_release nogil;
      auto st = acquire();
      std::string data;
      for (size_t i = 0; i < n; ++i) {
        if (!read_whole(root + "/" + paths[i], &data)) continue;
        sizes[i] = static_cast<int64_t>(data.size());
        if (data.empty() || !megacode::jsonl::valid_utf8(reinterpret_cast<const unsigned char*>(data.data()),
                                                         data.size()))
          continue;
        const size_t start = tokens.size();
        if (prefix_id >= 0) tokens.push_back(prefix_id);
        enc_->encode(data, dummy_prefix, st.get(), &tokens);
        if (suffix_id >= 0) tokens.push_back(suffix_id);
        lengths.push_back(static_cast<int64_t>(tokens.size() - start));
        status[i] = megacode::jsonl::kKept;
      }
      release(std::move(st));
    }
    return py::make_tuple(to_array(status), to_array(sizes), to_array(tokens), to_array(lengths));
  }

 private:
  static bool read_whole(const std::string& path, std::string* out) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (f == nullptr) return false;
    out->clear();
    char buf[1 << 16];
    size_t got;
    while ((got = std::fread(buf, 1, sizeof buf, f)) > 0) out->append(buf, got);
    const bool ok = !std::ferror(f);
    std::fclose(f);
    return ok;
  }

  template <typename T>
  static py::array_t<T> to_array(const std::vector<T>& v) {
    py::array_t<T> out(static_cast<py::ssize_t>(v.size()));
    std::copy(v.begin(), v.end(), out.mutable_data());
    return out;
  }

  std::unique_ptr<EncodeState> acquire() {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.empty()) return std::make_unique<EncodeState>(cache_entries_, linear_max_symbols_);
    auto st = std::move(free_.back());
    free_.pop_back();
    return st;
  }
  void release(std::unique_ptr<EncodeState> st) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(std::move(st));
  }

  std::unique_ptr<BpeEncoder> enc_;
  size_t cache_entries_;       // words per thread cache before it is cleared
  size_t linear_max_symbols_;  // longer words merge through a heap (see spm_bpe.h)
  std::mutex mu_;
  std::vector<std::unique_ptr<EncodeState>> free_;
};

}  // namespace

PYBIND11_MODULE(_tokenize, m) {
  m.doc() = "Exact SentencePiece BPE encoder (identity normalization, byte fallback) with a word cache";
  py::class_<Encoder>(m, "Encoder")
      .def(py::init<const py::bytes&, size_t, size_t>(), py::arg("serialized_model"),
           py::arg("cache_entries") = 1 << 20, py::arg("linear_max_symbols") = 48)
      .def_property_readonly("vocab_size", &Encoder::vocab_size)
      .def_property_readonly("byte_fallback", &Encoder::byte_fallback)
      .def("encode", &Encoder::encode, py::arg("text"), py::arg("dummy_prefix") = true,
           py::arg("prefix_id") = -1, py::arg("suffix_id") = -1)
      .def("encode_batch", &Encoder::encode_batch, py::arg("texts"), py::arg("num_threads") = 1,
           py::arg("dummy_prefix") = true, py::arg("prefix_id") = -1, py::arg("suffix_id") = -1)
      .def("encode_files", &Encoder::encode_files, py::arg("root"), py::arg("paths"), py::arg("dummy_prefix") = true,
           py::arg("prefix_id") = -1, py::arg("suffix_id") = -1)
      .def("encode_jsonl", &Encoder::encode_jsonl, py::arg("data"), py::arg("keys"), py::arg("meta_keys"),
           py::arg("dummy_prefix") = true,
           py::arg("prefix_id") = -1, py::arg("suffix_id") = -1);
}
