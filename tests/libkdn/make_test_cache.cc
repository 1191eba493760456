// Test helper for the install tests: writes a synthetic `.kv` and the reference export of one
// layer's keys as fp16 (KvReader::DecodeBlock, what `kdnctl export --kv k --dtype fp16` writes).
//   libkdn_make_test_cache OUT.kv REF.bin LAYER CODEC
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "kdn/format.h"
#include "kdn/synthetic.h"

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s OUT.kv REF.bin LAYER CODEC\n", argv[0]);
    return 2;
  }
  const uint32_t layer = static_cast<uint32_t>(std::strtoul(argv[3], nullptr, 10));
  kdn::Result<kdn::ModelIdentity> model = kdn::ModelPreset("tiny");
  kdn::Result<kdn::CodecSpec> codec = kdn::CodecSpec::Parse(argv[4]);
  if (!model.ok() || !codec.ok()) {
    std::fprintf(stderr, "bad model or codec\n");
    return 1;
  }
  kdn::Result<std::vector<std::byte>> bytes = kdn::SynthesizeKvFile(*model, 300, *codec, 9, 17);
  if (!bytes.ok()) {
    std::fprintf(stderr, "%s\n", bytes.status().ToString().c_str());
    return 1;
  }
  std::ofstream(argv[1], std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes->data()),
             static_cast<std::streamsize>(bytes->size()));
  kdn::Result<std::unique_ptr<kdn::KvReader>> r = kdn::KvReader::Open(argv[1]);
  if (!r.ok()) {
    std::fprintf(stderr, "%s\n", r.status().ToString().c_str());
    return 1;
  }
  std::vector<std::byte> ref((*r)->header().decoded_block_bytes(kdn::DType::kF16));
  const kdn::Status s = (*r)->DecodeBlock(layer, kdn::KvKind::kKey, kdn::DType::kF16, ref);
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  std::ofstream out(argv[2], std::ios::binary);
  out.write(reinterpret_cast<const char*>(ref.data()), static_cast<std::streamsize>(ref.size()));
  return out.good() ? 0 : 1;
}
