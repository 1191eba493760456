// kdnctl, run as a program: the "done when" items and the command-line contract (help on
// every command, exit codes 0/1/2, errors as `kdnctl <cmd>: <message>` on stderr).
#include <sys/wait.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "format_test_util.h"

namespace kdn {
namespace {

struct Outcome {
  int code = -1;
  std::string out, err;
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::byte> ReadBytes(const std::string& path) {
  const std::string s = ReadAll(path);
  return std::vector<std::byte>(reinterpret_cast<const std::byte*>(s.data()),
                                reinterpret_cast<const std::byte*>(s.data()) + s.size());
}

void WriteBytes(const std::string& path, const std::vector<std::byte>& b) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

class KdnctlTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { dir_ = new test::TempDir("kdnctl"); }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  static std::string Path(const std::string& name) { return (*dir_) / name; }

  static Outcome Kdnctl(const std::vector<std::string>& args) {
    std::string cmd = Quote(KDNCTL_PATH);
    for (const auto& a : args) cmd += " " + Quote(a);
    const std::string out = Path("stdout"), err = Path("stderr");
    cmd += " >" + Quote(out) + " 2>" + Quote(err);
    const int status = std::system(cmd.c_str());
    Outcome r;
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.out = ReadAll(out);
    r.err = ReadAll(err);
    return r;
  }

  // The llama3-8b lossless cache of the issue, made once for the suite.
  static const std::string& Llama1024() {
    static const std::string path = [] {
      const std::string p = Path("llama-lossless.kv");
      const Outcome r = Kdnctl(
          {"synth", "--model", "llama3-8b", "--tokens", "1024", "--codec", "lossless", "-o", p});
      EXPECT_EQ(r.code, 0) << r.err;
      return p;
    }();
    return path;
  }

  static test::TempDir* dir_;
};
test::TempDir* KdnctlTest::dir_ = nullptr;

TEST_F(KdnctlTest, HelpOnEveryCommandAndVersion) {
  Outcome r = Kdnctl({"--help"});
  EXPECT_EQ(r.code, 0);
  for (const char* cmd : {"synth", "inspect", "verify", "convert", "export"}) {
    EXPECT_NE(r.out.find(cmd), std::string::npos) << cmd;
    const Outcome h = Kdnctl({cmd, "--help"});
    EXPECT_EQ(h.code, 0) << cmd;
    EXPECT_EQ(h.out.rfind(std::string("Usage: kdnctl ") + cmd, 0), 0u) << h.out;
    const Outcome h2 = Kdnctl({"help", cmd});
    EXPECT_EQ(h2.code, 0);
    EXPECT_EQ(h2.out, h.out);
  }
  r = Kdnctl({"--version"});
  EXPECT_EQ(r.code, 0);
  EXPECT_EQ(r.out.rfind("kdnctl ", 0), 0u);
  EXPECT_EQ(Kdnctl({}).code, 2);
  r = Kdnctl({"frobnicate"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("unknown command 'frobnicate'"), std::string::npos);
  EXPECT_EQ(Kdnctl({"help", "frobnicate"}).code, 2);
}

TEST_F(KdnctlTest, SynthThenVerifySucceeds) {
  const Outcome r = Kdnctl({"verify", Llama1024()});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "ok\n");
  EXPECT_EQ(r.err, "");
  auto reader = KvReader::Open(Llama1024());
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ((*reader)->header().model.name, "llama3-8b");
  EXPECT_EQ((*reader)->header().n_tokens, 1024u);
  EXPECT_EQ((*reader)->header().codec.Name(), "lossless");
}

TEST_F(KdnctlTest, FlippingAnyByteOfABlockFailsVerifyNamingIt) {
  const auto original = ReadBytes(Llama1024());
  auto h = ParseKvHeader(original, original.size());
  ASSERT_TRUE(h.ok());
  const std::string bad = Path("flipped.kv");
  // First, middle and last byte of the first, a middle and the last block (each verify reads
  // the whole 93 MB file; the in-process tests flip every byte of every block of small files).
  for (size_t i : {size_t{0}, size_t{37}, h->blocks.size() - 1}) {
    const BlockEntry& b = h->blocks[i];
    for (uint64_t at : {uint64_t{0}, b.encoded_bytes / 2, b.encoded_bytes - 1}) {
      auto f = original;
      f[b.offset + at] ^= std::byte{0x04};
      WriteBytes(bad, f);
      const Outcome r = Kdnctl({"verify", bad});
      EXPECT_EQ(r.code, 1);
      EXPECT_EQ(r.out, "");
      const std::string want =
          "kdnctl verify: " + bad + ": " + layout::BlockName(i) + ": checksum mismatch";
      EXPECT_EQ(r.err.rfind(want, 0), 0u) << r.err;
      EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line";
    }
  }
}

TEST_F(KdnctlTest, SynthIsSynthesizeKvFile) {
  const ModelIdentity tiny = *ModelPreset("tiny");
  const std::string p = Path("tiny-q4.kv");
  const Outcome r = Kdnctl({"synth", "--model", "tiny", "--tokens", "300", "--codec", "q4+zstd",
                            "--seed", "9", "--position", "12", "-o", p});
  ASSERT_EQ(r.code, 0) << r.err;
  auto expected = SynthesizeKvFile(tiny, 300, test::Codec("q4+zstd"), 9, 12);
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ(ReadBytes(p), *expected);
}

TEST_F(KdnctlTest, ExportEqualsSynthesizedTensors) {
  const ModelIdentity m = *ModelPreset("llama3-8b");
  const size_t bytes = 1024 * m.channels() * 2;
  std::vector<std::byte> k(bytes), v(bytes);
  const std::string out = Path("export.bin");
  for (uint32_t layer : {0u, 17u, 31u}) {
    ASSERT_TRUE(SynthesizeLayerKv(m, 1024, layer, 1, k, v).ok());
    for (const char* kv : {"k", "v"}) {
      Outcome r =
          Kdnctl({"export", "--layer", std::to_string(layer), "--kv", kv, Llama1024(), "-o", out});
      ASSERT_EQ(r.code, 0) << r.err;
      EXPECT_EQ(ReadBytes(out), *kv == 'k' ? k : v) << "layer " << layer << " " << kv;
    }
    // Other dtypes: the conversion of the same values.
    Outcome r = Kdnctl({"export", "--layer", std::to_string(layer), "--kv", "v", "--dtype", "fp32",
                        Llama1024(), "-o", out});
    ASSERT_EQ(r.code, 0) << r.err;
    std::vector<std::byte> f32(bytes * 2);
    ConvertDType(DType::kBF16, v.data(), DType::kF32, f32.data(), bytes / 2);
    EXPECT_EQ(ReadBytes(out), f32);
  }
}

TEST_F(KdnctlTest, ExportHeadsIsThatSliceOfTheWholeTensor) {
  const ModelIdentity m = *ModelPreset("llama3-8b");  // 8 KV heads of 128
  const std::string whole = Path("whole.bin"), part = Path("part.bin");
  const std::string q4 = Path("llama-q4-heads.kv");
  Outcome r = Kdnctl({"synth", "--model", "llama3-8b", "--tokens", "40", "--codec", "q4+zstd",
                      "-o", q4});
  ASSERT_EQ(r.code, 0) << r.err;
  // Files of head groups: a range reads the groups that hold it, within or across groups.
  const std::string q4_g4 = Path("llama-q4-g4.kv"), tc_g8 = Path("llama-tc-g8.kv");
  r = Kdnctl({"synth", "--model", "llama3-8b", "--tokens", "40", "--codec", "q4+zstd",
              "--head-groups", "4", "-o", q4_g4});
  ASSERT_EQ(r.code, 0) << r.err;
  r = Kdnctl({"synth", "--model", "llama3-8b", "--tokens", "40", "--codec", "tc", "--head-groups",
              "auto", "-o", tc_g8});
  ASSERT_EQ(r.code, 0) << r.err;
  for (const std::string& file : {Llama1024(), q4, q4_g4, tc_g8}) {
    for (const char* heads : {"0:1", "2:4", "7:8", "0:8"}) {
      for (const char* kv : {"k", "v"}) {
        ASSERT_EQ(Kdnctl({"export", "--layer", "5", "--kv", kv, file, "-o", whole}).code, 0);
        r = Kdnctl({"export", "--layer", "5", "--kv", kv, "--heads", heads, file, "-o", part});
        ASSERT_EQ(r.code, 0) << r.err;
        const uint32_t a = heads[0] - '0', b = heads[2] - '0';
        const size_t head_bytes = size_t{m.head_dim} * 2;
        const std::vector<std::byte> w = ReadBytes(whole), p = ReadBytes(part);
        const size_t tokens = w.size() / (head_bytes * m.n_kv_heads);
        ASSERT_EQ(p.size(), tokens * (b - a) * head_bytes) << heads;
        for (size_t t = 0; t < tokens; ++t) {
          ASSERT_EQ(std::memcmp(p.data() + t * (b - a) * head_bytes,
                                w.data() + (t * m.n_kv_heads + a) * head_bytes,
                                (b - a) * head_bytes),
                    0)
              << file << " heads " << heads << " " << kv << " token " << t;
        }
      }
    }
  }
  for (const char* bad : {"4:4", "3:9", "2", "a:b"}) {
    r = Kdnctl({"export", "--layer", "0", "--kv", "k", "--heads", bad, Llama1024(), "-o", part});
    EXPECT_EQ(r.code, 2) << bad << ": " << r.err;
  }
}

TEST_F(KdnctlTest, HeadGroupsSynthVerifyInspectConvert) {
  const std::string g8 = Path("mistral-g8.kv"), g1 = Path("mistral-g1.kv");
  const std::string back = Path("mistral-back.kv");
  Outcome r = Kdnctl({"synth", "--model", "mistral-7b", "--tokens", "50", "--codec", "lossless",
                      "--head-groups", "8", "-o", g8});
  ASSERT_EQ(r.code, 0) << r.err;
  r = Kdnctl({"synth", "--model", "mistral-7b", "--tokens", "50", "--codec", "lossless", "-o", g1});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Kdnctl({"verify", g8}).code, 0);
  r = Kdnctl({"inspect", g8});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("head groups:   8 of 1 KV heads each"), std::string::npos) << r.out;
  r = Kdnctl({"inspect", "--json", g8});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("\"head_groups\": 8"), std::string::npos) << r.out;
  // One group again: the bytes of the file written without groups (lossless keeps every bit).
  r = Kdnctl({"convert", "--codec", "lossless", "--head-groups", "1", g8, back});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(ReadBytes(back) == ReadBytes(g1));
  // A flipped byte in one group's block: verify names the layer, K/V and group.
  auto bytes = ReadBytes(g8);
  auto h = ParseKvHeader(bytes, bytes.size());
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  const BlockEntry& b = h->block(3, KvKind::kKey, 6);
  bytes[b.offset + 17] ^= std::byte{4};
  const std::string bad = Path("mistral-g8-bad.kv");
  WriteBytes(bad, bytes);
  r = Kdnctl({"verify", bad});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("layer 3 K block, head group 6 (heads 6..6): checksum mismatch"),
            std::string::npos)
      << r.err;
  // Counts that do not split the heads are usage errors that say why.
  r = Kdnctl({"synth", "--model", "mistral-7b", "--tokens", "5", "--codec", "raw", "--head-groups",
              "3", "-o", Path("x.kv")});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("must divide n_kv_heads 8"), std::string::npos) << r.err;
  r = Kdnctl({"synth", "--model", "deepseek-v3", "--tokens", "5", "--codec", "raw", "--head-groups",
              "2", "-o", Path("x.kv")});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("MLA"), std::string::npos) << r.err;
}

TEST_F(KdnctlTest, ConvertLosslessToRawGivesTheOriginalRaw) {
  const std::string raw = Path("llama-raw.kv"), conv = Path("llama-converted.kv");
  Outcome r =
      Kdnctl({"synth", "--model", "llama3-8b", "--tokens", "1024", "--codec", "raw", "-o", raw});
  ASSERT_EQ(r.code, 0) << r.err;
  r = Kdnctl({"convert", "--codec", "raw", Llama1024(), conv});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string a = Path("a.bin"), b = Path("b.bin");
  for (uint32_t layer : {0u, 9u, 31u}) {
    for (const char* kv : {"k", "v"}) {
      ASSERT_EQ(Kdnctl({"export", "--layer", std::to_string(layer), "--kv", kv, raw, "-o", a}).code,
                0);
      ASSERT_EQ(
          Kdnctl({"export", "--layer", std::to_string(layer), "--kv", kv, conv, "-o", b}).code, 0);
      EXPECT_EQ(ReadBytes(a), ReadBytes(b)) << "layer " << layer << " " << kv;
    }
  }
  // Everything else is kept too: the converted file is the raw file, byte for byte.
  EXPECT_EQ(ReadBytes(conv), ReadBytes(raw));
  // Lossy conversions verify and keep the identity.
  const std::string q = Path("llama-q4.kv");
  r = Kdnctl({"convert", "--codec", "q4:g64+zstd", raw, q});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Kdnctl({"verify", q}).code, 0);
  auto qh = KvReader::Open(q);
  ASSERT_TRUE(qh.ok());
  auto rh = KvReader::Open(raw);
  ASSERT_TRUE(rh.ok());
  EXPECT_EQ((*qh)->header().codec.Name(), "q4:g64+zstd");
  EXPECT_EQ((*qh)->header().prefix_hashes, (*rh)->header().prefix_hashes);
  EXPECT_EQ((*qh)->header().fingerprint, (*rh)->header().fingerprint);
}

TEST_F(KdnctlTest, InspectShowsHeaderTableAndRatio) {
  Outcome r = Kdnctl({"inspect", Llama1024()});
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* want :
       {"llama3-8b", "32 layers", "8 KV heads", "head_dim 128", "bf16", "neox", "500000",
        "1024 at position 0", "lossless", "ratio", "bits per value", "xxh3-64"}) {
    EXPECT_NE(r.out.find(want), std::string::npos) << want << " in\n" << r.out;
  }
  auto h = KvReader::Open(Llama1024());
  ASSERT_TRUE(h.ok());
  EXPECT_NE(r.out.find((*h)->header().fingerprint.ToHex()), std::string::npos);
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 10 + 64);
  r = Kdnctl({"inspect", "--json", Llama1024()});
  ASSERT_EQ(r.code, 0);
  for (const char* want :
       {"\"n_kv_heads\": 8", "\"codec\": {\"name\": \"lossless\"", "\"blocks\": [",
        "\"layer\": 31, \"kind\": \"V\"", "\"bits_per_value\""}) {
    EXPECT_NE(r.out.find(want), std::string::npos) << want;
  }
  EXPECT_EQ(r.out.front(), '{');
  EXPECT_EQ(r.out.substr(r.out.size() - 2), "}\n");
}

// The presets of issue 16's layouts: sliding-window layers (gemma2-9b) and MLA (deepseek-v3).
TEST_F(KdnctlTest, SynthPresetsWithWindowsAndMla) {
  const std::string g = Path("gemma.kv");
  Outcome r = Kdnctl({"synth", "--model", "gemma2-9b", "--layers", "4", "--tokens", "20",
                      "--codec", "q8", "-o", g});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Kdnctl({"verify", g}).out, "ok\n");
  r = Kdnctl({"inspect", g});
  EXPECT_NE(r.out.find("window:        4096 tokens on layers 0 2\n"), std::string::npos) << r.out;
  r = Kdnctl({"inspect", "--json", g});
  EXPECT_NE(r.out.find("\"layer_windows\": [4096, 0, 4096, 0]"), std::string::npos) << r.out;

  const std::string d = Path("deepseek.kv");
  r = Kdnctl({"synth", "--model", "deepseek-v3", "--layers", "3", "--tokens", "20", "--codec",
              "q4", "-o", d});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Kdnctl({"verify", d}).out, "ok\n");
  r = Kdnctl({"inspect", d});
  EXPECT_NE(r.out.find("1 KV heads, head_dim 576"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("attention:     MLA, latent 512 + rope 64"), std::string::npos) << r.out;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 11 + 3);  // K rows only
  r = Kdnctl({"inspect", "--json", d});
  EXPECT_NE(r.out.find("\"attention\": \"mla\", \"kv_lora_rank\": 512"), std::string::npos);
  EXPECT_NE(r.out.find("\"layer\": 2, \"kind\": \"V\""), std::string::npos);  // the table as is
  const std::string d2 = Path("deepseek-lossless.kv");
  r = Kdnctl({"convert", "--codec", "lossless", d, d2});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Kdnctl({"verify", d2}).out, "ok\n");
  r = Kdnctl({"synth", "--model", "deepseek-v3", "--layers", "3", "--tokens", "20", "--codec",
              "tc", "-o", Path("deepseek-tc.kv")});
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.err.find("tc does not apply to MLA"), std::string::npos) << r.err;
}

TEST_F(KdnctlTest, ExitCodesAndErrors) {
  const std::string missing = Path("missing.kv");
  Outcome r = Kdnctl({"verify", missing});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err.rfind("kdnctl verify: open " + missing, 0), 0u) << r.err;
  const std::string text = Path("text.kv");
  { std::ofstream(text) << "this is not a cache\n" << std::string(200, 'x'); }
  r = Kdnctl({"inspect", text});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "kdnctl inspect: " + text + ": not a .kv file (bad magic)\n");
  // Usage errors: exit 2.
  const std::vector<std::vector<std::string>> usage = {
      {"synth", "--model", "tiny", "--tokens", "10", "--codec", "q5", "-o", Path("x.kv")},
      {"synth", "--model", "nope", "--tokens", "10", "--codec", "raw", "-o", Path("x.kv")},
      {"synth", "--model", "tiny", "--tokens", "0", "--codec", "raw", "-o", Path("x.kv")},
      {"synth", "--layers", "2", "--kv-heads", "2", "--head-dim", "7", "--dtype", "fp16",
       "--tokens", "4", "--codec", "raw", "-o", Path("x.kv")},
      {"synth", "--model", "tiny", "--model", "tiny"},
      {"inspect", "--bogus", Llama1024()},
      {"verify", Llama1024(), Llama1024()},
      {"export", "--layer", "0", "--kv", "x", Llama1024(), "-o", Path("x.bin")},
      {"export", "--layer", "32", "--kv", "k", Llama1024(), "-o", Path("x.bin")},
      {"export", "--layer", "0", "--kv", "k", "--dtype", "int4", Llama1024(), "-o", Path("x.bin")},
      {"convert", "--codec", "raw", Llama1024()},
      {"convert", "--codec", "raw", Llama1024(), Llama1024()},
  };
  for (const auto& args : usage) {
    r = Kdnctl(args);
    EXPECT_EQ(r.code, 2) << args[0] << " " << args[1] << ": " << r.err;
    EXPECT_EQ(r.err.rfind("kdnctl " + args[0] + ": ", 0), 0u) << r.err;
  }
  EXPECT_FALSE(std::filesystem::exists(Path("x.kv")));
  // A custom shape.
  r = Kdnctl({"synth",
              "--layers",
              "3",
              "--kv-heads",
              "2",
              "--head-dim",
              "16",
              "--dtype",
              "fp16",
              "--heads",
              "8",
              "--rope",
              "gptj",
              "--theta",
              "20000",
              "--name",
              "custom",
              "--tokens",
              "33",
              "--codec",
              "q8",
              "--chunk-tokens",
              "8",
              "-o",
              Path("custom.kv")});
  ASSERT_EQ(r.code, 0) << r.err;
  auto c = KvReader::Open(Path("custom.kv"));
  ASSERT_TRUE(c.ok());
  const KvHeader& ch = (*c)->header();
  EXPECT_EQ(ch.model.name, "custom");
  EXPECT_EQ(ch.model.n_heads, 8u);
  EXPECT_EQ(ch.model.rope_style, RopeStyle::kGptj);
  EXPECT_EQ(ch.model.rope_theta, 20000.0f);
  EXPECT_EQ(ch.chunk_tokens, 8u);
  EXPECT_EQ(ch.prefix_hashes.size(), 5u);
  // A verify failure in the header: exit 1, one line.
  auto f = ReadBytes(Path("custom.kv"));
  f[100] = std::byte{0xff};
  WriteBytes(Path("custom-bad.kv"), f);
  r = Kdnctl({"verify", Path("custom-bad.kv")});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("header checksum mismatch"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace kdn
