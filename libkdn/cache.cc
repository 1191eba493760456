#include "libkdn/cache.h"

#include <string>
#include <utility>

namespace kdn::libkdn {

Result<std::unique_ptr<Cache>> Cache::Open(std::shared_ptr<Context> ctx, const std::string& path) {
  KDN_ASSIGN_OR_RETURN(std::unique_ptr<BlockReader> reader, BlockReader::Open(path));
  std::unique_ptr<Cache> cache(new Cache(std::move(ctx), std::move(reader)));
  const uint32_t n_layers = cache->header().model.n_layers;
  KDN_ASSIGN_OR_RETURN(cache->device_state_, cache->ctx_->backend().NewCacheState(n_layers));
  {
    MutexLock lock(cache->mu_);  // not shared yet: uncontended, and the rule has no exception
    cache->latest_.resize(n_layers);
  }
  return cache;
}

Cache::~Cache() {
  (void)Sync();
}

Status Cache::Load(uint32_t layer_begin, uint32_t layer_end, uint32_t head_begin,
                   std::shared_ptr<const DestSpec> dest, uint32_t dest_token_offset, void* stream,
                   const RopeShift* rope) {
  if ((head_begin != 0 || dest->n_kv_heads != header().model.n_kv_heads) && ctx_->device() >= 0) {
    // The CUDA decode kernels write whole rows; a head slice is decoded by the CPU backend only.
    return Status::Unsupported("loading a range of KV heads needs a CPU context (device -1)");
  }
  if (header().model.mla()) {
    for (uint32_t l = layer_begin; l < layer_end; ++l) {
      if (dest->base(l, KvKind::kValue) != nullptr) {
        return Status::InvalidArgument(
            "layer " + std::to_string(l) +
            ": the destination has a V tensor, and an MLA cache has none (its latent, "
            "[tokens][kv_lora_rank + rope_dim], loads into the K tensors)");
      }
    }
    if (rope != nullptr && rope->dim_offset != 0 && ctx_->device() >= 0) {
      return Status::Unsupported("blending an MLA cache (its rope channels trail the latent) "
                                 "needs a CPU context (device -1)");
    }
  }
  if (ctx_->device() >= 0) {
    for (uint32_t l = layer_begin; l < layer_end; ++l) {
      if (header().window_begin(l) != 0) {
        // Likewise the CUDA decode kernels decode whole blocks; a sliding-window layer's load
        // takes only its window, which the CPU backend decodes.
        return Status::Unsupported("layer " + std::to_string(l) +
                                   " is a sliding-window layer shorter than the cache: loading "
                                   "it needs a CPU context (device -1)");
      }
    }
  }
  auto req = std::make_shared<LoadRequest>();
  req->reader = reader_.get();
  req->device_state = device_state_.get();
  req->layer_begin = layer_begin;
  req->layer_end = layer_end;
  req->head_begin = head_begin;
  req->dest = std::move(dest);
  req->dest_token_offset = dest_token_offset;
  req->stream = stream;
  if (rope != nullptr) {
    req->rope = true;
    req->rope_shift = *rope;
  }
  for (uint32_t l = layer_begin; l < layer_end; ++l)
    req->layers.push_back(std::make_shared<Completion>());
  // Published before the work starts: a wait that follows this call sees this load.
  std::vector<std::shared_ptr<Completion>> previous(req->layers.size());
  {
    MutexLock lock(mu_);
    for (uint32_t l = layer_begin; l < layer_end; ++l) {
      previous[l - layer_begin] = std::move(latest_[l]);
      latest_[l] = req->layers[l - layer_begin];
    }
    pending_.push_back(req);
  }
  Status s = ctx_->backend().StartLoad(req);
  if (!s.ok()) {
    // Nothing started: this load never happened.
    MutexLock lock(mu_);
    for (uint32_t l = layer_begin; l < layer_end; ++l) {
      if (latest_[l] == req->layers[l - layer_begin])
        latest_[l] = std::move(previous[l - layer_begin]);
    }
    std::erase(pending_, req);
  }
  return s;
}

Status Cache::WaitLayer(uint32_t layer) {
  std::shared_ptr<Completion> c;
  {
    MutexLock lock(mu_);
    c = latest_[layer];
  }
  if (c == nullptr) return Status::OK();
  KDN_RETURN_IF_ERROR(c->Wait());
  return ctx_->backend().WaitLayerWork(device_state_.get(), layer);
}

void* Cache::LayerEvent(uint32_t layer) {
  std::shared_ptr<Completion> c;
  {
    MutexLock lock(mu_);
    c = latest_[layer];
  }
  if (c == nullptr || !c->Wait().ok()) return nullptr;
  return ctx_->backend().LayerEvent(device_state_.get(), layer);
}

Status Cache::Sync() {
  std::vector<std::shared_ptr<LoadRequest>> pending;
  {
    MutexLock lock(mu_);
    pending.swap(pending_);
  }
  Status first;
  for (const auto& req : pending) {
    (void)req->done.Wait();
    for (uint32_t l = req->layer_begin; l < req->layer_end; ++l) {
      Status s = req->layers[l - req->layer_begin]->Wait();
      if (s.ok()) s = ctx_->backend().WaitLayerWork(device_state_.get(), l);
      if (!s.ok() && first.ok()) first = s;
    }
  }
  return first;
}

}  // namespace kdn::libkdn
