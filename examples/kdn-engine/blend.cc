#include "kdn-engine/blend.h"

#include <algorithm>
#include <cmath>
#include <span>
#include <vector>

namespace kdn::engine {

namespace {

// Writes the rows' fresh K and V over the cached ones of their slots, through libkdn.
Status ScatterKv(KdnContext& ctx, const ContextLoad& load, uint32_t layer, const Rows& rows) {
  const uint32_t n = static_cast<uint32_t>(rows.size());
  if (n == 0) return Status::OK();
  KDN_RETURN_IF_ERROR(FromKdn(kdn_scatter_rows(ctx.get(), rows.k.data(), rows.slot.data(), n,
                                               &load.dest(), layer, KDN_K, nullptr),
                              "blend: writing recomputed K"));
  return FromKdn(kdn_scatter_rows(ctx.get(), rows.v.data(), rows.slot.data(), n, &load.dest(),
                                  layer, KDN_V, nullptr),
                 "blend: writing recomputed V");
}

}  // namespace

Status Blend(KdnContext& ctx, Session& session, ContextLoad& load, float ratio, BlendStats* stats) {
  if (!(ratio > 0.0f && ratio <= 1.0f)) {
    return Status::InvalidArgument("blend ratio must be in (0, 1]");
  }
  Transformer& tf = session.transformer();
  const ModelConfig& c = tf.config();
  const uint32_t n = load.n_tokens(), first = load.first_slot();
  *stats = BlendStats{n, 0};
  if (n == 0) return Status::OK();
  const std::span<const uint32_t> tokens(session.tokens().data() + first, n);

  Rows rows;
  tf.Embed(tokens, first, session.position_base() + first, rows);
  // Layer 0: every token, over the loaded KV (which is already right at layer 0).
  KDN_RETURN_IF_ERROR(load.WaitLayer(0));
  tf.ProjectQkv(0, rows);
  tf.Finish(0, rows, session.cache());
  if (c.n_layers == 1) return Status::OK();

  // Layer 1: fresh K/V of every token, compared with the cached V.
  KDN_RETURN_IF_ERROR(load.WaitLayer(1));
  tf.ProjectQkv(1, rows);
  std::vector<uint32_t> selected(n);
  uint32_t count = 0;
  KDN_RETURN_IF_ERROR(
      FromKdn(kdn_select_deviation(ctx.get(), rows.v.data(), &load.dest(), 1, KDN_V, first, n,
                                   ratio, selected.data(), &count, nullptr, nullptr),
              "blend: selecting tokens"));
  if (count > n) return Status::Internal("blend: libkdn selected more tokens than it was given");
  selected.resize(count);
  for (uint32_t i : selected) {
    if (i >= n) return Status::Internal("blend: libkdn selected a token out of range");
  }
  std::sort(selected.begin(), selected.end());  // rows keep sequence order
  if (std::adjacent_find(selected.begin(), selected.end()) != selected.end()) {
    return Status::Internal("blend: libkdn selected a token twice");
  }
  rows.Keep(selected, c);
  stats->recomputed_tokens = count;

  for (uint32_t l = 1; l < c.n_layers; ++l) {
    if (l > 1) {
      KDN_RETURN_IF_ERROR(load.WaitLayer(l));
      tf.ProjectQkv(l, rows);
    }
    KDN_RETURN_IF_ERROR(ScatterKv(ctx, load, l, rows));
    tf.Finish(l, rows, session.cache());
  }
  return Status::OK();
}

}  // namespace kdn::engine
