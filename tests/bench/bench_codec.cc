// Benchmark group `codec`: encode and decode speed of each codec on one core, as a ratio to memcpy
// of the same bytes measured in the same run, on synthetic llama3-8b caches.
//
// For each token count, every block of the cache (32 layers x K/V) is encoded, then decoded into
// one reused output buffer, as an engine decodes layer by layer into its KV memory. The memcpy
// baseline copies the same number of bytes per block from the same kind of source (a distinct
// block of the raw cache each time) into the same output buffer. Each figure is the median of
// KDN_BENCH_RUNS timed runs after one warm-up run. Prints `name: value` lines; notes go to stderr.
// Codecs named as arguments replace the default list (`kdn_bench_codec tc:q=4 q4`).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <zstd.h>

#include "kdn/codec.h"
#include "kdn/format.h"
#include "kdn/synthetic.h"
#include "store/format/simd.h"
#include "tests/bench/bench_timing.h"

namespace {

using kdn::bench::MedianSeconds;

int Runs() {
  const char* s = std::getenv("KDN_BENCH_RUNS");
  const int n = s ? std::atoi(s) : 3;
  return n > 0 ? n : 3;
}

void Print(const std::string& name, double value) {
  if (value >= 100) {
    std::printf("%s: %.0f\n", name.c_str(), value);
  } else {
    std::printf("%s: %.3g\n", name.c_str(), value);
  }
}

std::string Key(const kdn::CodecSpec& c) {
  std::string s = c.Name();
  std::replace(s.begin(), s.end(), '+', '_');
  std::replace(s.begin(), s.end(), ':', '_');
  return s;
}

void Die(const kdn::Status& st, const char* what) {
  if (!st.ok()) {
    std::fprintf(stderr, "bench_codec: %s: %s\n", what, st.ToString().c_str());
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  using namespace kdn;
  const int runs = Runs();
  const ModelIdentity model = *ModelPreset("llama3-8b");
  // Codecs named on the command line replace the default list.
  std::vector<std::string> codecs = {"raw",     "lossless", "lossless:entropy=rans", "q8",
                                     "q4",      "q2",       "q8+zstd", "q4+zstd", "tc:q=2",
                                     "tc:q=4",  "tc:q=8"};
  if (argc > 1) codecs.assign(argv + 1, argv + argc);
  std::fprintf(stderr, "codec bench: %s, %d runs, isa %s\n", model.name.c_str(), runs,
               std::string(simd::IsaName(simd::BestIsa())).c_str());

  for (uint32_t tokens : {256u, 4096u}) {
    const BlockShape shape{tokens, model.channels(), model.dtype};
    const size_t block = shape.bytes();
    const size_t n_blocks = 2 * size_t{model.n_layers};
    // The raw cache, all blocks contiguous.
    std::vector<std::byte> raw(block * n_blocks);
    for (uint32_t l = 0; l < model.n_layers; ++l) {
      Die(SynthesizeLayerKv(model, tokens, l, 1, std::span(raw).subspan(2 * l * block, block),
                            std::span(raw).subspan((2 * l + 1) * block, block)),
          "synthesize");
    }
    std::vector<std::byte> out(2 * block);  // room for fp32 output
    const std::string t = "_t" + std::to_string(tokens);

    // memcpy of `bytes` per block, from distinct places of the raw cache.
    auto memcpy_mbps = [&](size_t bytes) {
      const double s = MedianSeconds(runs, [&] {
        for (size_t i = 0; i < n_blocks; ++i) {
          const size_t from = (i * bytes) % (raw.size() - bytes + 1);
          std::memcpy(out.data(), raw.data() + from, bytes);
        }
      });
      return double(bytes) * n_blocks / s / 1e6;
    };
    const double base = memcpy_mbps(block);        // bf16/fp16 output and raw input bytes
    const double base32 = memcpy_mbps(2 * block);  // fp32 output bytes
    Print("memcpy" + t + "_mbps", base);
    Print("memcpy" + t + "_fp32_mbps", base32);
    if (tokens == 4096) Print("memcpy_mbps", base);

    for (const std::string& name : codecs) {
      const Result<CodecSpec> parsed = CodecSpec::Parse(name);
      Die(parsed.status(), "codec");
      const CodecSpec codec = *parsed;
      const std::string p = "codec_" + Key(codec) + t;
      std::vector<std::vector<std::byte>> enc(n_blocks);
      // Encode: the raw bytes of every block, per second.
      const double enc_s = MedianSeconds(runs, [&] {
        for (size_t i = 0; i < n_blocks; ++i) {
          enc[i].clear();
          // As KvWriter does: the model and the layer (tc un-rotates keys, steps per layer).
          const BlockContext ctx = BlockContext::For(model, 0, static_cast<uint32_t>(i / 2));
          Die(EncodeBlock(codec, static_cast<KvKind>(i % 2), shape,
                          std::span(raw).subspan(i * block, block), &enc[i], ctx),
              "encode");
        }
      });
      size_t enc_bytes = 0;
      for (const auto& e : enc) enc_bytes += e.size();
      const double enc_mbps = double(block) * n_blocks / enc_s / 1e6;
      Print(p + "_encode_mbps", enc_mbps);
      Print(p + "_encode_vs_memcpy", enc_mbps / base);
      Print(p + "_ratio", double(block) * n_blocks / enc_bytes);
      Print(p + "_bits_per_value", 8.0 * enc_bytes / (double(shape.elements()) * n_blocks));

      // Decode: the output bytes per second, to the model dtype, and for quant also fp16/fp32.
      auto decode = [&](DType dt, const std::string& suffix, double baseline) {
        const size_t bytes = shape.elements() * DTypeSize(dt);
        const double s = MedianSeconds(runs, [&] {
          for (size_t i = 0; i < n_blocks; ++i) {
            Die(DecodeBlock(codec, static_cast<KvKind>(i % 2), shape, enc[i], dt,
                            std::span(out).first(bytes)),
                "decode");
          }
        });
        const double mbps = double(bytes) * n_blocks / s / 1e6;
        Print(p + "_decode" + suffix + "_mbps", mbps);
        Print(p + "_decode" + suffix + "_vs_memcpy", mbps / baseline);
      };
      decode(model.dtype, "", base);
      if (codec.id == CodecId::kLossless && !codec.rans) {
        // The zstd stage alone, into memory of the same size: what lossless decode approaches.
        std::vector<std::byte> planes(block);
        const double s = MedianSeconds(runs, [&] {
          for (size_t i = 0; i < n_blocks; ++i) {
            const size_t n = ZSTD_decompress(planes.data(), planes.size(), enc[i].data(), enc[i].size());
            if (n != planes.size()) Die(Status::Internal("zstd"), "zstd only");
          }
        });
        const double zstd_mbps = double(block) * n_blocks / s / 1e6;
        Print(p + "_zstd_only_mbps", zstd_mbps);
        const double dec_s = MedianSeconds(runs, [&] {
          for (size_t i = 0; i < n_blocks; ++i) {
            Die(DecodeBlock(codec, static_cast<KvKind>(i % 2), shape, enc[i], model.dtype,
                            std::span(out).first(block)),
                "decode");
          }
        });
        Print(p + "_decode_vs_zstd", s / dec_s);
      }
      if ((codec.id == CodecId::kQuant && !codec.zstd) || codec.id == CodecId::kTc) {
        decode(DType::kF16, "_fp16", base);
        decode(DType::kF32, "_fp32", base32);
      }
      std::fflush(stdout);
    }
  }
  return 0;
}
