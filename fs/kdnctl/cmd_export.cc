// kdnctl export: one decoded K or V tensor as raw little-endian bytes.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "fs/kdnctl/args.h"
#include "fs/kdnctl/commands.h"
#include "kdn/format.h"
#include "store/format/file_io.h"

namespace kdnctl {

namespace {

constexpr char kUsage[] =
    "Usage: kdnctl export --layer L --kv k|v [--dtype T] FILE -o OUT\n"
    "Decodes the K or V block of layer L of FILE (checksum verified) and writes it to OUT as\n"
    "raw little-endian values, [tokens][kv_heads][head_dim], with no header. OUT '-' is stdout.\n\n"
    "  --layer L           0-based layer\n"
    "  --kv k|v            keys or values\n"
    "  --dtype fp16|bf16|fp32   element type to write (default: the model's)\n"
    "  -o, --output OUT    where to write\n";

constexpr OptionSpec kOptions[] = {
    {"layer", 0, true}, {"kv", 0, true}, {"dtype", 0, true}, {"output", 'o', true}};

kdn::Status WriteOut(const std::string& path, const std::vector<std::byte>& bytes) {
  if (path == "-") return kdn::WriteFull(STDOUT_FILENO, bytes, "standard output");
  kdn::UniqueFd fd = kdn::OpenFd(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (!fd.valid()) return kdn::Status::FromErrno("create " + path, errno);
  kdn::Status st = kdn::WriteFull(fd.get(), bytes, path);
  kdn::Status closed = fd.Close(path);
  return st.ok() ? closed : st;
}

}  // namespace

int RunExport(int argc, char** argv) {
  constexpr const char* kCmd = "export";
  auto args = ParseArgs(argc, argv, kOptions);
  if (!args.ok()) return UsageError(kCmd, args.status().message());
  if (args->help) {
    std::fputs(kUsage, stdout);
    return kExitOk;
  }
  const Args& a = *args;
  for (const char* need : {"layer", "kv", "output"}) {
    if (!a.Has(need)) return UsageError(kCmd, std::string("--") + need + " is required");
  }
  if (a.positional.size() != 1) return UsageError(kCmd, "expected one FILE");
  auto layer = ParseU32(*a.Get("layer"), "layer");
  if (!layer.ok()) return UsageError(kCmd, layer.status().message());
  const std::string& kv = a.values.at("kv");
  if (kv != "k" && kv != "v" && kv != "K" && kv != "V") {
    return UsageError(kCmd, "--kv must be k or v, not '" + kv + "'");
  }
  const kdn::KvKind kind = (kv == "k" || kv == "K") ? kdn::KvKind::kKey : kdn::KvKind::kValue;
  const std::string& path = a.positional[0];
  auto reader = kdn::KvReader::Open(path);
  if (!reader.ok()) return Fail(kCmd, kExitBadInput, WithPath(path, reader.status()));
  const kdn::KvHeader& h = (*reader)->header();
  kdn::DType dtype = h.model.dtype;
  if (auto d = a.Get("dtype")) {
    auto parsed = kdn::ParseDType(*d);
    if (!parsed.ok()) return UsageError(kCmd, parsed.status().message());
    dtype = *parsed;
  }
  if (*layer >= h.model.n_layers) {
    return UsageError(kCmd, "--layer " + std::to_string(*layer) + ": " + path + " has " +
                                std::to_string(h.model.n_layers) + " layers");
  }
  std::vector<std::byte> out(h.decoded_block_bytes(dtype));
  if (kdn::Status st = (*reader)->DecodeBlock(*layer, kind, dtype, out); !st.ok()) {
    return Fail(kCmd, kExitBadInput, WithPath(path, st));
  }
  if (kdn::Status st = WriteOut(*a.Get("output"), out); !st.ok()) {
    return Fail(kCmd, kExitBadInput, st.message());
  }
  return kExitOk;
}

}  // namespace kdnctl
