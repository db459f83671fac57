// SentencePiece model file reading, hash tables and the word cache of the BPE encoder (spm_bpe.h).
//
// parse_model_proto reads only the fields of sentencepiece_model.proto that the encoder needs,
// straight from the protobuf wire format, so C++ code links no protobuf library.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace megacode {
namespace spm {

enum PieceType : int { NORMAL = 1, UNKNOWN = 2, CONTROL = 3, USER_DEFINED = 4, UNUSED = 5, BYTE = 6 };

inline uint64_t mix64(uint64_t a, uint64_t b) {
  const __uint128_t r = static_cast<__uint128_t>(a) * b;
  return static_cast<uint64_t>(r) ^ static_cast<uint64_t>(r >> 64);
}

// Fast hash of short byte strings (words, pieces): fixed-size loads only, no memcpy calls.
inline uint64_t hash_bytes(const char* s, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xA0761D6478BD642Full);
  uint64_t v = 0;
  if (n >= 8) {
    const char* end = s + n;
    for (; s + 8 <= end; s += 8) {
      std::memcpy(&v, s, 8);
      h = mix64(h ^ v, 0xA0761D6478BD642Full);
    }
    if (s == end) return mix64(h, 0xE7037ED1A0B428DBull);
    std::memcpy(&v, end - 8, 8);  // the last 8 bytes, overlapping the previous block
  } else if (n >= 4) {
    uint32_t a, b;
    std::memcpy(&a, s, 4);
    std::memcpy(&b, s + n - 4, 4);
    v = (static_cast<uint64_t>(a) << 32) | b;
  } else if (n > 0) {
    const auto* u = reinterpret_cast<const unsigned char*>(s);
    v = (static_cast<uint64_t>(u[0]) << 16) | (static_cast<uint64_t>(u[n >> 1]) << 8) | u[n - 1];
  }
  return mix64(h ^ v, 0xE7037ED1A0B428DBull);
}

// UTF-8 length from the lead byte, as sentencepiece's string_util::OneCharLen.
inline int one_char_len(unsigned char c) {
  static constexpr int kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[c >> 4];
}

inline uint32_t decode_cp(const char* s, int len) {
  const auto* u = reinterpret_cast<const unsigned char*>(s);
  switch (len) {
    case 1: return u[0];
    case 2: return ((u[0] & 0x1Fu) << 6) | (u[1] & 0x3Fu);
    case 3: return ((u[0] & 0x0Fu) << 12) | ((u[1] & 0x3Fu) << 6) | (u[2] & 0x3Fu);
    default: return ((u[0] & 0x07u) << 18) | ((u[1] & 0x3Fu) << 12) | ((u[2] & 0x3Fu) << 6) | (u[3] & 0x3Fu);
  }
}

// Strict UTF-8 check (no overlongs, surrogates or code points past U+10FFFF).
inline bool valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    if (*p < 0x80) { ++p; continue; }
    const int n = one_char_len(*p);
    if (n == 1 || p + n > end) return false;
    for (int k = 1; k < n; ++k) if ((p[k] & 0xC0) != 0x80) return false;
    const uint32_t cp = decode_cp(reinterpret_cast<const char*>(p), n);
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    p += n;
  }
  return true;
}

// Score order of sentencepiece 0.2.3's SymbolPairComparator (it compares the float's bit
// pattern; -0.0 ranks below +0.0), as an unsigned key: larger key = merged first.
inline uint32_t score_key(float score) {
  uint32_t i;
  std::memcpy(&i, &score, 4);
  return (i & 0x80000000u) ? ~i : (i | 0x80000000u);
}

// Open-addressing map from byte strings (views into storage that outlives it) to int32.
class StrMap {
 public:
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap <<= 1;
    slots_.assign(cap, Slot{});
    mask_ = cap - 1;
  }
  bool insert(std::string_view key, int32_t value) {  // false when the key is already there
    if (slots_.empty() || 2 * (size_ + 1) > slots_.size()) grow();
    const uint64_t h = hash_bytes(key.data(), key.size());
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      Slot& s = slots_[i];
      if (s.value < 0) { s = Slot{key.data(), static_cast<uint32_t>(key.size()), value}; ++size_; return true; }
      if (s.len == key.size() && std::memcmp(s.data, key.data(), key.size()) == 0) return false;
    }
  }
  int32_t find(const char* data, size_t len) const {  // -1 when absent
    if (slots_.empty()) return -1;
    const uint64_t h = hash_bytes(data, len);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.value < 0) return -1;
      if (s.len == len && std::memcmp(s.data, data, len) == 0) return s.value;
    }
  }

 private:
  struct Slot { const char* data = nullptr; uint32_t len = 0; int32_t value = -1; };
  void grow() {
    std::vector<Slot> old;
    old.swap(slots_);
    reserve(std::max<size_t>(16, size_ * 2));
    size_ = 0;
    for (const Slot& s : old) if (s.value >= 0) insert(std::string_view(s.data, s.len), s.value);
  }
  std::vector<Slot> slots_;
  size_t mask_ = 0, size_ = 0;
};

// Open-addressing map from uint64 keys to small values (code-point bigrams, char ids, merges).
template <typename V>
class U64Map {
 public:
  void insert(uint64_t key, V value) {  // keeps the first value of a key
    if (2 * (size_ + 1) > slots_.size()) grow();
    for (size_t i = mix64(key, 0x9E3779B97F4A7C15ull) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return;
      if (slots_[i].key == kEmpty) { slots_[i] = Slot{key, value}; ++size_; return; }
    }
  }
  const V* find(uint64_t key) const {  // nullptr when absent
    if (slots_.empty()) return nullptr;
    for (size_t i = mix64(key, 0x9E3779B97F4A7C15ull) & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return &slots_[i].value;
      if (slots_[i].key == kEmpty) return nullptr;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~0ull;  // never a key: ids and code points are < 2^31
  struct Slot { uint64_t key = kEmpty; V value{}; };
  void grow() {
    std::vector<Slot> old;
    old.swap(slots_);
    slots_.assign(std::max<size_t>(64, old.size() * 2), Slot{});
    mask_ = slots_.size() - 1;
    size_ = 0;
    for (const Slot& s : old) if (s.key != kEmpty) insert(s.key, s.value);
  }
  std::vector<Slot> slots_;
  size_t mask_ = 0, size_ = 0;
};

inline uint64_t pair_key(uint32_t a, uint32_t b) { return (static_cast<uint64_t>(a) << 32) | b; }

// The fields of sentencepiece_model.proto the encoder needs, read from the serialized ModelProto.
struct ModelSpec {
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<int> types;
  int model_type = 1;  // TrainerSpec.model_type: UNIGRAM=1, BPE=2
  bool byte_fallback = false, treat_whitespace_as_suffix = false;
  std::string normalizer_name;
  bool has_charsmap = false, add_dummy_prefix = true, remove_extra_whitespaces = true, escape_whitespaces = true;
};

// Minimal protobuf wire-format reader (varint, fixed32/64, length-delimited).
class Wire {
 public:
  Wire(const char* p, size_t n) : p_(reinterpret_cast<const uint8_t*>(p)), end_(p_ + n) {}
  bool done() const { return p_ >= end_; }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ >= end_) throw std::invalid_argument("model proto: truncated varint");
      const uint8_t b = *p_++;
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
    throw std::invalid_argument("model proto: varint too long");
  }
  std::string_view bytes() {
    const uint64_t n = varint();
    if (n > static_cast<uint64_t>(end_ - p_)) throw std::invalid_argument("model proto: truncated field");
    std::string_view out(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return out;
  }
  uint32_t fixed32() {
    if (end_ - p_ < 4) throw std::invalid_argument("model proto: truncated fixed32");
    uint32_t v;
    std::memcpy(&v, p_, 4);
    p_ += 4;
    return v;
  }
  void skip(int wire_type) {
    switch (wire_type) {
      case 0: varint(); break;
      case 1: if (end_ - p_ < 8) throw std::invalid_argument("model proto: truncated fixed64"); p_ += 8; break;
      case 2: bytes(); break;
      case 5: fixed32(); break;
      default: throw std::invalid_argument("model proto: unsupported wire type " + std::to_string(wire_type));
    }
  }

 private:
  const uint8_t* p_;
  const uint8_t* end_;
};

inline ModelSpec parse_model_proto(std::string_view data) {
  ModelSpec m;
  Wire top(data.data(), data.size());
  while (!top.done()) {
    const uint64_t tag = top.varint();
    const int field = static_cast<int>(tag >> 3), wt = static_cast<int>(tag & 7);
    if (field == 1 && wt == 2) {  // repeated SentencePiece pieces
      std::string_view sub = top.bytes();
      Wire w(sub.data(), sub.size());
      std::string piece;
      float score = 0.f;
      int type = NORMAL;
      while (!w.done()) {
        const uint64_t t = w.varint();
        const int f = static_cast<int>(t >> 3), k = static_cast<int>(t & 7);
        if (f == 1 && k == 2) piece = std::string(w.bytes());
        else if (f == 2 && k == 5) { const uint32_t b = w.fixed32(); std::memcpy(&score, &b, 4); }
        else if (f == 3 && k == 0) type = static_cast<int>(w.varint());
        else w.skip(k);
      }
      m.pieces.push_back(std::move(piece));
      m.scores.push_back(score);
      m.types.push_back(type);
    } else if (field == 2 && wt == 2) {  // TrainerSpec
      std::string_view sub = top.bytes();
      Wire w(sub.data(), sub.size());
      while (!w.done()) {
        const uint64_t t = w.varint();
        const int f = static_cast<int>(t >> 3), k = static_cast<int>(t & 7);
        if (f == 3 && k == 0) m.model_type = static_cast<int>(w.varint());
        else if (f == 35 && k == 0) m.byte_fallback = w.varint() != 0;
        else if (f == 24 && k == 0) m.treat_whitespace_as_suffix = w.varint() != 0;
        else w.skip(k);
      }
    } else if (field == 3 && wt == 2) {  // NormalizerSpec
      std::string_view sub = top.bytes();
      Wire w(sub.data(), sub.size());
      while (!w.done()) {
        const uint64_t t = w.varint();
        const int f = static_cast<int>(t >> 3), k = static_cast<int>(t & 7);
        if (f == 1 && k == 2) m.normalizer_name = std::string(w.bytes());
        else if (f == 2 && k == 2) m.has_charsmap = !w.bytes().empty();
        else if (f == 3 && k == 0) m.add_dummy_prefix = w.varint() != 0;
        else if (f == 4 && k == 0) m.remove_extra_whitespaces = w.varint() != 0;
        else if (f == 5 && k == 0) m.escape_whitespaces = w.varint() != 0;
        else w.skip(k);
      }
    } else {
      top.skip(wt);
    }
  }
  return m;
}

// memcmp(a, b, n) == 0 without a library call for the short strings of the word cache.
inline bool same_bytes(const char* a, const char* b, size_t n) {
  if (n <= 16 && n >= 8) {
    uint64_t x0, y0, x1, y1;
    std::memcpy(&x0, a, 8); std::memcpy(&y0, b, 8);
    std::memcpy(&x1, a + n - 8, 8); std::memcpy(&y1, b + n - 8, 8);
    return x0 == y0 && x1 == y1;
  }
  if (n < 8) {
    for (size_t i = 0; i < n; ++i) if (a[i] != b[i]) return false;
    return true;
  }
  return std::memcmp(a, b, n) == 0;
}

// Per-thread memo: word bytes -> final ids. Reset when it grows past its budget.
class WordCache {
 public:
  static constexpr size_t kMaxWordBytes = 128;  // longer words are encoded every time
  explicit WordCache(size_t max_entries = 1 << 20) : max_entries_(max_entries) { clear(); }

  // Returns the cached ids of `w` as [begin, end) into ids(), or false.
  bool find(std::string_view w, uint64_t h, uint32_t* begin, uint32_t* end) const {
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.key_len == 0) return false;
      if (s.hash == h && s.key_len == w.size() && same_bytes(keys_.data() + s.key_off, w.data(), w.size())) {
        *begin = s.ids_off;
        *end = s.ids_off + s.ids_len;
        return true;
      }
    }
  }
  void insert(std::string_view w, uint64_t h, const int32_t* ids, size_t n) {
    if (size_ + 1 > max_entries_) clear();
    if (2 * (size_ + 1) > slots_.size()) rehash(slots_.size() * 2);
    Slot s{h, static_cast<uint32_t>(keys_.size()), static_cast<uint32_t>(w.size()),
           static_cast<uint32_t>(ids_.size()), static_cast<uint32_t>(n)};
    keys_.append(w.data(), w.size());
    ids_.insert(ids_.end(), ids, ids + n);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
      if (slots_[i].key_len == 0) { slots_[i] = s; ++size_; return; }
    }
  }
  const int32_t* ids() const { return ids_.data(); }
  void clear() {
    slots_.assign(1 << 12, Slot{});
    mask_ = slots_.size() - 1;
    size_ = 0;
    keys_.clear();
    ids_.clear();
  }

 private:
  struct Slot { uint64_t hash = 0; uint32_t key_off = 0, key_len = 0, ids_off = 0, ids_len = 0; };
  void rehash(size_t cap) {
    std::vector<Slot> old;
    old.swap(slots_);
    slots_.assign(cap, Slot{});
    mask_ = cap - 1;
    for (const Slot& s : old) {
      if (s.key_len == 0) continue;
      for (size_t i = s.hash & mask_;; i = (i + 1) & mask_) {
        if (slots_[i].key_len == 0) { slots_[i] = s; break; }
      }
    }
  }
  std::vector<Slot> slots_;
  size_t mask_ = 0, size_ = 0, max_entries_;
  std::string keys_;
  std::vector<int32_t> ids_;
};

}  // namespace spm
}  // namespace megacode
