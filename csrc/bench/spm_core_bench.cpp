// Single-thread encode speed of one SentencePiece core, for tools/bench_data.py --cores.
//
//   spm_core_bench MODEL CORPUS [nocache|warm]    CORPUS: documents separated by '\0'
// (warm: encode the corpus once untimed, so the word cache is full, then time a second pass)
// Built twice by the bench: with -DWITH_LIBSENTENCEPIECE against the system libsentencepiece
// (SentencePieceProcessor::Encode to ids), and without it against csrc/spm_bpe.h.
// Prints one line: "<tokens> <seconds> <checksum>" (checksum: a hash of every id, in order,
// so runs can be compared for identical output).
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#ifdef WITH_LIBSENTENCEPIECE
#include <sentencepiece_processor.h>
#else
#include "../spm_bpe.h"
#endif

static std::string read_file(const char* path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) { std::perror(path); std::exit(2); }
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

int main(int argc, char** argv) {
  if (argc < 3) { std::fprintf(stderr, "usage: %s MODEL CORPUS [nocache]\n", argv[0]); return 2; }
  const std::string corpus = read_file(argv[2]);
  std::vector<std::string_view> docs;
  for (size_t i = 0; i < corpus.size();) {
    size_t j = corpus.find('\0', i);
    if (j == std::string::npos) j = corpus.size();
    docs.emplace_back(corpus.data() + i, j - i);
    i = j + 1;
  }
#ifdef WITH_LIBSENTENCEPIECE
  sentencepiece::SentencePieceProcessor sp;
  if (!sp.Load(argv[1]).ok()) { std::fprintf(stderr, "cannot load %s\n", argv[1]); return 2; }
#else
  const megacode::spm::BpeEncoder enc(read_file(argv[1]));
  megacode::spm::EncodeState st;
  const std::string mode = argc > 3 ? argv[3] : "";
  st.use_cache = mode != "nocache";
  if (mode == "warm") {
    std::vector<int32_t> tmp;
    for (std::string_view d : docs) { tmp.clear(); enc.encode(d, true, &st, &tmp); }
    st.words = st.bpe_words = 0;
  }
#endif
  std::vector<int> ids;
  std::vector<int32_t> ids32;
  uint64_t tokens = 0, checksum = 1469598103934665603ull;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::string_view d : docs) {
#ifdef WITH_LIBSENTENCEPIECE
    ids.clear();
    if (!sp.Encode(std::string(d), &ids).ok()) { std::fprintf(stderr, "encode failed\n"); return 1; }
    for (int x : ids) checksum = (checksum ^ static_cast<uint64_t>(x)) * 1099511628211ull;
    tokens += ids.size();
#else
    ids32.clear();
    enc.encode(d, true, &st, &ids32);
    for (int32_t x : ids32) checksum = (checksum ^ static_cast<uint64_t>(x)) * 1099511628211ull;
    tokens += ids32.size();
#endif
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%llu %.6f %016llx\n", static_cast<unsigned long long>(tokens), secs,
              static_cast<unsigned long long>(checksum));
#ifndef WITH_LIBSENTENCEPIECE
  std::fprintf(stderr, "words %llu, through BPE %llu\n", static_cast<unsigned long long>(st.words),
               static_cast<unsigned long long>(st.bpe_words));
#endif
  return 0;
}
