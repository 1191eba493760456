// Element types and RoPE styles: sizes, names and parsing.
#include <algorithm>
#include <cctype>
#include <string>

#include "kdn/format.h"

namespace kdn {

namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  return out;
}

}  // namespace

size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kF16:
    case DType::kBF16:
      return 2;
    case DType::kF32:
      return 4;
  }
  return 0;  // not a dtype: callers validate before they multiply
}

std::string_view DTypeName(DType t) {
  switch (t) {
    case DType::kF16:
      return "fp16";
    case DType::kBF16:
      return "bf16";
    case DType::kF32:
      return "fp32";
  }
  return "invalid";
}

Result<DType> ParseDType(std::string_view name) {
  const std::string n = Lower(name);
  if (n == "fp16" || n == "f16" || n == "float16" || n == "half") return DType::kF16;
  if (n == "bf16" || n == "bfloat16") return DType::kBF16;
  if (n == "fp32" || n == "f32" || n == "float32" || n == "float") return DType::kF32;
  return Status::InvalidArgument("unknown dtype '" + std::string(name) +
                                 "' (have: fp16, bf16, fp32)");
}

std::string_view RopeStyleName(RopeStyle s) {
  switch (s) {
    case RopeStyle::kNone:
      return "none";
    case RopeStyle::kNeox:
      return "neox";
    case RopeStyle::kGptj:
      return "gptj";
  }
  return "invalid";
}

Result<RopeStyle> ParseRopeStyle(std::string_view name) {
  const std::string n = Lower(name);
  if (n == "none") return RopeStyle::kNone;
  if (n == "neox") return RopeStyle::kNeox;
  if (n == "gptj") return RopeStyle::kGptj;
  return Status::InvalidArgument("unknown rope style '" + std::string(name) +
                                 "' (have: none, neox, gptj)");
}

}  // namespace kdn
