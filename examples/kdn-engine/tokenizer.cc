#include "kdn-engine/tokenizer.h"

namespace kdn::engine {

std::vector<uint32_t> Tokenize(std::string_view text, bool bos) {
  std::vector<uint32_t> tokens;
  tokens.reserve(text.size() + 1);
  if (bos) tokens.push_back(kBos);
  for (const char c : text) tokens.push_back(static_cast<unsigned char>(c) + kFirstByteToken);
  return tokens;
}

std::string DetokenizeOne(uint32_t token) {
  if (token >= kFirstByteToken && token < kFirstByteToken + 256) {
    return std::string(1, static_cast<char>(token - kFirstByteToken));
  }
  return "<" + std::to_string(token) + ">";
}

std::string Detokenize(std::span<const uint32_t> tokens) {
  std::string text;
  for (const uint32_t t : tokens) text += DetokenizeOne(t);
  return text;
}

}  // namespace kdn::engine
