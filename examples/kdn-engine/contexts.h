// Cached contexts placed into a session: `.kv` files opened through libkdn, checked against the
// model, their tokens appended to the sequence in order, and every layer's KV loading into the
// paged cache in the background while the engine computes.
//
// A context whose stored position offset is where it lands is loaded as is (kdn_load: exact); any
// other is placed with its keys re-rotated to the new positions (kdn_blend_load).
#ifndef KDN_EXAMPLES_KDN_ENGINE_CONTEXTS_H_
#define KDN_EXAMPLES_KDN_ENGINE_CONTEXTS_H_

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kdn-engine/kv_io.h"
#include "kdn-engine/session.h"

namespace kdn::engine {

class ContextLoad {
 public:
  // Appends the contexts, in order, after whatever `session` holds and starts loading all their
  // layers. The session must outlive this object.
  static Result<std::unique_ptr<ContextLoad>> Start(KdnContext& ctx, Session& session,
                                                    std::span<const std::string> paths);
  ~ContextLoad();
  ContextLoad(const ContextLoad&) = delete;
  ContextLoad& operator=(const ContextLoad&) = delete;

  // Returns once layer `layer` of every context is in place (a Session::LayerHook).
  Status WaitLayer(uint32_t layer);
  Status WaitAll();
  Session::LayerHook Hook() {
    return [this](uint32_t layer) { return WaitLayer(layer); };
  }

  const kdn_dest& dest() const { return dest_; }  // the session's cache, as libkdn addresses it
  uint32_t first_slot() const { return first_slot_; }
  uint32_t n_tokens() const { return n_tokens_; }
  size_t n_contexts() const { return caches_.size(); }
  size_t n_moved() const { return n_moved_; }  // contexts whose keys were re-rotated
  const KvCache& cache(size_t i) const { return *caches_[i]; }
  double wait_ms() const { return wait_ms_; }  // time spent blocked in WaitLayer

 private:
  ContextLoad() = default;

  std::vector<std::unique_ptr<KvCache>> caches_;
  kdn_dest dest_{};
  uint32_t n_layers_ = 0;
  uint32_t first_slot_ = 0;
  uint32_t n_tokens_ = 0;
  size_t n_moved_ = 0;
  uint32_t layers_ready_ = 0;
  double wait_ms_ = 0;
};

}  // namespace kdn::engine

#endif  // KDN_EXAMPLES_KDN_ENGINE_CONTEXTS_H_
