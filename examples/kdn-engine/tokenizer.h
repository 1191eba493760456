// Text <-> tokens without the checkpoint's tokenizer (it is not available): every byte b of the
// text is token b + 3, the byte-fallback tokens <0x00>..<0xFF> of llama2.c's 512-token vocabulary.
// A document starts with BOS; a prompt that follows contexts continues their sequence (no BOS).
#ifndef KDN_EXAMPLES_KDN_ENGINE_TOKENIZER_H_
#define KDN_EXAMPLES_KDN_ENGINE_TOKENIZER_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kdn::engine {

inline constexpr uint32_t kBos = 1;
inline constexpr uint32_t kEos = 2;
inline constexpr uint32_t kFirstByteToken = 3;  // byte b is token b + 3, up to 258

// `bos`: start with BOS (a document, or a prompt without context).
std::vector<uint32_t> Tokenize(std::string_view text, bool bos);
// Tokens 3..258 as their bytes; any other id as "<id>".
std::string Detokenize(std::span<const uint32_t> tokens);
std::string DetokenizeOne(uint32_t token);

}  // namespace kdn::engine

#endif  // KDN_EXAMPLES_KDN_ENGINE_TOKENIZER_H_
