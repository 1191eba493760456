// A kdn_cache: an open `.kv` file, and the state of the loads issued from it.
//
// Each layer remembers its most recent load (what kdn_layer_wait and kdn_layer_event answer for);
// every load since the last kdn_sync is remembered too (what kdn_sync and kdn_close wait for).
#ifndef KDN_LIBKDN_CACHE_H_
#define KDN_LIBKDN_CACHE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/thread_annotations.h"
#include "libkdn/block_reader.h"
#include "libkdn/context.h"
#include "libkdn/load_request.h"
#include "kdn/status.h"

namespace kdn::libkdn {

class Cache {
 public:
  static Result<std::unique_ptr<Cache>> Open(std::shared_ptr<Context> ctx, const std::string& path);
  ~Cache();  // waits for pending loads
  Cache(const Cache&) = delete;
  Cache& operator=(const Cache&) = delete;

  Context& ctx() { return *ctx_; }
  const KvHeader& header() const { return reader_->header(); }
  const BlockReader& reader() const { return *reader_; }

  // Decodes layers [layer_begin, layer_end) to `dest` (validated for this cache's tokens at
  // dest_token_offset), with keys re-rotated when `rope` is set. The destination receives the
  // cache's KV heads [head_begin, head_begin + dest->n_kv_heads).
  Status Load(uint32_t layer_begin, uint32_t layer_end, uint32_t head_begin,
              std::shared_ptr<const DestSpec> dest, uint32_t dest_token_offset, void* stream,
              const RopeShift* rope);
  Status WaitLayer(uint32_t layer);
  void* LayerEvent(uint32_t layer);
  Status Sync();

 private:
  Cache(std::shared_ptr<Context> ctx, std::unique_ptr<BlockReader> reader)
      : ctx_(std::move(ctx)), reader_(std::move(reader)) {}

  std::shared_ptr<Context> ctx_;
  std::unique_ptr<BlockReader> reader_;
  std::unique_ptr<CacheDeviceState> device_state_;
  Mutex mu_;
  // per layer; null = never loaded
  std::vector<std::shared_ptr<Completion>> latest_ KDN_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<LoadRequest>> pending_ KDN_GUARDED_BY(mu_);  // since the last Sync
};

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_CACHE_H_
