// megacode._fim: Code Llama's fill-in-the-middle transform (arXiv 2308.12950 §2.3), applied to
// stored token ids while samples are drawn. Layouts (DESIGN.md §1), special tokens by id:
//
//   PSM  <PRE> enc(prefix) <SUF> enc'(suffix) <MID> enc'(middle) <EOT>
//   SPM  <PRE> <SUF> enc'(suffix) <MID> enc(prefix + middle) <EOT>
//
// enc is SentencePiece's encoding (implicit leading "▁"), enc' the same without it; both come
// from the exact BPE core of spm_bpe.h. A document's text is recovered from its ids by
// SentencePiece's decoding rules (below); only documents whose ids decode without loss are
// transformed, the others are copied unchanged and counted ("unclean").
//
// Random choices of one document occurrence (piece p of sample i holding document d), with
// SplitMix64's finalizer mix(z) and G = 0x9E3779B97F4A7C15 (all arithmetic mod 2^64):
//   k1 = mix(seed + G) xor i,  k2 = mix(k1 + G) xor p,  key = mix(k2 + G) xor d
//   draw j = mix(key + (j + 1) * G), j = 0..3
//   transformed   (draw0 >> 11) * 2^-53 < rate
//   SPM           (draw1 >> 11) * 2^-53 < spm_rate
//   split points  a = (draw2 * (n + 1)) >> 64, b = (draw3 * (n + 1)) >> 64, over the n code
//                 points of the text; lo = min(a, b), hi = max(a, b): prefix [0, lo),
//                 middle [lo, hi), suffix [hi, n)
// so a sample depends on (seed, sample index, its documents) only, never on the reading thread.
// tests/data/fim_reference.py re-implements this in Python over the SentencePiece binding.
//
// Decoding, as SentencePieceProcessor::Decode (0.2.3) on the ids a document can hold after
// encoding valid text: NORMAL/USER_DEFINED pieces give their text with "▁" -> " ", and the very
// first piece loses one leading "▁" (add_dummy_prefix); runs of <0xXX> byte pieces give their
// bytes, which must be valid UTF-8. CONTROL/UNKNOWN/UNUSED ids, or invalid byte runs, make the
// document unclean (SentencePiece would drop them or print " ⁇ "/U+FFFD: not the stored text).
// A leading BOS and a trailing EOS (as preprocessing writes them) frame the document and stay
// in place around the transformed body.
//
// The Python wrappers (megacode/data/fim.py, fim_dataset.py) check arguments and ranges; this
// layer checks only what keeps memory safe (positions inside the arrays, spans inside the .bin).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <array>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "spm_bpe.h"

namespace py = pybind11;
using megacode::spm::BpeEncoder;
using megacode::spm::EncodeState;
using megacode::spm::ModelSpec;

namespace {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

inline uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

inline uint64_t doc_key(uint64_t seed, uint64_t sample, uint64_t piece, uint64_t doc) {
  uint64_t s = mix(seed + kGolden) ^ sample;
  s = mix(s + kGolden) ^ piece;
  return mix(s + kGolden) ^ doc;
}

inline uint64_t draw(uint64_t key, uint64_t j) { return mix(key + (j + 1) * kGolden); }
inline double unit(uint64_t d) { return static_cast<double>(d >> 11) * 0x1.0p-53; }
inline uint64_t below(uint64_t d, uint64_t n) {  // uniform in [0, n)
  return static_cast<uint64_t>((static_cast<unsigned __int128>(d) * n) >> 64);
}

// Per-id decoding table (see the header comment).
class Decoder {
 public:
  static constexpr int16_t kText = -1, kUnclean = -2;  // kind >= 0: a byte piece's value

  explicit Decoder(const ModelSpec& m) : strip_first_(m.add_dummy_prefix || m.remove_extra_whitespaces) {
    const size_t n = m.pieces.size();
    kind_.assign(n, kText);
    space_first_.assign(n, 0);
    offsets_.reserve(n + 1);
    offsets_.push_back(0);
    static const std::string kSym = "\xe2\x96\x81";
    for (size_t id = 0; id < n; ++id) {
      const std::string& p = m.pieces[id];
      const int type = m.types[id];
      if (type == megacode::spm::BYTE) {
        kind_[id] = static_cast<int16_t>(std::stoi(p.substr(3, 2), nullptr, 16));
      } else if (type != megacode::spm::NORMAL && type != megacode::spm::USER_DEFINED) {
        kind_[id] = kUnclean;
      } else {
        space_first_[id] = p.compare(0, 3, kSym) == 0;
        for (size_t k = 0; k < p.size();) {
          if (p.compare(k, 3, kSym) == 0) { surfaces_ += ' '; k += 3; }
          else surfaces_ += p[k++];
        }
      }
      offsets_.push_back(static_cast<uint32_t>(surfaces_.size()));
    }
  }

  // Text of ids [0, n) into `out`; false when a document is unclean (then `out` is garbage).
  template <typename Id>
  bool decode(const Id* ids, size_t n, std::string* out) const {
    out->clear();
    const int64_t vocab = static_cast<int64_t>(kind_.size());
    size_t run = 0;  // bytes of the pending byte-piece run at the end of `out`
    for (size_t k = 0; k < n; ++k) {
      const int64_t id = static_cast<int64_t>(ids[k]);
      if (id < 0 || id >= vocab) return false;
      const int16_t kind = kind_[id];
      if (kind == kUnclean) return false;
      if (kind >= 0) { out->push_back(static_cast<char>(kind)); ++run; continue; }
      if (run && !megacode::spm::valid_utf8(std::string_view(out->data() + out->size() - run, run))) return false;
      run = 0;
      size_t b = offsets_[id];
      if (k == 0 && strip_first_ && space_first_[id]) ++b;  // the implicit leading space
      out->append(surfaces_, b, offsets_[id + 1] - b);
    }
    return !run || megacode::spm::valid_utf8(std::string_view(out->data() + out->size() - run, run));
  }

 private:
  bool strip_first_;
  std::vector<int16_t> kind_;        // [vocab]
  std::vector<uint8_t> space_first_; // [vocab] piece starts with "▁"
  std::string surfaces_;             // every text piece, "▁" -> " ", concatenated
  std::vector<uint32_t> offsets_;    // [vocab + 1] into surfaces_
};

// Byte offset of code point `cp` in UTF-8 `s` (its length when cp is the code point count).
inline size_t byte_of(std::string_view s, uint64_t cp) {
  size_t i = 0;
  for (uint64_t seen = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80 && seen++ == cp) return i;
  }
  return i;
}

inline uint64_t count_cps(std::string_view s) {
  uint64_t n = 0;
  for (const char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

// Counters of one sample: whole documents seen, transformed, laid out SPM, drawn but unclean;
// tokens of the transformed documents before and after; tokens cut by the packing (dropped) and
// read past the sample's end (continued); whole documents the packing shortened (whole_cut).
// Named in megacode/data/fim.py STAT_NAMES.
enum Stat { kEligible, kTransformed, kSpm, kUnclean, kTokensIn, kTokensOut, kDropped, kContinued, kWholeCut,
            kNumStats };

class Fim {
 public:
  Fim(const py::bytes& model, int pre, int suf, int mid, int eot, int bos, int eos, size_t cache_entries)
      : pre_(pre), suf_(suf), mid_(mid), eot_(eot), bos_(bos), eos_(eos), cache_entries_(cache_entries) {
    const std::string data = model;
    try {
      enc_ = std::make_unique<BpeEncoder>(data);
      dec_ = std::make_unique<Decoder>(megacode::spm::parse_model_proto(data));
    } catch (const std::invalid_argument& e) {
      throw py::value_error(e.what());
    }
  }

  int vocab_size() const { return enc_->vocab_size(); }

  // fim_tokens(text, lo, hi, spm): one document's layout for given split points (code points).
  py::array_t<int64_t> fim_text(const py::str& text, uint64_t lo, uint64_t hi, bool spm) {
    Py_ssize_t n = 0;
    const char* p = PyUnicode_AsUTF8AndSize(text.ptr(), &n);
    if (p == nullptr) throw py::error_already_set();
    std::vector<int64_t> out;
    {
      py::gil_scoped_release nogil;
      auto st = acquire();
      emit(std::string_view(p, static_cast<size_t>(n)), lo, hi, spm, st.get(), &out);
      release(std::move(st));
    }
    return to_array(out);
  }

  // The text of clean ids, or None (see Decoder).
  py::object decode(py::array_t<int64_t, py::array::c_style | py::array::forcecast> ids) {
    std::string text;
    bool ok;
    {
      py::gil_scoped_release nogil;
      ok = dec_->decode(ids.data(), static_cast<size_t>(ids.size()), &text);
    }
    if (!ok) return py::none();
    return py::str(text);
  }

  // A packed sample, transformed and packed to `target` = seq_length + 1 tokens (gpt_dataset.py
  // and csrc/indices.cpp document the arrays): tokens [T] the .bin ids; pointers [S] int64 byte
  // offsets and lengths [S] int32 of the sequences (documents); order [K] document ids; the
  // sample runs from (order position k0, offset off0) to (k1, off1) inclusive, i.e. its sample
  // index rows. The pieces are those of indices.sample_pieces: (order[k0], off0, ...) ..
  // (order[k1], 0, off1 + 1), empty documents skipped.
  // Packing back to target (see fim_dataset.py): an excess is dropped first from the end of the
  // last piece and then from the start of the first one when they are documents cut across
  // contexts anyway, only then from the end of the whole documents before; a shortfall is
  // filled by the stored stream after the sample's last token (wrapping to the order's start).
  // Returns (ids [target] int64, counters [kNumStats] int64, per piece [P, 6] int64 rows
  // (document, start, end of the stored tokens kept, output length, what: 0 as stored, 1 PSM,
  // 2 SPM, 3 drawn but unclean; tokens of the piece dropped by the packing)).
  template <typename Tok, typename Idx>
  py::tuple sample(py::array_t<Tok, py::array::c_style> tokens, py::array_t<int64_t, py::array::c_style> pointers,
                   py::array_t<int32_t, py::array::c_style> lengths, py::array_t<Idx, py::array::c_style> order,
                   int64_t k0, int64_t off0, int64_t k1, int64_t off1, int64_t target, uint64_t seed,
                   uint64_t sample_id, double rate, double spm_rate) {
    if (pointers.size() != lengths.size() || target < 1 || k1 < k0 || off0 < 0 || off1 < 0)
      throw py::value_error("bad dataset arrays, sample rows or target");
    Reader<Tok, Idx> rd{tokens.data(), static_cast<size_t>(tokens.size()), pointers.data(), lengths.data(),
                        static_cast<size_t>(lengths.size()), order.data(), static_cast<size_t>(order.size())};
    std::vector<int64_t> out;
    std::vector<std::array<int64_t, 6>> pieces;  // see the comment above
    std::vector<uint8_t> whole;
    int64_t stats[kNumStats] = {0};
    {
      py::gil_scoped_release nogil;
      auto st = acquire();
      out.reserve(static_cast<size_t>(target) + 64);
      auto piece = [&](int64_t k, int64_t start, int64_t end) {
        const int64_t doc = rd.doc(k);
        const Tok* b = rd.span(doc, start, end);
        whole.push_back(start == 0 && end == rd.lengths[doc]);
        const size_t before = out.size();
        const int kind = whole.back() ? document(b, b + (end - start), seed, sample_id, pieces.size(), doc, rate,
                                                 spm_rate, st.get(), &out, stats)
                                      : (out.insert(out.end(), b, b + (end - start)), 0);
        pieces.push_back({doc, start, end, static_cast<int64_t>(out.size() - before), kind, 0});
      };
      if (k0 == k1) {
        piece(k0, off0, off1 + 1);
      } else {
        piece(k0, off0, rd.lengths[rd.doc(k0)]);
        for (int64_t k = k0 + 1; k < k1; ++k)
          if (rd.lengths[rd.doc(k)] > 0) piece(k, 0, rd.lengths[rd.doc(k)]);
        piece(k1, 0, off1 + 1);
      }
      const size_t want = static_cast<size_t>(target);
      if (out.size() > want) {
        int64_t excess = static_cast<int64_t>(out.size() - want);
        stats[kDropped] = excess;
        auto take = [&](std::array<int64_t, 6>& p) {
          const int64_t n = std::min(excess, p[3]);
          p[3] -= n;
          p[5] += n;
          excess -= n;
          return n;
        };
        const size_t last = pieces.size() - 1;
        if (last > 0 && !whole[last]) pieces[last][2] -= take(pieces[last]);  // a cut document's tail
        if (last > 0 && !whole[0] && excess > 0) {                           // a cut document's head
          const int64_t n = take(pieces[0]);
          pieces[0][1] += n;
          out.erase(out.begin(), out.begin() + n);
        }
        for (size_t k = last + 1; excess > 0 && k-- > 0;) take(pieces[k]);  // whole documents' tails
        for (size_t k = 0; k <= last; ++k) stats[kWholeCut] += whole[k] && pieces[k][5] > 0;
        out.resize(want);
      }
      for (int64_t k = k1, start = off1 + 1; out.size() < want; ++k, start = 0) {  // rare: continue the stream
        if (static_cast<size_t>(k) >= rd.n_order) k = 0;
        const int64_t doc = rd.doc(k);
        const int64_t take = std::min<int64_t>(rd.lengths[doc] - start, static_cast<int64_t>(want - out.size()));
        if (take <= 0) continue;
        const Tok* b = rd.span(doc, start, start + take);
        out.insert(out.end(), b, b + take);
        stats[kContinued] += take;
      }
      release(std::move(st));
    }
    py::array_t<int64_t> counters(kNumStats);
    std::copy(stats, stats + kNumStats, counters.mutable_data());
    py::array_t<int64_t> layout({static_cast<py::ssize_t>(pieces.size()), static_cast<py::ssize_t>(6)});
    int64_t* l = layout.mutable_data();
    for (const auto& p : pieces) l = std::copy(p.begin(), p.end(), l);
    return py::make_tuple(to_array(out), counters, layout);
  }

 private:
  struct State : EncodeState {
    using EncodeState::EncodeState;
    std::string doc_text;        // a document's decoded text
    std::vector<int32_t> ids;     // the encoder's output, widened into the sample
  };

  // Bounds-checked access to a packed dataset's arrays (std::out_of_range -> IndexError).
  template <typename Tok, typename Idx>
  struct Reader {
    const Tok* tokens; size_t n_tokens;
    const int64_t* pointers; const int32_t* lengths; size_t n_docs;
    const Idx* order; size_t n_order;
    int64_t doc(int64_t k) const {
      if (k < 0 || static_cast<size_t>(k) >= n_order) throw std::out_of_range("document order position out of range");
      const int64_t d = static_cast<int64_t>(order[k]);
      if (d < 0 || static_cast<size_t>(d) >= n_docs) throw std::out_of_range("document id out of range");
      return d;
    }
    const Tok* span(int64_t d, int64_t start, int64_t end) const {
      const int64_t first = pointers[d] / static_cast<int64_t>(sizeof(Tok));
      if (start < 0 || end < start || end > lengths[d] || first < 0 ||
          static_cast<size_t>(first + end) > n_tokens)
        throw std::out_of_range("token span outside its document or the .bin");
      return tokens + first + start;
    }
  };

  // One whole document [b, e) (piece `piece` of the sample): transformed with probability
  // `rate` when it decodes losslessly, else copied. Returns what was done (see sample()).
  template <typename Tok>
  int document(const Tok* b, const Tok* e, uint64_t seed, uint64_t sample_id, uint64_t piece, int64_t doc,
               double rate, double spm_rate, State* st, std::vector<int64_t>* out, int64_t* stats) const {
    ++stats[kEligible];
    const uint64_t key = doc_key(seed, sample_id, piece, static_cast<uint64_t>(doc));
    if (!(unit(draw(key, 0)) < rate)) { out->insert(out->end(), b, e); return 0; }
    const bool has_bos = bos_ >= 0 && b < e && *b == bos_;
    const bool has_eos = eos_ >= 0 && e - b > (has_bos ? 1 : 0) && e[-1] == eos_;
    const Tok* body = b + has_bos;
    if (!dec_->decode(body, static_cast<size_t>((e - has_eos) - body), &st->doc_text)) {
      ++stats[kUnclean];
      out->insert(out->end(), b, e);
      return 3;
    }
    const uint64_t n = count_cps(st->doc_text);
    const uint64_t x = below(draw(key, 2), n + 1), y = below(draw(key, 3), n + 1);
    const bool spm = unit(draw(key, 1)) < spm_rate;
    const size_t before = out->size();
    if (has_bos) out->push_back(bos_);
    emit(st->doc_text, std::min(x, y), std::max(x, y), spm, st, out);
    if (has_eos) out->push_back(eos_);
    ++stats[kTransformed];
    stats[kSpm] += spm;
    stats[kTokensIn] += e - b;
    stats[kTokensOut] += static_cast<int64_t>(out->size() - before);
    return spm ? 2 : 1;
  }

  void encode(std::string_view s, bool dummy_prefix, State* st, std::vector<int64_t>* out) const {
    st->ids.clear();
    enc_->encode(s, dummy_prefix, st, &st->ids);
    out->insert(out->end(), st->ids.begin(), st->ids.end());
  }

  // The layout of `text` split at code points lo <= hi (clamped to its length).
  void emit(std::string_view text, uint64_t lo, uint64_t hi, bool spm, State* st, std::vector<int64_t>* out) const {
    const size_t a = byte_of(text, lo), c = byte_of(text, hi);
    const std::string_view prefix = text.substr(0, a), middle = text.substr(a, c - a), suffix = text.substr(c);
    out->push_back(pre_);
    if (spm) {
      out->push_back(suf_);
      encode(suffix, false, st, out);
      out->push_back(mid_);
      encode(text.substr(0, c), true, st, out);  // prefix + middle in one piece of text
    } else {
      encode(prefix, true, st, out);
      out->push_back(suf_);
      encode(suffix, false, st, out);
      out->push_back(mid_);
      encode(middle, false, st, out);
    }
    out->push_back(eot_);
  }

  static py::array_t<int64_t> to_array(const std::vector<int64_t>& v) {
    py::array_t<int64_t> a(static_cast<py::ssize_t>(v.size()));
    std::copy(v.begin(), v.end(), a.mutable_data());
    return a;
  }

  // Scratch and word cache per concurrent caller, kept warm between calls.
  std::unique_ptr<State> acquire() {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.empty()) return std::make_unique<State>(cache_entries_);
    auto st = std::move(free_.back());
    free_.pop_back();
    return st;
  }
  void release(std::unique_ptr<State> st) {
    std::lock_guard<std::mutex> lock(mu_);
    free_.push_back(std::move(st));
  }

  std::unique_ptr<BpeEncoder> enc_;
  std::unique_ptr<Decoder> dec_;
  int64_t pre_, suf_, mid_, eot_, bos_, eos_;  // bos_/eos_ < 0: none
  size_t cache_entries_;
  std::mutex mu_;
  std::vector<std::unique_ptr<State>> free_;
};

}  // namespace

PYBIND11_MODULE(_fim, m) {
  m.doc() = "Code Llama fill-in-the-middle transform on token ids (csrc/fim.cpp documents it)";
  m.attr("NUM_STATS") = static_cast<int>(kNumStats);
  py::class_<Fim>(m, "Fim")
      .def(py::init<const py::bytes&, int, int, int, int, int, int, size_t>(), py::arg("serialized_model"),
           py::arg("pre_id"), py::arg("suf_id"), py::arg("mid_id"), py::arg("eot_id"), py::arg("bos_id"),
           py::arg("eos_id"), py::arg("cache_entries") = 1 << 20)
      .def_property_readonly("vocab_size", &Fim::vocab_size)
      .def("fim_text", &Fim::fim_text, py::arg("text"), py::arg("lo"), py::arg("hi"), py::arg("spm"))
      .def("decode", &Fim::decode, py::arg("ids"))
      .def("sample_uint16_int32", &Fim::sample<uint16_t, int32_t>)
      .def("sample_uint16_int64", &Fim::sample<uint16_t, int64_t>)
      .def("sample_int32_int32", &Fim::sample<int32_t, int32_t>)
      .def("sample_int32_int64", &Fim::sample<int32_t, int64_t>)
      .def("sample_int64_int32", &Fim::sample<int64_t, int32_t>)
      .def("sample_int64_int64", &Fim::sample<int64_t, int64_t>);
}
