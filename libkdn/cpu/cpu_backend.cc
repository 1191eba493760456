#include "libkdn/cpu/cpu_backend.h"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <optional>
#include <vector>

#include "libkdn/block_reader.h"
#include "libkdn/cpu/cpu_rows.h"
#include "libkdn/guarded.h"
#include "kdn/codec.h"

namespace kdn::libkdn {
namespace {

constexpr size_t kTileBytes = 256u << 10;  // output bytes per tile task
constexpr uint32_t kTokensPerItem = 64;    // tokens per item of the synchronous calls

// One load in flight.
struct CpuLoad {
  std::shared_ptr<LoadRequest> req;
  WorkerPool* pool = nullptr;
  StagingPool* staging = nullptr;
  uint32_t tile_tokens = 1;
  std::unique_ptr<std::atomic<uint32_t>[]> blocks_left;  // per layer of the request
  std::atomic<uint32_t> layers_left{0};
  std::mutex mu;
  std::vector<Status> layer_status;

  // The head groups the request's heads are in: [group_begin, group_end) (0 and 1 for a file of
  // one group). Only their blocks are read.
  uint32_t group_begin = 0;
  uint32_t group_end = 1;

  uint32_t index(uint32_t layer) const { return layer - req->layer_begin; }
  std::byte* base(uint32_t layer, KvKind kind) const {
    return static_cast<std::byte*>(req->dest->base(layer, kind));
  }

  // A block of `layer` is done (its rows written, or failed with `s`).
  void BlockDone(uint32_t layer, const Status& s) {
    const uint32_t i = index(layer);
    if (!s.ok()) {
      std::lock_guard<std::mutex> lock(mu);
      if (layer_status[i].ok()) layer_status[i] = s;
    }
    if (blocks_left[i].fetch_sub(1, std::memory_order_acq_rel) == 1) LayerDone(layer);
  }
  void LayerDone(uint32_t layer) {
    Status s;
    {
      std::lock_guard<std::mutex> lock(mu);
      s = layer_status[index(layer)];
    }
    req->layers[index(layer)]->Finish(s);
    if (layers_left.fetch_sub(1, std::memory_order_acq_rel) == 1) req->done.Finish(Status::OK());
  }
};

// One (layer, K/V, head group) block being decoded.
struct CpuBlock {
  std::shared_ptr<CpuLoad> load;
  uint32_t layer = 0;
  KvKind kind = KvKind::kKey;
  uint32_t group = 0;
  HeadWindow window;  // the destination heads this block fills
  StagingBuffer encoded;
  std::optional<PreparedBlock> prepared;
  std::atomic<uint32_t> tiles_left{0};
  std::mutex mu;
  Status status;

  void Record(const Status& s) {
    if (s.ok()) return;
    std::lock_guard<std::mutex> lock(mu);
    if (status.ok()) status = s;
  }
  void TileDone() {
    if (tiles_left.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    Status s;
    {
      std::lock_guard<std::mutex> lock(mu);
      s = status;
    }
    // Release the memory before announcing completion.
    prepared.reset();
    encoded.Release();
    load->BlockDone(layer, s);
  }
};

Status ReadAndPrepare(CpuBlock& b) {
  const LoadRequest& req = *b.load->req;
  const BlockReader& reader = *req.reader;
  const KvHeader& h = reader.header();
  KDN_ASSIGN_OR_RETURN(b.encoded,
                       b.load->staging->Acquire(reader.ReadSize(b.layer, b.kind, b.group)));
  KDN_RETURN_IF_ERROR(reader.ReadBlock(b.layer, b.kind, b.encoded.span(), b.group));
  const BlockShape shape{h.n_tokens, h.group_channels(), h.model.dtype};
  const std::span<const std::byte> enc =
      b.encoded.span().first(h.block(b.layer, b.kind, b.group).encoded_bytes);
  Result<PreparedBlock> p = PreparedBlock::Prepare(h.codec, b.kind, shape, enc);
  if (!p.ok())
    return p.status().WithContext(reader.path() + ": " +
                                  reader.BlockName(b.layer, b.kind, b.group));
  b.prepared.emplace(std::move(*p));
  return Status::OK();
}

void RunTile(const std::shared_ptr<CpuBlock>& b, uint32_t t0, uint32_t t1) {
  const LoadRequest& req = *b->load->req;
  b->Record(Guarded([&]() -> Status {
    std::byte* base = b->load->base(b->layer, b->kind);
    Status s =
        DecodeTileToDest(*b->prepared, t0, t1, b->window, *req.dest, base, req.dest_token_offset);
    if (!s.ok()) {
      return s.WithContext(req.reader->path() + ": " +
                           req.reader->BlockName(b->layer, b->kind, b->group));
    }
    if (req.rope && b->kind == KvKind::kKey) {
      RotateKeys(*req.dest, base, req.dest_token_offset + t0, req.dest_token_offset + t1,
                 req.rope_shift, b->window.head_begin, b->window.head_begin + b->window.n_heads);
    }
    return Status::OK();
  }));
  b->TileDone();
}

// Reads block (layer, kind, group), fans its tiles out, then chains to the next group of the
// request's heads, or the first of the next layer that wants `kind`.
void RunChain(const std::shared_ptr<CpuLoad>& load, KvKind kind, uint32_t layer, uint32_t group) {
  const LoadRequest& req = *load->req;
  if (group >= load->group_end) {
    ++layer;
    group = load->group_begin;
  }
  while (layer < req.layer_end && load->base(layer, kind) == nullptr) ++layer;
  if (layer >= req.layer_end) return;

  auto block = std::make_shared<CpuBlock>();
  block->load = load;
  block->layer = layer;
  block->kind = kind;
  block->group = group;
  {
    // The heads this group shares with the request: [h0, h1) of the cache.
    const KvHeader& h = req.reader->header();
    const uint32_t per_group = h.heads_per_group();
    const uint32_t req_end = req.head_begin + req.dest->n_kv_heads;
    const uint32_t h0 = std::max(req.head_begin, group * per_group);
    const uint32_t h1 = std::min(req_end, (group + 1) * per_group);
    block->window.c_begin = (h0 - group * per_group) * h.model.head_dim;
    block->window.head_begin = h0 - req.head_begin;
    block->window.n_heads = h1 - h0;
  }
  const uint32_t n_tokens = req.reader->header().n_tokens;
  // A sliding-window layer decodes only its window, on the same tile grid as a whole load (the
  // first tile cut at the window's start), so that tiles keep starting on quantization groups.
  const uint32_t first = req.reader->header().window_begin(layer);
  const uint32_t first_tile = first / load->tile_tokens;
  const uint32_t n_tiles = (n_tokens + load->tile_tokens - 1) / load->tile_tokens - first_tile;
  // One count for this function, released after every tile is submitted.
  block->tiles_left.store(n_tiles + 1, std::memory_order_relaxed);
  Status s = Guarded([&] { return ReadAndPrepare(*block); });
  uint32_t submitted = 0;
  if (s.ok()) {
    s = Guarded([&] {
      for (; submitted < n_tiles; ++submitted) {
        const uint32_t t0 = std::max(first, (first_tile + submitted) * load->tile_tokens);
        const uint32_t t1 = std::min(n_tokens, (first_tile + submitted + 1) * load->tile_tokens);
        load->pool->Submit([block, t0, t1] { RunTile(block, t0, t1); });
      }
      return Status::OK();
    });
  }
  block->Record(s);
  // Tiles that were never submitted count as done.
  for (uint32_t i = submitted; i < n_tiles; ++i) block->TileDone();
  const Status chained = Guarded([&] {
    load->pool->Submit([load, kind, layer, group] { RunChain(load, kind, layer, group + 1); });
    return Status::OK();
  });
  if (!chained.ok()) {
    // The chain cannot continue: finish its remaining blocks with the error.
    for (uint32_t g = group + 1; g < load->group_end; ++g) load->BlockDone(layer, chained);
    for (uint32_t l = layer + 1; l < req.layer_end; ++l) {
      if (load->base(l, kind) == nullptr) continue;
      for (uint32_t g = load->group_begin; g < load->group_end; ++g) load->BlockDone(l, chained);
    }
  }
  block->TileDone();
}

class CpuBackend final : public Backend {
 public:
  CpuBackend(WorkerPool* pool, StagingPool* staging) : pool_(pool), staging_(staging) {}


  Result<std::unique_ptr<CacheDeviceState>> NewCacheState(uint32_t) override {
    return std::unique_ptr<CacheDeviceState>();
  }

  Status StartLoad(std::shared_ptr<LoadRequest> req) override {
    auto load = std::make_shared<CpuLoad>();
    load->req = req;
    load->pool = pool_;
    load->staging = staging_;
    const DestSpec& d = *req->dest;
    const size_t row_bytes = size_t{d.channels()} * d.elem_size;
    uint32_t tile = static_cast<uint32_t>(std::max<size_t>(1, kTileBytes / row_bytes));
    if (tile >= 64) tile = tile / 32 * 32;  // whole quantization groups per tile
    load->tile_tokens = std::min(tile, req->reader->header().n_tokens);
    const KvHeader& h = req->reader->header();
    load->group_begin = h.first_group(req->head_begin);
    load->group_end = h.end_group(req->head_begin + d.n_kv_heads);
    const uint32_t groups = load->group_end - load->group_begin;
    const uint32_t n_layers = req->layer_end - req->layer_begin;
    load->blocks_left = std::make_unique<std::atomic<uint32_t>[]>(n_layers);
    load->layer_status.resize(n_layers);
    load->layers_left.store(n_layers + 1, std::memory_order_relaxed);  // +1 until started
    bool any[2] = {false, false};
    std::vector<uint32_t> empty_layers;
    for (uint32_t l = req->layer_begin; l < req->layer_end; ++l) {
      uint32_t blocks = 0;
      for (int kv = 0; kv < 2; ++kv) {
        if (load->base(l, static_cast<KvKind>(kv)) != nullptr) {
          blocks += groups;
          any[kv] = true;
        }
      }
      load->blocks_left[load->index(l)].store(blocks, std::memory_order_relaxed);
      if (blocks == 0) empty_layers.push_back(l);
    }
    for (int kv = 0; kv < 2; ++kv) {
      if (any[kv]) {
        const KvKind kind = static_cast<KvKind>(kv);
        pool_->Submit(
            [load, kind] { RunChain(load, kind, load->req->layer_begin, load->group_begin); });
      }
    }
    for (uint32_t l : empty_layers) load->LayerDone(l);
    // Drop the start count: finishes the request when every layer already did.
    if (load->layers_left.fetch_sub(1, std::memory_order_acq_rel) == 1)
      req->done.Finish(Status::OK());
    return Status::OK();
  }

  Status WaitLayerWork(CacheDeviceState*, uint32_t) override { return Status::OK(); }
  void* LayerEvent(CacheDeviceState*, uint32_t) override { return nullptr; }

  Status RopeShiftKeys(const DestSpec& keys, const RopeShiftCall& call, void*) override {
    if (call.shift.style == 0 || call.n_tokens == 0) return Status::OK();
    const uint64_t chunks = (call.n_tokens + kTokensPerItem - 1) / kTokensPerItem;
    const uint64_t layers = call.layer_end - call.layer_begin;
    return pool_->ParallelFor(layers * chunks, [&](uint64_t item) {
      const uint32_t layer = call.layer_begin + static_cast<uint32_t>(item / chunks);
      auto* base = static_cast<std::byte*>(keys.base(layer, KvKind::kKey));
      if (base == nullptr) return Status::OK();
      const uint32_t t0 = call.token_begin + static_cast<uint32_t>(item % chunks) * kTokensPerItem;
      const uint32_t t1 = std::min(call.token_begin + call.n_tokens, t0 + kTokensPerItem);
      RotateKeys(keys, base, t0, t1, call.shift, 0, keys.n_kv_heads);
      return Status::OK();
    });
  }

  Status Deviation(const void* fresh, const DestSpec& cached, uint32_t layer, KvKind kind,
                   uint32_t token_begin, uint32_t n, float* out, void*) override {
    const auto* base = static_cast<const std::byte*>(cached.base(layer, kind));
    const uint64_t chunks = (n + kTokensPerItem - 1) / kTokensPerItem;
    return pool_->ParallelFor(chunks, [&](uint64_t item) {
      const uint32_t i0 = static_cast<uint32_t>(item) * kTokensPerItem;
      DeviationRows(fresh, cached, base, token_begin, i0, std::min(n, i0 + kTokensPerItem), out);
      return Status::OK();
    });
  }

  Status ScatterRows(const void* rows, std::span<const uint32_t> tokens, const DestSpec& dest,
                     uint32_t layer, KvKind kind, void*) override {
    auto* base = static_cast<std::byte*>(dest.base(layer, kind));
    const uint32_t n = static_cast<uint32_t>(tokens.size());
    // Token indices are distinct (the API's contract), so rows go in any order.
    const uint64_t chunks = (n + kTokensPerItem - 1) / kTokensPerItem;
    return pool_->ParallelFor(chunks, [&](uint64_t item) {
      const uint32_t i0 = static_cast<uint32_t>(item) * kTokensPerItem;
      ScatterRowRange(static_cast<const std::byte*>(rows), tokens.data(), i0,
                      std::min(n, i0 + kTokensPerItem), dest, base);
      return Status::OK();
    });
  }

  Status GatherRows(const DestSpec& src, uint32_t layer, KvKind kind, uint32_t n,
                    std::byte* out) override {
    const auto* base = static_cast<const std::byte*>(src.base(layer, kind));
    const uint64_t chunks = (n + kTokensPerItem - 1) / kTokensPerItem;
    return pool_->ParallelFor(chunks, [&](uint64_t item) {
      const uint32_t t0 = static_cast<uint32_t>(item) * kTokensPerItem;
      GatherRowRange(src, base, t0, std::min(n, t0 + kTokensPerItem), out);
      return Status::OK();
    });
  }

 private:
  WorkerPool* pool_;
  StagingPool* staging_;
};

}  // namespace

std::unique_ptr<Backend> NewCpuBackend(WorkerPool* pool, StagingPool* staging) {
  return std::make_unique<CpuBackend>(pool, staging);
}

}  // namespace kdn::libkdn
