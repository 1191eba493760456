// The C ABI (include/kdn/kdn.h): argument checks, then the C++ implementation; every entry point
// turns its Status into a kdn_status and the thread's last-error message, and no exception gets
// out (Guarded).
#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "libkdn/api_status.h"
#include "libkdn/cache.h"
#include "libkdn/context.h"
#include "libkdn/dest.h"
#include "libkdn/deviation.h"
#include "libkdn/find_prefix.h"
#include "libkdn/guarded.h"
#include "libkdn/library_log.h"
#include "libkdn/model_desc.h"
#include "libkdn/rope_math.h"
#include "libkdn/save.h"
#include "kdn/format.h"
#include "kdn/kdn.h"

struct kdn_ctx {
  std::shared_ptr<kdn::libkdn::Context> impl;
};

struct kdn_cache {
  std::unique_ptr<kdn::libkdn::Cache> impl;
};

namespace kdn::libkdn {
namespace {

// Runs `fn`, records its error for kdn_last_error, returns its code.
template <typename Fn>
kdn_status Api(Fn&& fn) noexcept {
  return Fail(Guarded(std::forward<Fn>(fn)));
}

Status NotNull(const void* p, const char* what) {
  if (p == nullptr) return Status::InvalidArgument(std::string(what) + " is NULL");
  return Status::OK();
}

Status CheckLayerRange(uint32_t begin, uint32_t end, uint32_t n_layers) {
  if (begin > end || end > n_layers) {
    return Status::InvalidArgument("layer range [" + std::to_string(begin) + ", " +
                                   std::to_string(end) + ") is not within the cache's " +
                                   std::to_string(n_layers) + " layers");
  }
  return Status::OK();
}

Status CheckHeadRange(uint32_t begin, uint32_t end, uint32_t n_kv_heads) {
  if (begin >= end || end > n_kv_heads) {
    return Status::InvalidArgument("head range [" + std::to_string(begin) + ", " +
                                   std::to_string(end) + ") is not a non-empty range within the " +
                                   std::to_string(n_kv_heads) + " KV heads");
  }
  return Status::OK();
}

Result<KvKind> FromApiKv(int kv) {
  if (kv == KDN_K) return KvKind::kKey;
  if (kv == KDN_V) return KvKind::kValue;
  return Status::InvalidArgument("kv is " + std::to_string(kv) + ", must be KDN_K or KDN_V");
}

RopeShift MakeRopeShift(const ModelIdentity& m, int64_t delta) {
  RopeShift r;
  r.style = static_cast<uint32_t>(m.rope_style);
  r.rotary_dim = m.effective_rotary_dim();
  r.dim_offset = m.rotary_begin();
  r.cos.resize(r.rotary_dim / 2);
  r.sin.resize(r.rotary_dim / 2);
  RopeShiftTable(delta, m.rope_theta, m.rope_scale, r.rotary_dim, r.cos.data(), r.sin.data());
  return r;
}

Status NoSkippedSlots(const DestSpec& d, uint32_t token_begin, uint32_t n, const char* what) {
  if (!d.has_slot_mapping) return Status::OK();
  for (uint32_t t = token_begin; t < token_begin + n; ++t) {
    if (d.slot_mapping[t] < 0) {
      return Status::InvalidArgument(std::string(what) + ": token " + std::to_string(t) +
                                     " has no slot (slot_mapping entry < 0)");
    }
  }
  return Status::OK();
}

// Writes `hashes` as NUL-terminated hex (KDN_PREFIX_HASH_HEX_BYTES each) when they fit in `cap`.
Status WriteHashesHex(const std::vector<kdn::Hash128>& hashes, char* hex_out, uint32_t cap,
                      uint32_t* n_out) {
  KDN_RETURN_IF_ERROR(NotNull(n_out, "n_out"));
  *n_out = static_cast<uint32_t>(hashes.size());
  if (hashes.size() > cap) {
    return Status::InvalidArgument("cap " + std::to_string(cap) + " cannot hold " +
                                   std::to_string(hashes.size()) + " prefix hashes");
  }
  if (!hashes.empty()) KDN_RETURN_IF_ERROR(NotNull(hex_out, "hex_out"));
  for (size_t i = 0; i < hashes.size(); ++i) {
    const std::string hex = hashes[i].ToHex();
    static_assert(KDN_PREFIX_HASH_HEX_BYTES == 33, "32 hex digits and a NUL");
    std::memcpy(hex_out + i * KDN_PREFIX_HASH_HEX_BYTES, hex.c_str(), KDN_PREFIX_HASH_HEX_BYTES);
  }
  return Status::OK();
}

void FillInfo(const Cache& c, kdn_cache_info* out) {
  const KvHeader& h = c.header();
  std::memset(out, 0, sizeof *out);
  ToApiModel(h.model, &out->model);
  for (int i = 0; i < 8; ++i) {
    out->fingerprint[i] = static_cast<uint8_t>(h.fingerprint.lo >> (8 * i));
    out->fingerprint[8 + i] = static_cast<uint8_t>(h.fingerprint.hi >> (8 * i));
  }
  out->n_tokens = h.n_tokens;
  out->position_offset = h.position_offset;
  out->tokens = h.tokens.data();
  std::snprintf(out->codec, sizeof out->codec, "%s", h.codec.Name().c_str());
  out->file_bytes = c.reader().file_bytes();
  out->decoded_bytes = h.decoded_bytes();
  out->fast_path = 0;  // kept for the ABI: bytes always come through the file
}

}  // namespace
}  // namespace kdn::libkdn

using kdn::DType;
using kdn::KvKind;
using kdn::ModelIdentity;
using kdn::Result;
using kdn::Status;
namespace g = kdn::libkdn;

extern "C" {

KDN_EXPORT int kdn_api_version(void) {
  return KDN_API_VERSION;
}

KDN_EXPORT const char* kdn_version_string(void) {
#if KDN_HAVE_CUDA
  return "kdn " KDN_VERSION " (backends: cpu, cuda)";
#else
  return "kdn " KDN_VERSION " (backends: cpu)";
#endif
}

KDN_EXPORT const char* kdn_last_error(void) {
  return g::LastError();
}

KDN_EXPORT void kdn_set_log_callback(kdn_log_fn fn, void* user) {
  g::SetLogCallback(fn, user);
}

KDN_EXPORT const char* kdn_status_name(kdn_status s) {
  switch (g::RawEnum(s)) {
    case KDN_OK:
      return "KDN_OK";
    case KDN_E_INVALID_ARG:
      return "KDN_E_INVALID_ARG";
    case KDN_E_IO:
      return "KDN_E_IO";
    case KDN_E_NOT_FOUND:
      return "KDN_E_NOT_FOUND";
    case KDN_E_CORRUPT:
      return "KDN_E_CORRUPT";
    case KDN_E_UNSUPPORTED:
      return "KDN_E_UNSUPPORTED";
    case KDN_E_MODEL_MISMATCH:
      return "KDN_E_MODEL_MISMATCH";
    case KDN_E_NO_MEMORY:
      return "KDN_E_NO_MEMORY";
    case KDN_E_NO_DEVICE:
      return "KDN_E_NO_DEVICE";
    case KDN_E_CUDA:
      return "KDN_E_CUDA";
    case KDN_E_NO_SPACE:
      return "KDN_E_NO_SPACE";
    case KDN_E_INTERNAL:
      return "KDN_E_INTERNAL";
  }
  return "KDN_E_UNKNOWN";
}

KDN_EXPORT kdn_status kdn_ctx_create(int device, kdn_ctx** out) {
  if (out != nullptr) *out = nullptr;
  kdn_status no_device = KDN_OK;
  const kdn_status rc = g::Api([&]() -> Status {
    KDN_RETURN_IF_ERROR(g::NotNull(out, "out"));
    Result<std::shared_ptr<g::Context>> ctx = g::Context::Create(device);
    if (!ctx.ok()) {
      // Here "unsupported" (no CUDA in this build) and "not found" (no such device) both mean
      // there is no device to work on.
      const kdn::Code c = ctx.status().code();
      if (c == kdn::Code::kUnsupported || c == kdn::Code::kNotFound) no_device = KDN_E_NO_DEVICE;
      return ctx.status();
    }
    *out = new kdn_ctx{std::move(*ctx)};
    return Status::OK();
  });
  return no_device != KDN_OK ? no_device : rc;
}

KDN_EXPORT void kdn_ctx_destroy(kdn_ctx* ctx) {
  (void)g::Guarded([&] {
    delete ctx;
    return Status::OK();
  });
}

KDN_EXPORT int kdn_ctx_device(const kdn_ctx* ctx) {
  return ctx != nullptr ? ctx->impl->device() : -1;
}

KDN_EXPORT kdn_status kdn_open(kdn_ctx* ctx, const char* path, kdn_cache** out) {
  if (out != nullptr) *out = nullptr;
  return g::Api([&]() -> Status {
    KDN_RETURN_IF_ERROR(g::NotNull(ctx, "ctx"));
    KDN_RETURN_IF_ERROR(g::NotNull(path, "path"));
    KDN_RETURN_IF_ERROR(g::NotNull(out, "out"));
    KDN_ASSIGN_OR_RETURN(std::unique_ptr<g::Cache> cache, g::Cache::Open(ctx->impl, path));
    *out = new kdn_cache{std::move(cache)};
    return Status::OK();
  });
}

KDN_EXPORT void kdn_close(kdn_cache* cache) {
  (void)g::Guarded([&] {
    delete cache;
    return Status::OK();
  });
}

KDN_EXPORT kdn_status kdn_info(const kdn_cache* cache, kdn_cache_info* out) {
  return g::Api([&]() -> Status {
    KDN_RETURN_IF_ERROR(g::NotNull(cache, "cache"));
    KDN_RETURN_IF_ERROR(g::NotNull(out, "out"));
    g::FillInfo(*cache->impl, out);
    return Status::OK();
  });
}

KDN_EXPORT kdn_status kdn_layer_window(const kdn_cache* cache, uint32_t layer, uint32_t* window,
                                       uint32_t* first_token) {
  return g::Api([&]() -> Status {
    KDN_RETURN_IF_ERROR(g::NotNull(cache, "cache"));
    KDN_RETURN_IF_ERROR(g::NotNull(window, "window"));
    const kdn::KvHeader& h = cache->impl->header();
    KDN_RETURN_IF_ERROR(g::CheckLayerRange(layer, layer + 1, h.model.n_layers));
    *window = h.model.layer_window(layer);
    if (first_token != nullptr) *first_token = h.window_begin(layer);
    return Status::OK();
  });
}

KDN_EXPORT kdn_status kdn_cache_mla(const kdn_cache* cache, uint32_t* kv_lora_rank) {
  return g::Api([&]() -> Status {
    KDN_RETURN_IF_ERROR(g::NotNull(cache, "cache"));
    KDN_RETURN_IF_ERROR(g::NotNull(kv_lora_rank, "kv_lora_rank"));
    *kv_lora_rank = cache->impl->header().model.kv_lora_rank;
    return Status::OK();
  });
}

KDN_EXPORT kdn_status kdn_expect_model(const kdn_cache* cache, const kdn_model_desc* model) {
  return g::Api([&]() -> Status {
    KDN_RETURN_IF_ERROR(g::NotNull(cache, "cache"));
    KDN_ASSIGN_OR_RETURN(ModelIdentity expected, g::FromApiModel(model));
    return g::CompareModel(cache->impl->header().model, expected);
  });
}

KDN_EXPORT kdn_status kdn_dest_contiguous(kdn_dest* d, kdn_dtype dtype, uint32_t n_layers,
                                          void* const* k_base, void* const* v_base,
                                          uint32_t n_kv_heads, uint32_t head_dim,
                                          uint32_t capacity_tokens) {
  return g::Api([&]() -> Status {
    KDN_RETURN_IF_ERROR(g::NotNull(d, "dest"));
    KDN_RETURN_IF_ERROR(g::FromApiDType(g::RawEnum(dtype), "dtype").status());
    if (n_kv_heads == 0 || head_dim == 0)
      return Status::InvalidArgument("n_kv_heads and head_dim must be > 0");
    std::memset(d, 0, sizeof *d);
    d->dtype = dtype;
    d->n_layers = n_layers;
    d->k_base = k_base;
    d->v_base = v_base;
    d->n_kv_heads = n_kv_heads;
    d->head_dim = head_dim;
    d->block_size = 1;
    d->block_stride = int64_t{n_kv_heads} * head_dim;
    d->token_stride = int64_t{n_kv_heads} * head_dim;
    d->head_stride = head_dim;
    d->capacity_tokens = capacity_tokens;
    return Status::OK();
  });
}

KDN_EXPORT kdn_status kdn_dest_paged(kdn_dest* d, kdn_dtype dtype, uint32_t n_layers,
                                     void* const* k_base, void* const* v_base, uint32_t n_kv_heads,
                                     uint32_t head_dim, uint32_t block_size, int hnd,
                                     const int32_t* block_table, uint32_t n_block_table) {
  return g::Api([&]() -> Status {
    KDN_RETURN_IF_ERROR(g::NotNull(d, "dest"));
    KDN_RETURN_IF_ERROR(g::FromApiDType(g::RawEnum(dtype), "dtype").status());
    if (n_kv_heads == 0 || head_dim == 0 || block_size == 0) {
      return Status::InvalidArgument("n_kv_heads, head_dim and block_size must be > 0");
    }
    if (hnd != 0 && hnd != 1) return Status::InvalidArgument("hnd must be 0 (NHD) or 1 (HND)");
    std::memset(d, 0, sizeof *d);
    d->dtype = dtype;
    d->n_layers = n_layers;
    d->k_base = k_base;
    d->v_base = v_base;
    d->n_kv_heads = n_kv_heads;
    d->head_dim = head_dim;
    d->block_size = block_size;
    d->block_stride = int64_t{block_size} * n_kv_heads * head_dim;
    d->token_stride = hnd ? int64_t{head_dim} : int64_t{n_kv_heads} * head_dim;
    d->head_stride = hnd ? int64_t{block_size} * head_dim : int64_t{head_dim};
    d->block_table = block_table;
    d->n_block_table = n_block_table;
    d->capacity_tokens = block_table != nullptr
                             ? static_cast<uint32_t>(std::min<uint64_t>(
                                   uint64_t{n_block_table} * block_size, UINT32_MAX))
                             : UINT32_MAX;
    return Status::OK();
  });
}

KDN_EXPORT kdn_status kdn_load(kdn_cache* cache, uint32_t layer_begin, uint32_t layer_end,
                               const kdn_dest* dest, uint32_t dest_token_offset, void* stream) {
  if (cache == nullptr) {
    return g::Api([] { return g::NotNull(nullptr, "cache"); });
  }
  return kdn_load_heads(cache, layer_begin, layer_end, 0, cache->impl->header().model.n_kv_heads,
                        dest, dest_token_offset, stream);
}

KDN_EXPORT kdn_status kdn_tp_heads(uint32_t n_kv_heads, uint32_t tp_rank, uint32_t tp_size,
                                   uint32_t* head_begin, uint32_t* head_end) {
  return g::Api([&]() -> Status {
    KDN_RETURN_IF_ERROR(g::NotNull(head_begin, "head_begin"));
    KDN_RETURN_IF_ERROR(g::NotNull(head_end, "head_end"));
    if (n_kv_heads == 0 || tp_size == 0 || tp_rank >= tp_size) {
      return Status::InvalidArgument("rank " + std::to_string(tp_rank) + " of " +
                                     std::to_string(tp_size) + " over " +
                                     std::to_string(n_kv_heads) + " KV heads");
    }
    // 64-bit products: rank * heads may not fit in 32 bits.
    const uint64_t first = uint64_t{tp_rank} * n_kv_heads / tp_size;
    if (tp_size <= n_kv_heads) {
      *head_begin = static_cast<uint32_t>(first);
      *head_end = static_cast<uint32_t>(uint64_t{tp_rank + 1} * n_kv_heads / tp_size);
      return Status::OK();
    }
    // More ranks than KV heads (GQA): every head is replicated on tp_size / n_kv_heads ranks, as
    // engines shard it; any other count leaves ranks with a share no engine uses.
    if (tp_size % n_kv_heads != 0) {
      return Status::InvalidArgument(std::to_string(tp_size) + " ranks over " +
                                     std::to_string(n_kv_heads) +
                                     " KV heads: with more ranks than heads, the ranks must be a "
                                     "multiple of the heads");
    }
    *head_begin = static_cast<uint32_t>(first);
    *head_end = static_cast<uint32_t>(first + 1);
    return Status::OK();
  });
}

KDN_EXPORT kdn_status kdn_load_heads(kdn_cache* cache, uint32_t layer_begin, uint32_t layer_end,
                                     uint32_t head_begin, uint32_t head_end, const kdn_dest* dest,
                                     uint32_t dest_token_offset, void* stream) {
  return g::Api([&]() -> Status {
    KDN_RETURN_IF_ERROR(g::NotNull(cache, "cache"));
    const kdn::KvHeader& h = cache->impl->header();
    KDN_RETURN_IF_ERROR(g::CheckLayerRange(layer_begin, layer_end, h.model.n_layers));
    KDN_RETURN_IF_ERROR(g::CheckHeadRange(head_begin, head_end, h.model.n_kv_heads));
    g::DestUse use;
    use.n_kv_heads = head_end - head_begin;
    use.head_dim = h.model.head_dim;
    use.layer_begin = layer_begin;
    use.layer_end = layer_end;
    KDN_ASSIGN_OR_RETURN(auto spec, g::ValidateDest(dest, use, dest_token_offset, h.n_tokens));
    return cache->impl->Load(layer_begin, layer_end, head_begin, std::move(spec),
                             dest_token_offset, stream, nullptr);
  });
}

KDN_EXPORT kdn_status kdn_layer_wait(kdn_cache* cache, uint32_t layer) {
  return g::Api([&]() -> Status {
    KDN_RETURN_IF_ERROR(g::NotNull(cache, "cache"));
    KDN_RETURN_IF_ERROR(g::CheckLayerRange(layer, layer + 1, cache->impl->header().model.n_layers));
    return cache->impl->WaitLayer(layer);
  });
}

KDN_EXPORT void* kdn_layer_event(kdn_cache* cache, uint32_t layer) {
  void* event = nullptr;
  g::Api([&]() -> Status {
    KDN_RETURN_IF_ERROR(g::NotNull(cache, "cache"));
    KDN_RETURN_IF_ERROR(g::CheckLayerRange(layer, layer + 1, cache->impl->header().model.n_layers));
    event = cache->impl->LayerEvent(layer);
    return Status::OK();
  });
  return event;
}

KDN_EXPORT kdn_status kdn_sync(kdn_cache* cache) {
  return g::Api([&]() -> Status {
    KDN_RETURN_IF_ERROR(g::NotNull(cache, "cache"));
    return cache->impl->Sync();
  });
}

KDN_EXPORT kdn_status kdn_find_prefix(const char* set_dir, const kdn_model_desc* model,
                                      const uint32_t* tokens, uint32_t n_tokens,
                                      uint32_t chunk_tokens, char* path_out, size_t path_cap,
                                      uint32_t* n_prefix_out) {
  return g::Api([&]() -> Status {
    KDN_RETURN_IF_ERROR(g::NotNull(set_dir, "set_dir"));
    KDN_RETURN_IF_ERROR(g::NotNull(path_out, "path_out"));
    KDN_RETURN_IF_ERROR(g::NotNull(n_prefix_out, "n_prefix_out"));
    if (path_cap == 0) return Status::InvalidArgument("path_cap is 0");
    path_out[0] = '\0';
    *n_prefix_out = 0;
    if (n_tokens != 0) KDN_RETURN_IF_ERROR(g::NotNull(tokens, "tokens"));
    KDN_ASSIGN_OR_RETURN(kdn::ModelIdentity m, g::FromApiModel(model));
    std::string dir = set_dir;
    while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
    if (dir.empty()) return Status::InvalidArgument("set_dir is empty");
    KDN_ASSIGN_OR_RETURN(
        g::PrefixFound found,
        g::FindPrefix(dir, m, std::span<const uint32_t>(tokens, n_tokens),
                      chunk_tokens != 0 ? chunk_tokens : kdn::kDefaultChunkTokens));
    if (found.path.size() >= path_cap) {
      return Status::InvalidArgument("path_cap " + std::to_string(path_cap) + " cannot hold " +
                                     found.path + " (" + std::to_string(found.path.size() + 1) +
                                     " bytes)");
    }
    std::memcpy(path_out, found.path.c_str(), found.path.size() + 1);
    *n_prefix_out = found.n_tokens;
    return Status::OK();
  });
}

KDN_EXPORT kdn_status kdn_prefix_hashes(const kdn_model_desc* model, const uint32_t* tokens,
                                        uint32_t n_tokens, uint32_t chunk_tokens, char* hex_out,
                                        uint32_t cap, uint32_t* n_out) {
  if (n_out != nullptr) *n_out = 0;
  return g::Api([&]() -> Status {
    KDN_ASSIGN_OR_RETURN(ModelIdentity m, g::FromApiModel(model));
    if (n_tokens != 0) KDN_RETURN_IF_ERROR(g::NotNull(tokens, "tokens"));
    const std::vector<kdn::Hash128> hashes =
        kdn::PrefixHashes(m.Fingerprint(), std::span<const uint32_t>(tokens, n_tokens),
                          chunk_tokens != 0 ? chunk_tokens : kdn::kDefaultChunkTokens);
    return g::WriteHashesHex(hashes, hex_out, cap, n_out);
  });
}

KDN_EXPORT kdn_status kdn_cache_prefix_hashes(const kdn_cache* cache, char* hex_out, uint32_t cap,
                                              uint32_t* n_out, uint32_t* chunk_tokens_out) {
  if (n_out != nullptr) *n_out = 0;
  return g::Api([&]() -> Status {
    KDN_RETURN_IF_ERROR(g::NotNull(cache, "cache"));
    const kdn::KvHeader& h = cache->impl->header();
    if (chunk_tokens_out != nullptr) *chunk_tokens_out = h.chunk_tokens;
    return g::WriteHashesHex(h.prefix_hashes, hex_out, cap, n_out);
  });
}

}  // extern "C"

namespace kdn::libkdn {
namespace {

// The checks and the request of kdn_save and kdn_save_heads. `src` holds the model's KV heads
// [head_begin, head_end) (all of them for kdn_save); `*src_spec` keeps the validated copy alive.
Status PrepareSave(kdn_ctx* ctx, const kdn_model_desc* model, const uint32_t* tokens,
                   uint32_t n_tokens, uint32_t position_offset, const kdn_dest* src,
                   const kdn_save_opts* opts, const kdn_save_layout* layout, bool layout_call,
                   const char* path, bool all_heads, uint32_t head_begin, uint32_t head_end,
                   SaveRequest* out, std::shared_ptr<const DestSpec>* src_spec) {
  SaveRequest& req = *out;
  KDN_RETURN_IF_ERROR(NotNull(ctx, "ctx"));
  KDN_RETURN_IF_ERROR(NotNull(path, "path"));
  KDN_RETURN_IF_ERROR(NotNull(tokens, "tokens"));
  if (n_tokens == 0) return Status::InvalidArgument("n_tokens is 0");
  KDN_ASSIGN_OR_RETURN(req.model, FromApiModel(model));
  if (all_heads) {
    head_begin = 0;
    head_end = req.model.n_kv_heads;
  }
  KDN_RETURN_IF_ERROR(CheckHeadRange(head_begin, head_end, req.model.n_kv_heads));
  const char* codec = opts != nullptr && opts->codec != nullptr ? opts->codec : "raw";
  Result<CodecSpec> spec = CodecSpec::Parse(codec);
  if (!spec.ok())
    return Status::InvalidArgument("codec '" + std::string(codec) +
                                   "': " + spec.status().message());
  req.codec = *spec;
  req.chunk_tokens =
      opts != nullptr && opts->chunk_tokens != 0 ? opts->chunk_tokens : kDefaultChunkTokens;
  req.fsync = opts != nullptr && opts->fsync != 0;
  // kdn_save and kdn_save_heads keep writing what they always wrote: one head group.
  req.head_groups = 1;
  if (layout_call) {
    uint32_t groups = 0;  // the default
    if (layout != nullptr) {
      if (layout->struct_size < offsetof(kdn_save_layout, head_groups) + sizeof(uint32_t)) {
        return Status::InvalidArgument(
            "layout: struct_size " + std::to_string(layout->struct_size) +
            " is smaller than the first version's " + std::to_string(sizeof(kdn_save_layout)));
      }
      groups = layout->head_groups;
    }
    req.head_groups = groups == 0 ? DefaultHeadGroups(req.model) : groups;
    if (Status st = CheckHeadGroups(req.model, req.head_groups); !st.ok()) {
      return Status::InvalidArgument("layout: " + st.message());
    }
  }
  DestUse use;
  use.what = "src";
  use.n_kv_heads = head_end - head_begin;
  use.head_dim = req.model.head_dim;
  use.layer_begin = 0;
  use.layer_end = req.model.n_layers;
  use.need_dtype = true;
  use.dtype = req.model.dtype;
  KDN_ASSIGN_OR_RETURN(*src_spec, ValidateDest(src, use, 0, n_tokens));
  for (uint32_t l = 0; l < req.model.n_layers; ++l) {
    if ((*src_spec)->base(l, KvKind::kKey) == nullptr ||
        (*src_spec)->base(l, KvKind::kValue) == nullptr) {
      return Status::InvalidArgument("src: layer " + std::to_string(l) + " has no K or V tensor");
    }
  }
  KDN_RETURN_IF_ERROR(NoSkippedSlots(**src_spec, 0, n_tokens, "src"));
  req.tokens = {tokens, n_tokens};
  req.position_offset = position_offset;
  req.src = src_spec->get();
  req.path = path;
  return Status::OK();
}

// kdn_rope_shift and kdn_rope_shift_mla once the model is known: `rows` holds `n_heads` heads of
// m.head_dim per token (K heads, or one MLA latent whose trailing rotary_dim channels rotate).
Status RopeShiftRows(kdn_ctx* ctx, const ModelIdentity& m, const kdn_dest* rows, const char* what,
                     uint32_t n_heads, uint32_t layer_begin, uint32_t layer_end,
                     uint32_t token_begin, uint32_t n_tokens, int64_t delta, void* stream) {
  KDN_RETURN_IF_ERROR(CheckLayerRange(layer_begin, layer_end, m.n_layers));
  DestUse use;
  use.what = what;
  use.n_kv_heads = n_heads;
  use.head_dim = m.head_dim;
  use.layer_begin = layer_begin;
  use.layer_end = layer_end;
  KDN_ASSIGN_OR_RETURN(auto spec, ValidateDest(rows, use, token_begin, n_tokens));
  if (m.rope_style == RopeStyle::kNone || delta == 0 || n_tokens == 0) return Status::OK();
  RopeShiftCall call;
  call.layer_begin = layer_begin;
  call.layer_end = layer_end;
  call.token_begin = token_begin;
  call.n_tokens = n_tokens;
  call.shift = MakeRopeShift(m, delta);
  return ctx->impl->backend().RopeShiftKeys(*spec, call, stream);
}

}  // namespace
}  // namespace kdn::libkdn

extern "C" {

KDN_EXPORT kdn_status kdn_save(kdn_ctx* ctx, const kdn_model_desc* model, const uint32_t* tokens,
                               uint32_t n_tokens, uint32_t position_offset, const kdn_dest* src,
                               const kdn_save_opts* opts, const char* path) {
  return g::Api([&]() -> Status {
    g::SaveRequest req;
    std::shared_ptr<const g::DestSpec> spec;
    KDN_RETURN_IF_ERROR(g::PrepareSave(ctx, model, tokens, n_tokens, position_offset, src, opts,
                                       nullptr, false, path, true, 0, 0, &req, &spec));
    return g::SaveKv(*ctx->impl, req);
  });
}

KDN_EXPORT kdn_status kdn_save_ex(kdn_ctx* ctx, const kdn_model_desc* model, const uint32_t* tokens,
                                  uint32_t n_tokens, uint32_t position_offset, const kdn_dest* src,
                                  const kdn_save_opts* opts, const kdn_save_layout* layout,
                                  const char* path) {
  return g::Api([&]() -> Status {
    g::SaveRequest req;
    std::shared_ptr<const g::DestSpec> spec;
    KDN_RETURN_IF_ERROR(g::PrepareSave(ctx, model, tokens, n_tokens, position_offset, src, opts,
                                       layout, true, path, true, 0, 0, &req, &spec));
    return g::SaveKv(*ctx->impl, req);
  });
}

}  // extern "C": the helper below is C++

namespace kdn::libkdn {
namespace {

Status SaveHeadsCall(kdn_ctx* ctx, const kdn_model_desc* model, const uint32_t* tokens,
                     uint32_t n_tokens, uint32_t position_offset, uint32_t head_begin,
                     uint32_t head_end, const kdn_dest* src, const kdn_save_opts* opts,
                     const kdn_save_layout* layout, bool layout_call, const char* path,
                     int* wrote_file) {
  SaveRequest req;
  std::shared_ptr<const DestSpec> spec;
  KDN_RETURN_IF_ERROR(PrepareSave(ctx, model, tokens, n_tokens, position_offset, src, opts, layout,
                                  layout_call, path, false, head_begin, head_end, &req, &spec));
  bool wrote = false;
  KDN_RETURN_IF_ERROR(SaveKvHeads(*ctx->impl, req, head_begin, head_end, &wrote));
  if (wrote_file != nullptr) *wrote_file = wrote ? 1 : 0;
  return Status::OK();
}

}  // namespace
}  // namespace kdn::libkdn

extern "C" {

KDN_EXPORT kdn_status kdn_save_heads(kdn_ctx* ctx, const kdn_model_desc* model,
                                     const uint32_t* tokens, uint32_t n_tokens,
                                     uint32_t position_offset, uint32_t head_begin,
                                     uint32_t head_end, const kdn_dest* src,
                                     const kdn_save_opts* opts, const char* path,
                                     int* wrote_file) {
  if (wrote_file != nullptr) *wrote_file = 0;
  return g::Api([&]() -> Status {
    return g::SaveHeadsCall(ctx, model, tokens, n_tokens, position_offset, head_begin, head_end,
                            src, opts, nullptr, false, path, wrote_file);
  });
}

KDN_EXPORT kdn_status kdn_save_heads_ex(kdn_ctx* ctx, const kdn_model_desc* model,
                                        const uint32_t* tokens, uint32_t n_tokens,
                                        uint32_t position_offset, uint32_t head_begin,
                                        uint32_t head_end, const kdn_dest* src,
                                        const kdn_save_opts* opts, const kdn_save_layout* layout,
                                        const char* path, int* wrote_file) {
  if (wrote_file != nullptr) *wrote_file = 0;
  return g::Api([&]() -> Status {
    return g::SaveHeadsCall(ctx, model, tokens, n_tokens, position_offset, head_begin, head_end,
                            src, opts, layout, true, path, wrote_file);
  });
}

KDN_EXPORT kdn_status kdn_rope_shift(kdn_ctx* ctx, const kdn_model_desc* model,
                                     const kdn_dest* keys, uint32_t layer_begin, uint32_t layer_end,
                                     uint32_t token_begin, uint32_t n_tokens, int64_t delta,
                                     void* stream) {
  return g::Api([&]() -> Status {
    KDN_RETURN_IF_ERROR(g::NotNull(ctx, "ctx"));
    KDN_ASSIGN_OR_RETURN(ModelIdentity m, g::FromApiModel(model));
    return g::RopeShiftRows(ctx, m, keys, "keys", m.n_kv_heads, layer_begin, layer_end,
                            token_begin, n_tokens, delta, stream);
  });
}

KDN_EXPORT kdn_status kdn_rope_shift_mla(kdn_ctx* ctx, const kdn_model_desc* model,
                                         uint32_t kv_lora_rank, const kdn_dest* latents,
                                         uint32_t layer_begin, uint32_t layer_end,
                                         uint32_t token_begin, uint32_t n_tokens, int64_t delta,
                                         void* stream) {
  return g::Api([&]() -> Status {
    KDN_RETURN_IF_ERROR(g::NotNull(ctx, "ctx"));
    KDN_ASSIGN_OR_RETURN(ModelIdentity m, g::FromApiModel(model));
    m.attention = kdn::AttentionKind::kMla;
    m.kv_lora_rank = kv_lora_rank;
    if (Status s = m.Validate(); !s.ok()) return Status::InvalidArgument(s.message());
    return g::RopeShiftRows(ctx, m, latents, "latents", 1, layer_begin, layer_end, token_begin,
                            n_tokens, delta, stream);
  });
}

KDN_EXPORT kdn_status kdn_blend_load(kdn_cache* const* caches, uint32_t n_caches,
                                     const uint32_t* dest_token_offsets, uint32_t position_base,
                                     const kdn_model_desc* model, uint32_t layer_begin,
                                     uint32_t layer_end, const kdn_dest* dest, void* stream) {
  // All heads; without a model the call reports that (or does nothing, for no caches).
  const uint32_t heads = model != nullptr ? model->n_kv_heads : 0;
  return kdn_blend_load_heads(caches, n_caches, dest_token_offsets, position_base, model,
                              layer_begin, layer_end, 0, heads, dest, stream);
}

KDN_EXPORT kdn_status kdn_blend_load_heads(kdn_cache* const* caches, uint32_t n_caches,
                                           const uint32_t* dest_token_offsets,
                                           uint32_t position_base, const kdn_model_desc* model,
                                           uint32_t layer_begin, uint32_t layer_end,
                                           uint32_t head_begin, uint32_t head_end,
                                           const kdn_dest* dest, void* stream) {
  return g::Api([&]() -> Status {
    if (n_caches == 0) return Status::OK();
    KDN_RETURN_IF_ERROR(g::NotNull(caches, "caches"));
    KDN_RETURN_IF_ERROR(g::NotNull(dest_token_offsets, "dest_token_offsets"));
    KDN_ASSIGN_OR_RETURN(ModelIdentity m, g::FromApiModel(model));
    KDN_RETURN_IF_ERROR(g::CheckLayerRange(layer_begin, layer_end, m.n_layers));
    KDN_RETURN_IF_ERROR(g::CheckHeadRange(head_begin, head_end, m.n_kv_heads));
    struct Planned {
      g::Cache* cache;
      uint32_t offset;
      std::shared_ptr<const g::DestSpec> spec;
      g::RopeShift rope;
    };
    std::vector<Planned> plan;
    // Everything is checked before anything starts.
    for (uint32_t i = 0; i < n_caches; ++i) {
      const std::string which = "cache " + std::to_string(i);
      if (caches[i] == nullptr) return Status::InvalidArgument(which + " is NULL");
      g::Cache* c = caches[i]->impl.get();
      if (&c->ctx() != &caches[0]->impl->ctx()) {
        return Status::InvalidArgument(which + " belongs to another context than cache 0");
      }
      Status s = g::CompareModel(c->header().model, m);
      if (!s.ok()) return s.WithContext(which);
      g::DestUse use;
      use.n_kv_heads = head_end - head_begin;
      use.head_dim = m.head_dim;
      use.layer_begin = layer_begin;
      use.layer_end = layer_end;
      Result<std::shared_ptr<const g::DestSpec>> spec =
          g::ValidateDest(dest, use, dest_token_offsets[i], c->header().n_tokens);
      if (!spec.ok()) return spec.status().WithContext(which);
      const int64_t delta =
          int64_t{position_base} + dest_token_offsets[i] - c->header().position_offset;
      // The cache's own identity: it matches `m` in every field the descriptor has, and also
      // says where an MLA latent's rope part is (the descriptor cannot).
      plan.push_back(Planned{c, dest_token_offsets[i], std::move(*spec),
                             g::MakeRopeShift(c->header().model, delta)});
    }
    const bool rotate = m.rope_style != kdn::RopeStyle::kNone;
    for (Planned& p : plan) {
      KDN_RETURN_IF_ERROR(p.cache->Load(layer_begin, layer_end, head_begin, std::move(p.spec),
                                        p.offset, stream, rotate ? &p.rope : nullptr));
    }
    return Status::OK();
  });
}

KDN_EXPORT kdn_status kdn_select_deviation(kdn_ctx* ctx, const void* fresh, const kdn_dest* cached,
                                           uint32_t layer, kdn_kv kv, uint32_t token_begin,
                                           uint32_t n_tokens, float ratio, uint32_t* out_indices,
                                           uint32_t* out_count, float* out_deviation,
                                           void* stream) {
  if (out_count != nullptr) *out_count = 0;
  return g::Api([&]() -> Status {
    KDN_RETURN_IF_ERROR(g::NotNull(ctx, "ctx"));
    KDN_RETURN_IF_ERROR(g::NotNull(cached, "cached"));
    KDN_RETURN_IF_ERROR(g::NotNull(out_count, "out_count"));
    KDN_ASSIGN_OR_RETURN(KvKind kind, g::FromApiKv(g::RawEnum(kv)));
    KDN_ASSIGN_OR_RETURN(uint32_t k, g::SelectionCount(ratio, n_tokens));
    if (n_tokens == 0) return Status::OK();
    KDN_RETURN_IF_ERROR(g::NotNull(fresh, "fresh"));
    KDN_RETURN_IF_ERROR(g::NotNull(out_indices, "out_indices"));
    g::DestUse use;
    use.what = "cached";
    use.n_kv_heads = cached->n_kv_heads;
    use.head_dim = cached->head_dim;
    use.layer_begin = layer;
    use.layer_end = layer + 1;
    KDN_ASSIGN_OR_RETURN(auto spec, g::ValidateDest(cached, use, token_begin, n_tokens));
    if (spec->base(layer, kind) == nullptr) {
      return Status::InvalidArgument("cached: layer " + std::to_string(layer) + " has no " +
                                     (kind == KvKind::kKey ? "K" : "V") + " tensor");
    }
    KDN_RETURN_IF_ERROR(g::NoSkippedSlots(*spec, token_begin, n_tokens, "cached"));
    std::vector<float> deviation(n_tokens);
    KDN_RETURN_IF_ERROR(ctx->impl->backend().Deviation(fresh, *spec, layer, kind, token_begin,
                                                       n_tokens, deviation.data(), stream));
    const std::vector<uint32_t> top = g::TopDeviations(deviation, k);
    std::copy(top.begin(), top.end(), out_indices);
    *out_count = static_cast<uint32_t>(top.size());
    if (out_deviation != nullptr) std::copy(deviation.begin(), deviation.end(), out_deviation);
    return Status::OK();
  });
}

KDN_EXPORT kdn_status kdn_scatter_rows(kdn_ctx* ctx, const void* rows,
                                       const uint32_t* token_indices, uint32_t n_rows,
                                       const kdn_dest* dest, uint32_t layer, kdn_kv kv,
                                       void* stream) {
  return g::Api([&]() -> Status {
    KDN_RETURN_IF_ERROR(g::NotNull(ctx, "ctx"));
    KDN_RETURN_IF_ERROR(g::NotNull(dest, "dest"));
    KDN_ASSIGN_OR_RETURN(KvKind kind, g::FromApiKv(g::RawEnum(kv)));
    if (n_rows == 0) return Status::OK();
    KDN_RETURN_IF_ERROR(g::NotNull(rows, "rows"));
    KDN_RETURN_IF_ERROR(g::NotNull(token_indices, "token_indices"));
    g::DestUse use;
    use.n_kv_heads = dest->n_kv_heads;
    use.head_dim = dest->head_dim;
    use.layer_begin = layer;
    use.layer_end = layer + 1;
    const std::span<const uint32_t> tokens(token_indices, n_rows);
    KDN_ASSIGN_OR_RETURN(auto spec, g::ValidateDestTokens(dest, use, tokens));
    if (spec->base(layer, kind) == nullptr) {
      return Status::InvalidArgument("dest: layer " + std::to_string(layer) + " has no " +
                                     (kind == KvKind::kKey ? "K" : "V") + " tensor");
    }
    return ctx->impl->backend().ScatterRows(rows, tokens, *spec, layer, kind, stream);
  });
}

}  // extern "C"
