#include "kdn-engine/contexts.h"

#include <chrono>

namespace kdn::engine {

Result<std::unique_ptr<ContextLoad>> ContextLoad::Start(KdnContext& ctx, Session& session,
                                                        std::span<const std::string> paths) {
  std::unique_ptr<ContextLoad> load(new ContextLoad());
  const Model& model = session.transformer().model();
  load->n_layers_ = model.config().n_layers;
  load->first_slot_ = session.size();
  std::vector<uint32_t> slots;
  for (const std::string& path : paths) {
    KDN_ASSIGN_OR_RETURN(auto cache, KvCache::Open(ctx, path, model));
    const std::vector<uint32_t> tokens = cache->tokens();
    KDN_ASSIGN_OR_RETURN(const uint32_t slot, session.AppendCached(tokens));
    slots.push_back(slot);
    load->n_tokens_ += static_cast<uint32_t>(tokens.size());
    load->caches_.push_back(std::move(cache));
  }
  // The block table is complete only now; its pointer is stable, so the descriptor stays valid
  // while the session grows behind the loads.
  KDN_ASSIGN_OR_RETURN(load->dest_, DescribeCache(session.cache()));
  const kdn_model_desc desc = DescribeModel(model);
  for (size_t i = 0; i < load->caches_.size(); ++i) {
    KvCache& c = *load->caches_[i];
    const uint64_t lands_at = uint64_t{session.position_base()} + slots[i];
    if (c.info().position_offset == lands_at) {
      KDN_RETURN_IF_ERROR(FromKdn(
          kdn_load(c.get(), 0, load->n_layers_, &load->dest_, slots[i], nullptr), c.path()));
    } else {
      kdn_cache* const handle = c.get();
      KDN_RETURN_IF_ERROR(FromKdn(kdn_blend_load(&handle, 1, &slots[i], session.position_base(),
                                                 &desc, 0, load->n_layers_, &load->dest_, nullptr),
                                  c.path()));
      ++load->n_moved_;
    }
  }
  return load;
}

ContextLoad::~ContextLoad() {
  // Loads write into the session's cache: they must be over before anyone reuses it.
  for (auto& c : caches_) (void)kdn_sync(c->get());
}

Status ContextLoad::WaitLayer(uint32_t layer) {
  if (layer >= n_layers_) return Status::InvalidArgument("wait: no such layer");
  const auto start = std::chrono::steady_clock::now();
  for (; layers_ready_ <= layer; ++layers_ready_) {
    for (auto& c : caches_) {
      KDN_RETURN_IF_ERROR(FromKdn(kdn_layer_wait(c->get(), layers_ready_),
                                  c->path() + ": layer " + std::to_string(layers_ready_)));
    }
  }
  wait_ms_ +=
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return Status::OK();
}

Status ContextLoad::WaitAll() {
  return WaitLayer(n_layers_ - 1);
}

}  // namespace kdn::engine
