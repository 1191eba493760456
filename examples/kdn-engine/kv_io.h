// The engine's side of libkdn (include/kdn/kdn.h): every byte of KV that leaves or enters the
// engine goes through these calls. The engine's paged cache is described to libkdn once as a
// kdn_dest (paged NHD, fp32, block table), the same descriptor serving as the source of kdn_save
// and the destination of kdn_load, kdn_blend_load and kdn_scatter_rows.
#ifndef KDN_EXAMPLES_KDN_ENGINE_KV_IO_H_
#define KDN_EXAMPLES_KDN_ENGINE_KV_IO_H_

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kdn-engine/model.h"
#include "kdn-engine/paged_kv_cache.h"
#include "kdn/kdn.h"
#include "kdn/status.h"

namespace kdn::engine {

// A libkdn status as a kdn::Status, with the library's message for this thread.
Status FromKdn(kdn_status s, const std::string& what);

// What the KV of `model` depends on, for kdn_save and kdn_expect_model. Points into `model`.
kdn_model_desc DescribeModel(const Model& model);

// `cache` as libkdn sees it. Valid until the cache's block table changes (Resize).
Result<kdn_dest> DescribeCache(const PagedKvCache& cache);

// A libkdn context on the CPU backend (the engine computes in host memory).
class KdnContext {
 public:
  static Result<std::unique_ptr<KdnContext>> Create();
  ~KdnContext();
  KdnContext(const KdnContext&) = delete;
  KdnContext& operator=(const KdnContext&) = delete;
  kdn_ctx* get() const { return ctx_; }

 private:
  explicit KdnContext(kdn_ctx* ctx) : ctx_(ctx) {}
  kdn_ctx* ctx_;
};

// An open `.kv` file.
class KvCache {
 public:
  // Opens `path` and refuses it unless `model` computed it.
  static Result<std::unique_ptr<KvCache>> Open(KdnContext& ctx, const std::string& path,
                                               const Model& model);
  ~KvCache();
  KvCache(const KvCache&) = delete;
  KvCache& operator=(const KvCache&) = delete;

  kdn_cache* get() const { return cache_; }
  const kdn_cache_info& info() const { return info_; }
  std::vector<uint32_t> tokens() const { return {info_.tokens, info_.tokens + info_.n_tokens}; }
  const std::string& path() const { return path_; }

 private:
  KvCache(kdn_cache* cache, std::string path) : cache_(cache), path_(std::move(path)) {}
  kdn_cache* cache_;
  kdn_cache_info info_{};
  std::string path_;
};

// Encodes slots [0, n_tokens) of `cache` (tokens `tokens`, computed at positions position_base..)
// into a `.kv` file at `path` with `codec` ("raw", "lossless", "q8", "q4", "q2", options "+zstd").
Status SaveKv(KdnContext& ctx, const Model& model, const PagedKvCache& cache,
              std::span<const uint32_t> tokens, uint32_t position_base, const std::string& codec,
              const std::string& path, bool fsync = false);

}  // namespace kdn::engine

#endif  // KDN_EXAMPLES_KDN_ENGINE_KV_IO_H_
