#include "kdn-engine/model.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>

namespace kdn::engine {

namespace {

constexpr size_t kHeaderInts = 7;
constexpr size_t kHeaderBytes = kHeaderInts * sizeof(int32_t);

// splitmix64: a counter-based generator, so weight i depends only on (seed, i).
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in [-amplitude, amplitude), from the top 24 bits (exact in float).
void FillUniform(float* out, uint64_t n, uint64_t seed, uint64_t stream, float amplitude) {
  const uint64_t base = Mix(seed ^ Mix(stream));
  for (uint64_t i = 0; i < n; ++i) {
    const float u = static_cast<float>(Mix(base + i) >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    out[i] = (2.0f * u - 1.0f) * amplitude;
  }
}

}  // namespace

uint64_t ModelConfig::checkpoint_floats() const {
  const uint64_t d = dim, h = hidden_dim, l = n_layers, kv = kv_dim(), v = vocab_size;
  uint64_t n = v * d;                         // token embedding
  n += l * (d + d * d + 2 * kv * d + d * d);  // rms_att, wq, wk, wv, wo
  n += l * (d + 3 * h * d);                   // rms_ffn, w1, w2, w3
  n += d;                                     // rms_final
  n += uint64_t{seq_len} * head_dim();        // legacy freq_cis real + imag (each seq*hs/2)
  if (!shared_classifier) n += v * d;
  return n;
}

Status ModelConfig::Validate() const {
  auto bad = [](const std::string& what) {
    return Status::InvalidArgument("model shape: " + what);
  };
  if (dim == 0 || hidden_dim == 0 || n_layers == 0 || n_heads == 0 || n_kv_heads == 0 ||
      vocab_size == 0 || seq_len == 0) {
    return bad("every dimension must be positive (" + Describe() + ")");
  }
  if (dim > 65536 || hidden_dim > 262144 || n_layers > 1024 || n_heads > 1024 ||
      vocab_size > (1u << 22) || seq_len > (1u << 22)) {
    return bad("a dimension is out of range (" + Describe() + ")");
  }
  if (dim % n_heads != 0) return bad("dim is not a multiple of n_heads");
  if (n_kv_heads > n_heads || n_heads % n_kv_heads != 0) {
    return bad("n_heads must be a multiple of n_kv_heads");
  }
  if (head_dim() % 2 != 0 || head_dim() > 1024) return bad("head_dim must be even and <= 1024");
  // Text is fed as byte tokens 3..258 (the checkpoint's tokenizer is not available).
  if (vocab_size < 259) return bad("vocab_size must be at least 259 (byte tokens are 3..258)");
  if (!(rope_theta > 0.0f) || !std::isfinite(rope_theta)) return bad("rope_theta must be > 0");
  if (checkpoint_floats() > (uint64_t{1} << 36)) return bad("more than 2^36 parameters");
  return Status::OK();
}

std::string ModelConfig::Describe() const {
  return "dim " + std::to_string(dim) + ", hidden " + std::to_string(hidden_dim) + ", layers " +
         std::to_string(n_layers) + ", heads " + std::to_string(n_heads) + ", kv heads " +
         std::to_string(n_kv_heads) + ", vocab " + std::to_string(vocab_size) + ", seq " +
         std::to_string(seq_len);
}

// A read-only mapping of a checkpoint file.
struct Model::Mapping {
  void* addr = MAP_FAILED;
  size_t size = 0;
  ~Mapping() {
    if (addr != MAP_FAILED) ::munmap(addr, size);
  }
};

Model::~Model() = default;

Result<std::unique_ptr<Model>> Model::Load(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno("open model " + path, errno);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return Status::FromErrno("stat model " + path, err);
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < kHeaderBytes) {
    ::close(fd);
    return Status::InvalidArgument(path + ": too short for a llama2.c checkpoint header");
  }
  auto mapping = std::make_unique<Mapping>();
  mapping->size = file_size;
  mapping->addr = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);
  if (mapping->addr == MAP_FAILED) return Status::FromErrno("mmap model " + path, map_err);

  int32_t h[kHeaderInts];
  std::memcpy(h, mapping->addr, kHeaderBytes);
  for (size_t i = 0; i < kHeaderInts; ++i) {
    if (i != 5 && h[i] <= 0) {
      return Status::InvalidArgument(path + ": header field " + std::to_string(i) +
                                     " is not positive (" + std::to_string(h[i]) + ")");
    }
  }
  if (h[5] == 0 || h[5] == INT32_MIN) return Status::InvalidArgument(path + ": bad vocab_size");
  ModelConfig c;
  c.dim = static_cast<uint32_t>(h[0]);
  c.hidden_dim = static_cast<uint32_t>(h[1]);
  c.n_layers = static_cast<uint32_t>(h[2]);
  c.n_heads = static_cast<uint32_t>(h[3]);
  c.n_kv_heads = static_cast<uint32_t>(h[4]);
  c.shared_classifier = h[5] > 0;
  c.vocab_size = static_cast<uint32_t>(h[5] > 0 ? h[5] : -h[5]);
  c.seq_len = static_cast<uint32_t>(h[6]);
  KDN_RETURN_IF_ERROR(c.Validate().WithContext(path));
  const uint64_t want = kHeaderBytes + c.checkpoint_floats() * sizeof(float);
  if (file_size != want) {
    return Status::InvalidArgument(path + ": " + std::to_string(file_size) + " bytes, but a " +
                                   c.Describe() + " checkpoint has " + std::to_string(want));
  }

  std::unique_ptr<Model> m(new Model());
  m->config_ = c;
  m->name_ = std::filesystem::path(path).stem().string();
  if (m->name_.empty() || m->name_.size() > 255) m->name_ = "llama2c";
  // The header is 28 bytes, so the floats after it are 4-byte aligned within the page-aligned map.
  const auto* floats =
      reinterpret_cast<const float*>(static_cast<const uint8_t*>(mapping->addr) + kHeaderBytes);
  m->mapping_ = std::move(mapping);
  KDN_RETURN_IF_ERROR(m->Bind(floats, c.checkpoint_floats()));
  return m;
}

Result<std::unique_ptr<Model>> Model::Synthetic(const ModelConfig& config, uint64_t seed) {
  KDN_RETURN_IF_ERROR(config.Validate());
  std::unique_ptr<Model> m(new Model());
  m->config_ = config;
  m->config_.shared_classifier = true;
  const ModelConfig& c = m->config_;
  m->name_ = "synthetic-d" + std::to_string(c.dim) + "-f" + std::to_string(c.hidden_dim) + "-l" +
             std::to_string(c.n_layers) + "-h" + std::to_string(c.n_heads) + "-kv" +
             std::to_string(c.n_kv_heads) + "-v" + std::to_string(c.vocab_size) + "-s" +
             std::to_string(seed);
  m->owned_.assign(c.checkpoint_floats(), 0.0f);
  KDN_RETURN_IF_ERROR(m->Bind(m->owned_.data(), m->owned_.size()));

  // Uniform weights with variance 1/fan_in keep activations in a normal range through the layers
  // (no overflow, no denormals that would distort timings); norm weights are 1.
  float* base = m->owned_.data();
  auto fill = [&](const float* t, uint64_t n, uint64_t stream, uint32_t fan_in) {
    float* p = base + (t - base);
    FillUniform(p, n, seed, stream, std::sqrt(3.0f / static_cast<float>(fan_in)));
  };
  auto ones = [&](const float* t, uint64_t n) { std::fill_n(base + (t - base), n, 1.0f); };
  const uint64_t d = c.dim, h = c.hidden_dim, kv = c.kv_dim();
  FillUniform(base + (m->token_embedding_ - base), uint64_t{c.vocab_size} * d, seed, 1, 1.0f);
  for (uint32_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = m->layers_[l];
    const uint64_t s = 16 + uint64_t{l} * 16;
    ones(w.rms_att, d);
    ones(w.rms_ffn, d);
    fill(w.wq, d * d, s + 0, c.dim);
    fill(w.wk, kv * d, s + 1, c.dim);
    fill(w.wv, kv * d, s + 2, c.dim);
    fill(w.wo, d * d, s + 3, c.dim);
    fill(w.w1, h * d, s + 4, c.dim);
    fill(w.w2, d * h, s + 5, c.hidden_dim);
    fill(w.w3, h * d, s + 6, c.dim);
  }
  ones(m->rms_final_, d);
  return m;
}

Status Model::Bind(const float* data, uint64_t n) {
  const ModelConfig& c = config_;
  const uint64_t d = c.dim, h = c.hidden_dim, l = c.n_layers, kv = c.kv_dim();
  if (n < c.checkpoint_floats()) return Status::Internal("model tensors exceed their buffer");
  const float* p = data;
  auto take = [&p](uint64_t count) {
    const float* t = p;
    p += count;
    return t;
  };
  token_embedding_ = take(uint64_t{c.vocab_size} * d);
  const float* rms_att = take(l * d);
  const float* wq = take(l * d * d);
  const float* wk = take(l * kv * d);
  const float* wv = take(l * kv * d);
  const float* wo = take(l * d * d);
  const float* rms_ffn = take(l * d);
  const float* w1 = take(l * h * d);
  const float* w2 = take(l * d * h);
  const float* w3 = take(l * h * d);
  rms_final_ = take(d);
  take(uint64_t{c.seq_len} * c.head_dim());  // legacy RoPE tables: RoPE is computed instead
  wcls_ = c.shared_classifier ? token_embedding_ : take(uint64_t{c.vocab_size} * d);
  layers_.resize(c.n_layers);
  for (uint64_t i = 0; i < l; ++i) {
    layers_[i] = LayerWeights{rms_att + i * d, wq + i * d * d, wk + i * kv * d,
                              wv + i * kv * d, wo + i * d * d, rms_ffn + i * d,
                              w1 + i * h * d,  w2 + i * d * h, w3 + i * h * d};
  }
  return Status::OK();
}

Result<ModelConfig> ParseSyntheticShape(std::string_view spec) {
  ModelConfig c;
  c.n_layers = 8;
  c.vocab_size = 512;
  c.seq_len = 4096;
  bool have_heads = false, have_hidden = false, have_kv = false;
  if (spec == "stories260K") {
    c = ModelConfig{64, 172, 5, 8, 4, 512, 512};
    KDN_RETURN_IF_ERROR(c.Validate());
    return c;
  }
  if (spec.empty()) return Status::InvalidArgument("--synthetic-shape: empty shape");
  while (!spec.empty()) {
    const size_t comma = spec.find(',');
    const std::string_view item = spec.substr(0, comma);
    spec = comma == std::string_view::npos ? std::string_view() : spec.substr(comma + 1);
    const size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      return Status::InvalidArgument("--synthetic-shape: expected key=value, got '" +
                                     std::string(item) + "'");
    }
    const std::string_view key = item.substr(0, eq), value = item.substr(eq + 1);
    uint32_t v = 0;
    const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
    if (ec != std::errc() || end != value.data() + value.size() || v == 0) {
      return Status::InvalidArgument("--synthetic-shape: bad value for " + std::string(key));
    }
    if (key == "dim") {
      c.dim = v;
    } else if (key == "hidden") {
      c.hidden_dim = v, have_hidden = true;
    } else if (key == "layers") {
      c.n_layers = v;
    } else if (key == "heads") {
      c.n_heads = v, have_heads = true;
    } else if (key == "kv_heads") {
      c.n_kv_heads = v, have_kv = true;
    } else if (key == "vocab") {
      c.vocab_size = v;
    } else if (key == "seq") {
      c.seq_len = v;
    } else {
      return Status::InvalidArgument("--synthetic-shape: unknown key '" + std::string(key) +
                                     "' (dim, hidden, layers, heads, kv_heads, vocab, seq)");
    }
  }
  if (c.dim == 0) return Status::InvalidArgument("--synthetic-shape: dim is required");
  if (!have_heads) c.n_heads = c.dim >= 128 ? c.dim / 128 : 1;  // head_dim 128, as llama
  if (!have_kv) c.n_kv_heads = c.n_heads;
  if (!have_hidden) c.hidden_dim = (8 * c.dim / 3 + 31) / 32 * 32;
  KDN_RETURN_IF_ERROR(c.Validate());
  return c;
}

}  // namespace kdn::engine
