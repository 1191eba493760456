#include "kdn-engine/kv_io.h"

namespace kdn::engine {

Status FromKdn(kdn_status s, const std::string& what) {
  if (s == KDN_OK) return Status::OK();
  std::string msg = what + ": " + kdn_last_error();
  switch (s) {
    case KDN_E_INVALID_ARG:
      return Status::InvalidArgument(std::move(msg));
    case KDN_E_IO:
      return Status::IOError(std::move(msg));
    case KDN_E_NOT_FOUND:
      return Status::NotFound(std::move(msg));
    case KDN_E_CORRUPT:
      return Status::Corruption(std::move(msg));
    case KDN_E_UNSUPPORTED:
      return Status::Unsupported(std::move(msg));
    case KDN_E_MODEL_MISMATCH:
      return Status::ModelMismatch(std::move(msg));
    case KDN_E_NO_SPACE:
      return Status::NoSpace(std::move(msg));
    default:
      return Status::Internal(std::string(kdn_status_name(s)) + " " + msg);
  }
}

kdn_model_desc DescribeModel(const Model& model) {
  const ModelConfig& c = model.config();
  kdn_model_desc d{};
  d.name = model.name().c_str();
  d.n_layers = c.n_layers;
  d.n_heads = c.n_heads;
  d.n_kv_heads = c.n_kv_heads;
  d.head_dim = c.head_dim();
  d.dtype = KDN_F32;
  d.rope_style = KDN_ROPE_GPTJ;  // llama2.c rotates adjacent pairs
  d.rotary_dim = 0;              // all of head_dim
  d.rope_theta = c.rope_theta;
  d.rope_scale = 1.0f;
  return d;
}

Result<kdn_dest> DescribeCache(const PagedKvCache& cache) {
  kdn_dest d{};
  KDN_RETURN_IF_ERROR(
      FromKdn(kdn_dest_paged(&d, KDN_F32, cache.n_layers(), cache.key_bases(), cache.value_bases(),
                             cache.n_kv_heads(), cache.head_dim(), cache.block_size(), /*hnd=*/0,
                             cache.block_table(), cache.n_mapped_blocks()),
              "describing the paged KV cache"));
  return d;
}

Result<std::unique_ptr<KdnContext>> KdnContext::Create() {
  kdn_ctx* ctx = nullptr;
  KDN_RETURN_IF_ERROR(FromKdn(kdn_ctx_create(-1, &ctx), "creating a libkdn CPU context"));
  return std::unique_ptr<KdnContext>(new KdnContext(ctx));
}

KdnContext::~KdnContext() {
  kdn_ctx_destroy(ctx_);
}

Result<std::unique_ptr<KvCache>> KvCache::Open(KdnContext& ctx, const std::string& path,
                                               const Model& model) {
  kdn_cache* c = nullptr;
  KDN_RETURN_IF_ERROR(FromKdn(kdn_open(ctx.get(), path.c_str(), &c), path));
  std::unique_ptr<KvCache> cache(new KvCache(c, path));
  const kdn_model_desc desc = DescribeModel(model);
  KDN_RETURN_IF_ERROR(FromKdn(kdn_expect_model(c, &desc), path));
  KDN_RETURN_IF_ERROR(FromKdn(kdn_info(c, &cache->info_), path));
  return cache;
}

KvCache::~KvCache() {
  kdn_close(cache_);
}

Status SaveKv(KdnContext& ctx, const Model& model, const PagedKvCache& cache,
              std::span<const uint32_t> tokens, uint32_t position_base, const std::string& codec,
              const std::string& path, bool fsync) {
  if (tokens.empty() || tokens.size() > cache.size()) {
    return Status::InvalidArgument("save: " + std::to_string(tokens.size()) +
                                   " tokens, the cache holds " + std::to_string(cache.size()));
  }
  KDN_ASSIGN_OR_RETURN(const kdn_dest src, DescribeCache(cache));
  const kdn_model_desc desc = DescribeModel(model);
  kdn_save_opts opts{};
  opts.codec = codec.c_str();
  opts.chunk_tokens = 0;
  opts.fsync = fsync ? 1 : 0;
  return FromKdn(kdn_save(ctx.get(), &desc, tokens.data(), static_cast<uint32_t>(tokens.size()),
                          position_base, &src, &opts, path.c_str()),
                 "saving " + path);
}

}  // namespace kdn::engine
