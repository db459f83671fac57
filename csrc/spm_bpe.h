// Exact SentencePiece BPE encoder for Llama-style models (header only; model reading in spm_model.h).
//
// Why our own core: DESIGN.md §4b; the measurements are in megacode/tokenizer/fast.py. In short,
// the PyPI binding (0.2.3) is ~2x faster than any SentencePiece C++ library we can build or
// install here (Debian 0.1.97, source 0.2.0/0.2.1), 0.2.3's own C++ does not build from PyPI/Debian
// sources, and the binding hides its C++ symbols. This encoder reproduces 0.2.3's results id for
// id (tests/data/test_tokenizer_parity.py checks it against the binding) and adds a word cache.
//
// Scope (anything else is refused at load, and callers fall back to the binding):
//   model_type BPE; normalizer "identity" (no precompiled charsmap), remove_extra_whitespaces false,
//   treat_whitespace_as_suffix false; no UNUSED pieces. Llama 2 / Code Llama models are in scope.
//
// The algorithm, as in sentencepiece 0.2.3 (src/normalizer.cc, src/bpe_model.cc,
// SentencePieceProcessor::EncodeOptimized):
//   1. normalize: "▁" prefix (add_dummy_prefix) and every ' ' -> "▁" (escape_whitespaces);
//   2. split into symbols: the longest USER_DEFINED piece at the position (frozen), else one char;
//   3. repeatedly merge the adjacent pair whose concatenation is a NORMAL/USER_DEFINED piece with
//      the highest score (ties: leftmost), neither side frozen;
//   4. each final symbol -> its id; a symbol that is no piece (or a CONTROL/UNKNOWN/BYTE one) is
//      unknown: with byte_fallback its UTF-8 bytes become <0xXX> pieces, else one <unk> per run.
// Speed-ups that keep the results exact:
//   - no merge can cross a position between two characters (a, b) when no mergeable piece
//     contains the bigram "ab", so the text is cut into words there; each word is encoded alone
//     and its ids are cached (a per-thread cache: code has few distinct words);
//   - merges are looked up by (left id, right id): every character has an id (its piece's, or a
//     "virtual" one when it occurs only inside pieces), and the table holds every split of every
//     piece into two symbols, so a pair is in it iff its concatenation is a mergeable piece;
//   - words of up to 48 symbols pick each merge by a scan instead of a heap (same order).
//
// From C++ (e.g. FIM), with the file of `megacode.tokenizer.Tokenizer.model_path`:
//   megacode::spm::BpeEncoder enc(file_bytes);   // std::invalid_argument when out of scope
//   megacode::spm::EncodeState st;               // one per thread: scratch and word cache
//   enc.encode(text, /*dummy_prefix=*/true, &st, &ids);   // appends to std::vector<int32_t>
// `text` must be valid UTF-8 (valid_utf8() checks; sentencepiece would map bad bytes to U+FFFD).
// dummy_prefix=false gives Code Llama's enc' (no implicit leading space).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "spm_model.h"

namespace megacode {
namespace spm {

// A merge rule: the pair (left id, right id) becomes piece `id`, ranked by `key`.
struct Merge { int32_t id; uint32_t key; };

// Scratch buffers reused across calls by one thread, plus its word cache.
struct EncodeState {
  explicit EncodeState(size_t cache_entries = 1 << 20, size_t linear_max = 48)
      : linear_max_symbols(linear_max), cache(cache_entries) {}
  std::string normalized;
  std::vector<int32_t> word_ids;
  struct Symbol { int prev, next; uint32_t begin, len; int32_t id; bool frozen; };  // id: piece, virtual or -1
  struct Pair { uint32_t key; int left, right; uint32_t len; int32_t id; };           // id: the merged piece
  std::vector<Symbol> symbols;
  std::vector<Pair> agenda;        // merge_heap's candidates
  std::vector<Merge> pair_merge;   // merge_linear's per-symbol candidate
  size_t linear_max_symbols;       // words up to this many symbols use merge_linear (tests vary it)
  WordCache cache;
  bool use_cache = true;  // false: every word through BPE (for measuring the cache's share)
  uint64_t words = 0, bpe_words = 0;  // words seen, words that went through BPE (cache misses)
};

class BpeEncoder {
 public:
  // Throws std::invalid_argument naming the reason when the model is out of scope.
  explicit BpeEncoder(std::string_view serialized_model) : spec_(parse_model_proto(serialized_model)) { init(); }
  BpeEncoder(const BpeEncoder&) = delete;  // the maps hold views into spec_'s strings
  BpeEncoder& operator=(const BpeEncoder&) = delete;

  int vocab_size() const { return static_cast<int>(spec_.pieces.size()); }
  bool byte_fallback() const { return spec_.byte_fallback; }
  int unk_id() const { return unk_id_; }

  // Appends the ids of `text` (valid UTF-8) to `out`, exactly as SentencePieceProcessor::Encode.
  // dummy_prefix=false drops the implicit leading "▁" (Code Llama's enc' for infilling).
  void encode(std::string_view text, bool dummy_prefix, EncodeState* st, std::vector<int32_t>* out) const {
    if (text.empty()) return;  // sentencepiece returns no ids for empty input
    normalize(text, dummy_prefix, &st->normalized);
    const std::string& norm = st->normalized;
    const char* s = norm.data();
    const size_t n = norm.size();
    const size_t doc_start = out->size();
    const size_t need = doc_start + n + 2;  // every id covers at least one byte of `norm`
    if (out->capacity() < need) out->reserve(std::max(need, 2 * out->capacity()));  // geometric: batches append
    size_t word = 0, i = 0;
    uint32_t prev = 0;
    while (i < n) {  // cut at every position no piece can span; encode each word alone
      const unsigned char c = static_cast<unsigned char>(s[i]);
      size_t len = 1;
      uint32_t k = c;  // char key: ASCII, kSpaceKey for the space symbol, else kWide | code point
      if (c >= 0x80) {
        len = std::min<size_t>(one_char_len(c), n - i);
        const uint32_t cp = decode_cp(s + i, static_cast<int>(len));
        k = cp == space_cp_ ? kSpaceKey : (kWide | cp);
      }
      if (i > 0 && !joined(prev, k)) {
        emit_word(std::string_view(s + word, i - word), st, out, doc_start);
        word = i;
      }
      prev = k;
      i += len;
    }
    emit_word(std::string_view(s + word, n - word), st, out, doc_start);
  }

 private:
  void init() {
    const ModelSpec& m = spec_;
    if (m.model_type != 2) throw std::invalid_argument("model_type is not BPE");
    if (m.has_charsmap) throw std::invalid_argument("normalizer has a precompiled charsmap (not identity)");
    if (m.remove_extra_whitespaces) throw std::invalid_argument("normalizer removes extra whitespaces");
    if (m.treat_whitespace_as_suffix) throw std::invalid_argument("treat_whitespace_as_suffix is set");
    const size_t n = m.pieces.size();
    all_.reserve(n);
    keys_.resize(n);
    reserved_.assign(n, 0);
    std::fill(byte_ids_, byte_ids_ + 256, -1);
    std::fill(ascii_ids_, ascii_ids_ + 128, -1);
    small_joined_.assign(129 * 129, 0);
    space_ = m.escape_whitespaces ? "\xe2\x96\x81" : " ";
    space_cp_ = m.escape_whitespaces ? 0x2581 : 0xFFFFFFFFu;  // no special key when spaces stay ' '

    for (size_t id = 0; id < n; ++id) {
      const std::string& p = m.pieces[id];
      const int type = m.types[id];
      if (p.empty()) throw std::invalid_argument("piece " + std::to_string(id) + " is empty");
      if (type == UNUSED) throw std::invalid_argument("model has UNUSED pieces");
      if (!all_.insert(p, static_cast<int32_t>(id))) throw std::invalid_argument("piece " + p + " is defined twice");
      keys_[id] = score_key(m.scores[id]);
      reserved_[id] = type != NORMAL && type != USER_DEFINED;
      if (type == UNKNOWN) {
        if (unk_id_ >= 0) throw std::invalid_argument("two UNKNOWN pieces");
        unk_id_ = static_cast<int>(id);
      }
      if (type == BYTE) {
        if (p.size() != 6 || p.compare(0, 3, "<0x") != 0 || p[5] != '>')
          throw std::invalid_argument("byte piece " + p + " is malformed");
        byte_ids_[std::stoi(p.substr(3, 2), nullptr, 16)] = static_cast<int32_t>(id);
      }
      if (type == USER_DEFINED) {
        user_defined_.insert(p, static_cast<int32_t>(id));
        max_user_defined_ = std::max(max_user_defined_, p.size());
      }
    }
    if (unk_id_ < 0) throw std::invalid_argument("model has no UNKNOWN piece");
    if (m.byte_fallback && std::count(byte_ids_, byte_ids_ + 256, -1) > 0)
      throw std::invalid_argument("byte_fallback is set but the 256 <0xXX> pieces are not all there");
    // Every single character gets an id: its piece's, or a "virtual" id >= vocab_size when it
    // occurs only inside pieces, so that merges are looked up by (left id, right id).
    int32_t next_virtual = static_cast<int32_t>(n);
    std::vector<std::pair<uint32_t, size_t>> chars;  // (code point, byte offset) of one piece
    for (size_t id = 0; id < n; ++id) {
      if (m.types[id] != NORMAL && m.types[id] != USER_DEFINED) continue;
      const std::string& p = m.pieces[id];
      split_chars(p, &chars);
      for (size_t k = 0; k < chars.size(); ++k) {
        const uint32_t cp = chars[k].first;
        if (char_id(cp) < 0 && all_.find(p.data() + chars[k].second, char_len(p, chars, k)) < 0)
          set_char_id(cp, next_virtual++);
        if (k > 0) {  // bigrams inside pieces: word cuts avoid them
          const uint32_t a = key_of_cp(chars[k - 1].first), b = key_of_cp(cp);
          if (a <= kSpaceKey && b <= kSpaceKey) small_joined_[a * 129 + b] = 1;
          else joined_.insert(pair_key(chars[k - 1].first, cp), 1);
        }
      }
    }
    for (size_t id = 0; id < n; ++id) {  // chars that are pieces themselves (any type)
      const std::string& p = m.pieces[id];
      if (static_cast<size_t>(one_char_len(static_cast<unsigned char>(p[0]))) == p.size())
        set_char_id(decode_cp(p.data(), static_cast<int>(p.size())), static_cast<int32_t>(id));
    }
    // Merge rules: each mergeable piece P, at each character boundary P = L + R where L and R
    // can be symbols (a single character, or a piece).
    for (size_t id = 0; id < n; ++id) {
      if (m.types[id] != NORMAL && m.types[id] != USER_DEFINED) continue;
      const std::string& p = m.pieces[id];
      split_chars(p, &chars);
      for (size_t k = 1; k < chars.size(); ++k) {
        const size_t cut = chars[k].second;
        const int32_t l = k == 1 ? char_id(chars[0].first) : all_.find(p.data(), cut);
        const int32_t r = k + 1 == chars.size() ? char_id(chars[k].first) : all_.find(p.data() + cut, p.size() - cut);
        if (l >= 0 && r >= 0) merges_.insert(pair_key(l, r), Merge{static_cast<int32_t>(id), keys_[id]});
      }
    }
  }

  static void split_chars(const std::string& p, std::vector<std::pair<uint32_t, size_t>>* out) {
    out->clear();
    for (size_t i = 0; i < p.size();) {
      const size_t len = std::min<size_t>(one_char_len(static_cast<unsigned char>(p[i])), p.size() - i);
      out->emplace_back(decode_cp(p.data() + i, static_cast<int>(len)), i);
      i += len;
    }
  }
  static size_t char_len(const std::string& p, const std::vector<std::pair<uint32_t, size_t>>& c, size_t k) {
    return (k + 1 < c.size() ? c[k + 1].second : p.size()) - c[k].second;
  }
  int32_t char_id(uint32_t cp) const {
    if (cp < 128) return ascii_ids_[cp];
    const int32_t* v = char_ids_.find(cp);
    return v ? *v : -1;
  }
  void set_char_id(uint32_t cp, int32_t id) {
    if (cp < 128) ascii_ids_[cp] = id;
    else char_ids_.insert(cp, id);  // a char gets a virtual id only when it is no piece: no clash
  }

  // Char keys for the word cuts: ASCII as is, the space symbol "▁" as kSpaceKey (both index a
  // direct [129 x 129] table, "▁" being the most frequent non-ASCII char), others kWide | cp.
  static constexpr uint32_t kSpaceKey = 128, kWide = 0x80000000u;
  uint32_t cp_of_key(uint32_t k) const { return k < 128 ? k : (k == kSpaceKey ? space_cp_ : (k & ~kWide)); }
  uint32_t key_of_cp(uint32_t cp) const { return cp < 128 ? cp : (cp == space_cp_ ? kSpaceKey : (kWide | cp)); }

  bool joined(uint32_t a, uint32_t b) const {  // does some piece contain char a followed by char b?
    if (a <= kSpaceKey && b <= kSpaceKey) return small_joined_[a * 129 + b] != 0;
    return joined_.find(pair_key(cp_of_key(a), cp_of_key(b))) != nullptr;
  }

  void normalize(std::string_view text, bool dummy_prefix, std::string* out) const {
    const bool prefix = dummy_prefix && spec_.add_dummy_prefix;
    out->resize((text.size() + (prefix ? 1 : 0)) * space_.size());  // worst case: every byte a space
    char* dst = out->data();
    const char* sp = space_.data();
    const size_t sn = space_.size();
    if (prefix) { std::memcpy(dst, sp, sn); dst += sn; }
    for (const char c : text) {
      if (c == ' ') { std::memcpy(dst, sp, sn); dst += sn; }
      else *dst++ = c;
    }
    out->resize(static_cast<size_t>(dst - out->data()));
  }

  // Appends a word's ids, merging runs of <unk> across words when there is no byte fallback.
  void append(const int32_t* ids, size_t k, std::vector<int32_t>* out, size_t doc_start) const {
    if (spec_.byte_fallback) {
      for (size_t i = 0; i < k; ++i) out->push_back(ids[i]);  // capacity reserved by encode()
      return;
    }
    for (size_t i = 0; i < k; ++i) {
      if (ids[i] == unk_id_ && out->size() > doc_start && out->back() == unk_id_) continue;
      out->push_back(ids[i]);
    }
  }

  void emit_word(std::string_view w, EncodeState* st, std::vector<int32_t>* out, size_t doc_start) const {
    ++st->words;
    if (w.size() > WordCache::kMaxWordBytes || !st->use_cache) {
      ++st->bpe_words;
      st->word_ids.clear();
      encode_word(w, st, &st->word_ids);
      append(st->word_ids.data(), st->word_ids.size(), out, doc_start);
      return;
    }
    const uint64_t h = hash_bytes(w.data(), w.size());
    uint32_t b, e;
    if (!st->cache.find(w, h, &b, &e)) {
      ++st->bpe_words;
      st->word_ids.clear();
      encode_word(w, st, &st->word_ids);
      st->cache.insert(w, h, st->word_ids.data(), st->word_ids.size());
      append(st->word_ids.data(), st->word_ids.size(), out, doc_start);
      return;
    }
    append(st->cache.ids() + b, e - b, out, doc_start);
  }

  // Final symbol -> ids: its piece, or its bytes (byte fallback), or <unk>.
  void emit_symbol(int32_t id, const char* p, size_t len, std::vector<int32_t>* out) const {
    if (id >= 0 && id < vocab_size() && !reserved_[id]) {
      out->push_back(id);
    } else if (spec_.byte_fallback) {
      for (size_t k = 0; k < len; ++k) out->push_back(byte_ids_[static_cast<unsigned char>(p[k])]);
    } else {
      out->push_back(unk_id_);
    }
  }

  const Merge* merge_of(const EncodeState::Symbol& L, const EncodeState::Symbol& R) const {
    if (L.frozen || R.frozen || L.id < 0 || R.id < 0) return nullptr;
    return merges_.find(pair_key(static_cast<uint32_t>(L.id), static_cast<uint32_t>(R.id)));
  }

  // Both merge loops apply, at each step, the pair with the highest score key, the leftmost among
  // equals: sentencepiece's order. Short words scan all pairs per step (no heap: O(n^2) but
  // faster for the usual ~12 symbols); long ones use a heap with lazy deletion, as sentencepiece.
  void merge_linear(std::string_view, EncodeState* st) const {
    auto& sym = st->symbols;
    auto& best_of = st->pair_merge;  // [symbols] merge of (i, next(i)), id -1 when none
    best_of.resize(sym.size());
    auto refresh = [&](int i) {
      const Merge* mg = (i >= 0 && sym[i].next >= 0) ? merge_of(sym[i], sym[sym[i].next]) : nullptr;
      if (i >= 0) best_of[i] = mg ? *mg : Merge{-1, 0};
    };
    for (int i = 0; i != -1; i = sym[i].next) refresh(i);
    while (true) {
      int best = -1;
      uint32_t key = 0;
      for (int i = 0; i != -1; i = sym[i].next) {
        if (best_of[i].id >= 0 && (best < 0 || best_of[i].key > key)) { best = i; key = best_of[i].key; }
      }
      if (best < 0) return;
      auto& L = sym[best];
      auto& R = sym[L.next];
      L.len += R.len;
      L.id = best_of[best].id;
      L.next = R.next;
      if (R.next >= 0) sym[R.next].prev = best;
      R.len = 0;
      refresh(best);
      refresh(L.prev);
    }
  }

  void merge_heap(std::string_view, EncodeState* st) const {
    auto& sym = st->symbols;
    auto& agenda = st->agenda;
    agenda.clear();
    auto lower = [](const EncodeState::Pair& a, const EncodeState::Pair& b) {
      return a.key < b.key || (a.key == b.key && a.left > b.left);
    };
    auto candidate = [&](int l, int r, bool heap) {
      if (l < 0 || r < 0) return;
      const Merge* mg = merge_of(sym[l], sym[r]);
      if (mg == nullptr) return;
      agenda.push_back({mg->key, l, r, sym[l].len + sym[r].len, mg->id});
      if (heap) std::push_heap(agenda.begin(), agenda.end(), lower);
    };
    for (int i = 1; i < static_cast<int>(sym.size()); ++i) candidate(i - 1, i, false);
    std::make_heap(agenda.begin(), agenda.end(), lower);
    while (!agenda.empty()) {
      std::pop_heap(agenda.begin(), agenda.end(), lower);
      const EncodeState::Pair top = agenda.back();
      agenda.pop_back();
      auto& L = sym[top.left];
      auto& R = sym[top.right];
      if (L.len == 0 || R.len == 0 || L.len + R.len != top.len) continue;  // stale
      L.len += R.len;
      L.id = top.id;
      L.next = R.next;
      if (R.next >= 0) sym[R.next].prev = top.left;
      R.len = 0;
      candidate(L.prev, top.left, true);
      candidate(top.left, L.next, true);
    }
  }

  // BPE over one word, the merge order of sentencepiece 0.2.3's bpe::Model::SampleEncode.
  void encode_word(std::string_view w, EncodeState* st, std::vector<int32_t>* out) const {
    auto& sym = st->symbols;
    sym.clear();
    for (size_t pos = 0; pos < w.size();) {
      size_t len = 0;
      int32_t id = -1;
      bool frozen = false;
      if (max_user_defined_ > 0) {  // longest USER_DEFINED piece starting here
        for (size_t k = std::min(max_user_defined_, w.size() - pos); k > 0 && !frozen; --k) {
          id = user_defined_.find(w.data() + pos, k);
          if (id >= 0) { len = k; frozen = true; }
        }
      }
      if (!frozen) {
        const unsigned char c = static_cast<unsigned char>(w[pos]);
        len = c < 0x80 ? 1 : std::min<size_t>(one_char_len(c), w.size() - pos);
        id = c < 0x80 ? ascii_ids_[c] : char_id(decode_cp(w.data() + pos, static_cast<int>(len)));
      }
      const int idx = static_cast<int>(sym.size());
      sym.push_back({idx - 1, idx + 1, static_cast<uint32_t>(pos), static_cast<uint32_t>(len), id, frozen});
      pos += len;
    }
    sym.back().next = -1;
    if (sym.size() <= st->linear_max_symbols) merge_linear(w, st);
    else merge_heap(w, st);
    for (int i = 0; i != -1; i = sym[i].next) emit_symbol(sym[i].id, w.data() + sym[i].begin, sym[i].len, out);
  }

  ModelSpec spec_;
  StrMap all_;           // every piece -> id
  StrMap user_defined_;  // USER_DEFINED pieces: matched whole and never merged
  size_t max_user_defined_ = 0;
  std::vector<uint32_t> keys_;     // [vocab] score_key of each piece
  std::vector<uint8_t> reserved_;  // [vocab] CONTROL/UNKNOWN/BYTE: never an encoding result
  int32_t byte_ids_[256];
  int32_t unk_id_ = -1;
  int32_t ascii_ids_[128];             // char -> piece id, virtual id (>= vocab) or -1
  U64Map<int32_t> char_ids_;           // the same for non-ASCII code points
  U64Map<Merge> merges_;               // pair_key(left id, right id) -> merged piece
  std::vector<uint8_t> small_joined_;  // [129 * 129] by char key: bigram (a, b) occurs inside a piece
  U64Map<uint8_t> joined_;             // the same for other bigrams, by code points
  std::string space_;
  uint32_t space_cp_ = 0;
};

}  // namespace spm
}  // namespace megacode
