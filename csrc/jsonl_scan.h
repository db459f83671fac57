// JSONL lines -> the string values of requested top-level keys, for the preprocessing fast path.
//
// scan_line() accepts a line only when Python's `json.loads(line.decode("utf-8"))` would give a
// dict whose every requested key holds a non-empty str, and returns those strings as UTF-8
// byte-for-byte equal to Python's. Everything else, and everything where the two could differ,
// is handed back to Python (kPython), which then judges the line with json.loads as before:
//   - bytes that are not strict UTF-8 (Python's decode decides not_utf8 and its detail)
//   - anything that is not a strict JSON object (bad_json, not_object), including a UTF-8 BOM
//   - a requested key missing, not a string, or "" (missing_key, not_string, empty)
//   - a \uD800-\uDFFF escape that is not a high+low pair (a lone surrogate: not_utf8 or kept by
//     Python depending on which key holds it)
//   - nesting deeper than kMaxDepth (Python raises RecursionError somewhere past ~1000)
//   - a number longer than kMaxNumberChars (Python refuses ints over 4300 digits by default)
// It accepts what Python's json accepts beyond RFC 8259: NaN, Infinity and -Infinity. Duplicate
// keys: the last one wins, as in a dict built by json.loads. So kKept lines are decided here,
// and only unusual lines cost Python time. tests/data/test_preprocess_fast_path.py compares the
// two on random and adversarial lines.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace megacode {
namespace jsonl {

enum LineStatus : uint8_t { kKept = 0, kBlank = 1, kPython = 2 };

constexpr int kMaxDepth = 256;
constexpr size_t kMaxNumberChars = 1000;

// Strict UTF-8 as Python's bytes.decode("utf-8"): no overlong forms, no encoded surrogates,
// nothing above U+10FFFF.
inline bool valid_utf8(const unsigned char* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    // ASCII runs: 8 bytes at a time
    while (i + 8 <= n) {
      uint64_t v;
      std::memcpy(&v, s + i, 8);
      if (v & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    const unsigned char c = s[i];
    if (c < 0x80) { ++i; continue; }
    if (c >= 0xC2 && c <= 0xDF) {
      if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80) return false;
      i += 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      if (i + 2 >= n || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80) return false;
      if (c == 0xE0 && s[i + 1] < 0xA0) return false;   // overlong
      if (c == 0xED && s[i + 1] >= 0xA0) return false;  // UTF-16 surrogate
      i += 3;
    } else if (c >= 0xF0 && c <= 0xF4) {
      if (i + 3 >= n || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 || (s[i + 3] & 0xC0) != 0x80)
        return false;
      if (c == 0xF0 && s[i + 1] < 0x90) return false;   // overlong
      if (c == 0xF4 && s[i + 1] >= 0x90) return false;  // above U+10FFFF
      i += 4;
    } else {
      return false;
    }
  }
  return true;
}

// bytes.strip() whitespace: a line of nothing else is a blank line.
inline bool blank(std::string_view line) {
  for (const char c : line)
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\x0b' && c != '\x0c') return false;
  return true;
}

inline void append_utf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// A strict JSON scanner over one line of valid UTF-8. Every method returns false when the
// input is outside what it accepts for sure (the caller then hands the line to Python).
class LineScanner {
 public:
  explicit LineScanner(std::string_view line) : s_(line.data()), n_(line.size()) {}

  // The whole line is one object; `on_member(key, is_string, value, begin, end)` is called per
  // member, with the unescaped key, for string values the unescaped value (views valid until
  // the next call), and [begin, end): the byte offsets of the value's JSON text in the line.
  // Only whitespace may follow the object. Members are reported as they are read: a line that
  // fails later is rejected as a whole by the caller.
  template <typename OnMember>
  bool object(OnMember&& on_member) {
    skip_ws();
    return peek() == '{' && members(0, on_member) && end();
  }

 private:
  char peek() const { return i_ < n_ ? s_[i_] : '\0'; }
  bool eat(char c) {
    if (i_ < n_ && s_[i_] == c) { ++i_; return true; }
    return false;
  }
  void skip_ws() {
    while (i_ < n_ && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  bool end() {
    skip_ws();
    return i_ == n_;
  }
  bool literal(const char* word) {
    const size_t len = std::strlen(word);
    if (n_ - i_ < len || std::memcmp(s_ + i_, word, len) != 0) return false;
    i_ += len;
    return true;
  }

  bool value(int depth) {
    if (depth > kMaxDepth) return false;
    switch (peek()) {
      case '"': { std::string_view v; return string(&skip_buf_, &v); }
      case '{': return nested_object(depth);
      case '[': return array(depth);
      case 't': return literal("true");
      case 'f': return literal("false");
      case 'n': return literal("null");
      case 'N': return literal("NaN");
      case 'I': return literal("Infinity");
      default: return number();
    }
  }
  bool nested_object(int depth) {
    return members(depth, [](std::string_view, bool, std::string_view, size_t, size_t) {});
  }
  // The object at s_[i_] == '{', at nesting `depth` (0: the line's own object, whose string
  // values are unescaped for on_member; deeper objects are only checked).
  template <typename OnMember>
  bool members(int depth, OnMember&& on_member) {
    ++i_;  // '{'
    skip_ws();
    if (eat('}')) return true;
    while (true) {
      std::string_view key;  // key and value use separate buffers: both stay valid here
      if (!string(depth == 0 ? &key_buf_ : &skip_buf_, &key)) return false;
      skip_ws();
      if (!eat(':')) return false;
      skip_ws();
      const size_t begin = i_;
      if (depth == 0 && peek() == '"') {
        std::string_view value;
        if (!string(&value_buf_, &value)) return false;
        on_member(key, true, value, begin, i_);
      } else {
        if (!value(depth + 1)) return false;
        on_member(key, false, std::string_view(), begin, i_);
      }
      skip_ws();
      if (eat(',')) { skip_ws(); continue; }
      return eat('}');
    }
  }
  bool array(int depth) {
    ++i_;  // '['
    skip_ws();
    if (eat(']')) return true;
    while (true) {
      if (!value(depth + 1)) return false;
      skip_ws();
      if (eat(',')) { skip_ws(); continue; }
      return eat(']');
    }
  }
  static bool digit(char c) { return c >= '0' && c <= '9'; }
  bool number() {
    const size_t start = i_;
    if (eat('-') && peek() == 'I') return literal("Infinity");
    if (eat('0')) {
    } else if (i_ < n_ && s_[i_] >= '1' && s_[i_] <= '9') {
      while (i_ < n_ && digit(s_[i_])) ++i_;
    } else {
      return false;
    }
    if (i_ + 1 < n_ && s_[i_] == '.' && digit(s_[i_ + 1])) {
      i_ += 1;
      while (i_ < n_ && digit(s_[i_])) ++i_;
    }
    if (i_ < n_ && (s_[i_] == 'e' || s_[i_] == 'E')) {
      size_t j = i_ + 1;
      if (j < n_ && (s_[j] == '+' || s_[j] == '-')) ++j;
      if (j < n_ && digit(s_[j])) {
        i_ = j;
        while (i_ < n_ && digit(s_[i_])) ++i_;
      }
      // else: Python matches the number without the exponent, then fails on "e": so do we,
      // at the caller's next token
    }
    return i_ - start <= kMaxNumberChars;
  }
  static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  bool hex4(uint32_t* out) {
    if (n_ - i_ < 4) return false;
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const int h = hex(s_[i_ + k]);
      if (h < 0) return false;
      v = (v << 4) | static_cast<uint32_t>(h);
    }
    i_ += 4;
    *out = v;
    return true;
  }
  // A string at s_[i_] == '"' -> *out: a view into the line when it has no escapes, else into
  // *buf (unescaped). Raw control characters (< 0x20) are invalid, as in Python's strict mode.
  bool string(std::string* buf, std::string_view* out) {
    if (!eat('"')) return false;
    const size_t start = i_;
    while (i_ < n_) {
      const unsigned char c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') {
        *out = std::string_view(s_ + start, i_ - start);
        ++i_;
        return true;
      }
      if (c == '\\') break;
      if (c < 0x20) return false;
      ++i_;
    }
    if (i_ >= n_) return false;
    buf->assign(s_ + start, i_ - start);
    while (i_ < n_) {
      const unsigned char c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') {
        ++i_;
        *out = *buf;
        return true;
      }
      if (c < 0x20) return false;
      if (c != '\\') {
        const size_t run = i_;
        while (i_ < n_ && s_[i_] != '"' && s_[i_] != '\\' && static_cast<unsigned char>(s_[i_]) >= 0x20) ++i_;
        buf->append(s_ + run, i_ - run);
        continue;
      }
      if (++i_ >= n_) return false;
      const char e = s_[i_++];
      switch (e) {
        case '"': buf->push_back('"'); break;
        case '\\': buf->push_back('\\'); break;
        case '/': buf->push_back('/'); break;
        case 'b': buf->push_back('\b'); break;
        case 'f': buf->push_back('\f'); break;
        case 'n': buf->push_back('\n'); break;
        case 'r': buf->push_back('\r'); break;
        case 't': buf->push_back('\t'); break;
        case 'u': {
          uint32_t cp;
          if (!hex4(&cp)) return false;
          if (cp >= 0xDC00 && cp <= 0xDFFF) return false;  // a lone low surrogate
          if (cp >= 0xD800 && cp <= 0xDBFF) {               // must be followed by a low one
            uint32_t lo;
            if (n_ - i_ < 6 || s_[i_] != '\\' || s_[i_ + 1] != 'u') return false;
            i_ += 2;
            if (!hex4(&lo) || lo < 0xDC00 || lo > 0xDFFF) return false;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(cp, buf);
          break;
        }
        default: return false;
      }
    }
    return false;
  }

  const char* s_;
  size_t n_, i_ = 0;
  std::string key_buf_, value_buf_, skip_buf_;
};

// The requested keys' strings of the line last scanned, and the buffers behind them.
struct LineFields {
  std::vector<std::string_view> values;  // values[k]: keys[k]'s string (into the line or `copies`)
  std::vector<std::string> copies;       // unescaped values (the scanner reuses its own buffer)
  std::vector<int8_t> kind;              // 0 absent, 1 a string, 2 something else: the last one counts
  std::vector<int64_t> meta;             // per metadata key: [begin, end) of its JSON text, or -1 -1
};

// One line (without its '\n') -> kKept with fields->values[k] = the string of keys[k] (valid
// until the next call with the same fields and as long as the line), kBlank, or kPython.
// fields->meta gets where each of `meta_keys` has its value in the line (the last one counts).
inline LineStatus scan_line(std::string_view line, const std::vector<std::string>& keys,
                            const std::vector<std::string>& meta_keys, LineFields* fields) {
  if (blank(line)) return kBlank;
  if (!valid_utf8(reinterpret_cast<const unsigned char*>(line.data()), line.size())) return kPython;
  const size_t nkeys = keys.size();
  fields->copies.resize(nkeys);
  fields->values.assign(nkeys, std::string_view());
  fields->kind.assign(nkeys, 0);
  fields->meta.assign(2 * meta_keys.size(), -1);
  const char* const line_end = line.data() + line.size();
  LineScanner scanner(line);
  const bool ok = scanner.object([&](std::string_view key, bool is_string, std::string_view value, size_t begin,
                                     size_t end) {
    for (size_t m = 0; m < meta_keys.size(); ++m) {
      if (key != meta_keys[m]) continue;
      fields->meta[2 * m] = static_cast<int64_t>(begin);
      fields->meta[2 * m + 1] = static_cast<int64_t>(end);
    }
    for (size_t k = 0; k < nkeys; ++k) {
      if (key != keys[k]) continue;
      fields->kind[k] = is_string ? 1 : 2;
      if (!is_string) continue;
      if (value.data() >= line.data() && value.data() + value.size() <= line_end) {
        fields->values[k] = value;  // no escapes: a view into the line itself
      } else {
        fields->copies[k].assign(value.data(), value.size());
        fields->values[k] = fields->copies[k];
      }
    }
  });
  if (!ok) return kPython;
  for (size_t k = 0; k < nkeys; ++k)
    if (fields->kind[k] != 1 || fields->values[k].empty()) return kPython;
  return kKept;
}

}  // namespace jsonl
}  // namespace megacode
