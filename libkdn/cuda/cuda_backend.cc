#include "libkdn/cuda/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "libkdn/api_status.h"
#include "libkdn/block_reader.h"
#include "libkdn/cuda/cuda_util.h"
#include "libkdn/cuda/decode_launch.h"
#include "libkdn/cuda/lossless_rans_launch.h"
#include "libkdn/cuda/row_launch.h"
#include "libkdn/cuda/tc_launch.h"
#include "libkdn/guarded.h"
#include "kdn/codec.h"

namespace kdn::libkdn {
namespace {

constexpr size_t kPayloadAlign = 256;  // device payloads: 16-byte vector loads need 16

class PinnedAllocator final : public HostAllocator {
 public:
  explicit PinnedAllocator(int device) : device_(device) {}
  Result<void*> Allocate(size_t bytes) override {
    ScopedDevice dev(device_);
    KDN_RETURN_IF_ERROR(dev.status());
    void* p = nullptr;
    KDN_RETURN_IF_ERROR(CudaStatus(cudaHostAlloc(&p, bytes, cudaHostAllocPortable),
                                   "cudaHostAlloc(" + std::to_string(bytes) + " bytes)"));
    return p;
  }
  void Free(void* p) override { (void)cudaFreeHost(p); }

 private:
  int device_;
};

// One event per layer, recorded after the layer's last write: what kdn_layer_event hands out.
class CudaCacheState final : public CacheDeviceState {
 public:
  std::vector<CudaEvent> events;
};

// Device copies of a destination's block table or slot mapping, and the addressing that uses them.
class DeviceTables {
 public:
  DeviceTables() = default;
  // The pinned source must not go back to the pool while its copy may still be reading it.
  ~DeviceTables() { (void)WaitCopied(); }
  DeviceTables(const DeviceTables&) = delete;
  DeviceTables& operator=(const DeviceTables&) = delete;

  // Uploads on `stream` from pinned staging (kept until the copy is done: WaitCopied).
  Status Upload(const DestSpec& d, cudaMemPool_t pool, cudaStream_t stream, StagingPool* staging) {
    addr_ = d.addressing();
    const void* src = d.has_slot_mapping ? static_cast<const void*>(d.slot_mapping.data())
                                         : static_cast<const void*>(d.block_table.data());
    const size_t bytes = d.has_slot_mapping  ? d.slot_mapping.size() * sizeof(int64_t)
                         : d.has_block_table ? d.block_table.size() * sizeof(int32_t)
                                             : 0;
    if (bytes == 0) return Status::OK();
    KDN_ASSIGN_OR_RETURN(host_, staging->Acquire(bytes));
    std::memcpy(host_.data(), src, bytes);
    KDN_RETURN_IF_ERROR(device_.Allocate(pool, bytes, stream));
    KDN_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(device_.get(), host_.data(), bytes, cudaMemcpyHostToDevice, stream));
    KDN_RETURN_IF_ERROR(copied_.Create());
    KDN_CUDA_RETURN_IF_ERROR(cudaEventRecord(copied_.get(), stream));
    if (d.has_slot_mapping) {
      addr_.slot_mapping = static_cast<const int64_t*>(device_.get());
    } else {
      addr_.block_table = static_cast<const int32_t*>(device_.get());
    }
    return Status::OK();
  }
  // Uploads from pageable memory: the runtime has consumed `d`'s tables when this returns.
  Status UploadPageable(const DestSpec& d, cudaMemPool_t pool, cudaStream_t stream) {
    addr_ = d.addressing();
    if (d.has_slot_mapping) {
      const size_t bytes = d.slot_mapping.size() * sizeof(int64_t);
      KDN_RETURN_IF_ERROR(device_.Allocate(pool, bytes, stream));
      KDN_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(device_.get(), d.slot_mapping.data(), bytes,
                                               cudaMemcpyHostToDevice, stream));
      addr_.slot_mapping = static_cast<const int64_t*>(device_.get());
    } else if (d.has_block_table) {
      const size_t bytes = d.block_table.size() * sizeof(int32_t);
      KDN_RETURN_IF_ERROR(device_.Allocate(pool, bytes, stream));
      KDN_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(device_.get(), d.block_table.data(), bytes,
                                               cudaMemcpyHostToDevice, stream));
      addr_.block_table = static_cast<const int32_t*>(device_.get());
    }
    return Status::OK();
  }
  // The pinned source may be reused once this returns.
  Status WaitCopied() {
    if (copied_.get() != nullptr) {
      KDN_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(copied_.get()));
    }
    host_.Release();
    return Status::OK();
  }
  const DestAddressing& addr() const { return addr_; }

 private:
  DestAddressing addr_;
  StagingBuffer host_;
  StreamBuffer device_;  // freed (stream-ordered) when this goes
  CudaEvent copied_;
};

// One of the two pinned buffers a load alternates between.
struct StagingSlot {
  StagingBuffer buffer;
  CudaEvent copied;  // recorded after the host-to-device copy out of `buffer`
  bool in_flight = false;

  StagingSlot() = default;
  ~StagingSlot() { (void)WaitIdle(); }
  StagingSlot(const StagingSlot&) = delete;
  StagingSlot& operator=(const StagingSlot&) = delete;

  Status WaitIdle() {
    if (in_flight) {
      KDN_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(copied.get()));
      in_flight = false;
    }
    return Status::OK();
  }
};

// A block read and prepared in a staging slot.
struct StagedBlock {
  bool present = false;
  std::optional<PreparedBlock> prepared;
  // lossless:entropy=rans: the parsed block (instead of `prepared`), its segments decoded on the
  // device.
  std::shared_ptr<const codec_internal::LosslessRansBlock> rans;
  const std::byte* payload = nullptr;  // in the slot's buffer
  size_t payload_bytes = 0;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, WorkerPool* pool, StagingPool* staging, cudaMemPool_t mem_pool)
      : device_(device), pool_(pool), staging_(staging), mem_pool_(mem_pool) {}
  ~CudaBackend() override {
    // Allocations still in flight keep the pool alive until they are freed (CUDA defers it).
    (void)cudaMemPoolDestroy(mem_pool_);
  }


  Result<std::unique_ptr<CacheDeviceState>> NewCacheState(uint32_t n_layers) override {
    ScopedDevice dev(device_);
    KDN_RETURN_IF_ERROR(dev.status());
    auto state = std::make_unique<CudaCacheState>();
    state->events.resize(n_layers);
    for (CudaEvent& e : state->events) KDN_RETURN_IF_ERROR(e.Create());
    return std::unique_ptr<CacheDeviceState>(std::move(state));
  }

  Status StartLoad(std::shared_ptr<LoadRequest> req) override {
    for (uint32_t l = req->layer_begin; l < req->layer_end; ++l) {
      for (KvKind kind : {KvKind::kKey, KvKind::kValue}) {
        KDN_RETURN_IF_ERROR(CheckDevicePointer(req->dest->base(l, kind), l, kind));
      }
    }
    pool_->Submit([this, req] { RunLoad(*req); });
    return Status::OK();
  }

  Status WaitLayerWork(CacheDeviceState* state, uint32_t layer) override {
    cudaEvent_t e = static_cast<CudaCacheState*>(state)->events[layer].get();
    return CudaStatus(cudaEventSynchronize(e),
                      "layer " + std::to_string(layer) + ": cudaEventSynchronize");
  }

  void* LayerEvent(CacheDeviceState* state, uint32_t layer) override {
    return static_cast<CudaCacheState*>(state)->events[layer].get();
  }

  Status RopeShiftKeys(const DestSpec& keys, const RopeShiftCall& call, void* stream_ptr) override {
    if (call.shift.style == 0 || call.n_tokens == 0) return Status::OK();
    if (call.shift.dim_offset != 0) {
      // The rotation kernel rotates each head's leading dims; an MLA latent's rope part trails.
      return Status::Unsupported("re-rotating an MLA latent's rope channels needs a CPU context");
    }
    ScopedDevice dev(device_);
    KDN_RETURN_IF_ERROR(dev.status());
    const auto stream = static_cast<cudaStream_t>(stream_ptr);
    for (uint32_t l = call.layer_begin; l < call.layer_end; ++l) {
      KDN_RETURN_IF_ERROR(CheckDevicePointer(keys.base(l, KvKind::kKey), l, KvKind::kKey));
    }
    DeviceTables tables;
    KDN_RETURN_IF_ERROR(tables.UploadPageable(keys, mem_pool_, stream));
    auto args = std::make_unique<RopeArgs>();
    FillRope(keys, tables.addr(), call.shift, args.get());
    args->token_begin = call.token_begin;
    args->n_tokens = call.n_tokens;
    for (uint32_t l = call.layer_begin; l < call.layer_end; ++l) {
      args->base = keys.base(l, KvKind::kKey);
      if (args->base != nullptr) KDN_RETURN_IF_ERROR(LaunchRope(*args, stream));
    }
    return Status::OK();
  }

  Status Deviation(const void* fresh, const DestSpec& cached, uint32_t layer, KvKind kind,
                   uint32_t token_begin, uint32_t n, float* out, void* stream_ptr) override {
    ScopedDevice dev(device_);
    KDN_RETURN_IF_ERROR(dev.status());
    const auto stream = static_cast<cudaStream_t>(stream_ptr);
    KDN_RETURN_IF_ERROR(CheckDevicePointer(cached.base(layer, kind), layer, kind));
    KDN_RETURN_IF_ERROR(CheckDevicePointer(fresh, "fresh"));
    Status s;
    {
      DeviceTables tables;
      StreamBuffer result;
      s = tables.UploadPageable(cached, mem_pool_, stream);
      if (s.ok()) s = result.Allocate(mem_pool_, size_t{n} * sizeof(float), stream);
      if (s.ok()) {
        s = LaunchDeviation(fresh, cached.base(layer, kind), tables.addr(),
                            static_cast<uint32_t>(cached.dtype), cached.channels(), token_begin, n,
                            static_cast<float*>(result.get()), stream);
      }
      if (s.ok()) {
        s = CudaStatus(cudaMemcpyAsync(out, result.get(), size_t{n} * sizeof(float),
                                       cudaMemcpyDeviceToHost, stream),
                       "cudaMemcpyAsync (deviation)");
      }
    }  // device buffers freed in stream order
    Status synced = CudaStatus(cudaStreamSynchronize(stream), "cudaStreamSynchronize (deviation)");
    return s.ok() ? synced : s;
  }

  Status ScatterRows(const void* rows, std::span<const uint32_t> tokens, const DestSpec& dest,
                     uint32_t layer, KvKind kind, void* stream_ptr) override {
    ScopedDevice dev(device_);
    KDN_RETURN_IF_ERROR(dev.status());
    const auto stream = static_cast<cudaStream_t>(stream_ptr);
    KDN_RETURN_IF_ERROR(CheckDevicePointer(dest.base(layer, kind), layer, kind));
    KDN_RETURN_IF_ERROR(CheckDevicePointer(rows, "rows"));
    DeviceTables tables;
    KDN_RETURN_IF_ERROR(tables.UploadPageable(dest, mem_pool_, stream));
    StreamBuffer dev_tokens;
    const size_t bytes = tokens.size() * sizeof(uint32_t);
    KDN_RETURN_IF_ERROR(dev_tokens.Allocate(mem_pool_, bytes, stream));
    KDN_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(dev_tokens.get(), tokens.data(), bytes, cudaMemcpyHostToDevice, stream));
    return LaunchScatter(rows, static_cast<const uint32_t*>(dev_tokens.get()),
                         static_cast<uint32_t>(tokens.size()), dest.base(layer, kind),
                         tables.addr(), static_cast<uint32_t>(dest.dtype), dest.channels(), stream);
  }

  Status GatherRows(const DestSpec& src, uint32_t layer, KvKind kind, uint32_t n,
                    std::byte* out) override {
    ScopedDevice dev(device_);
    KDN_RETURN_IF_ERROR(dev.status());
    const cudaStream_t stream = nullptr;  // legacy default stream: after the other blocking streams
    KDN_RETURN_IF_ERROR(CheckDevicePointer(src.base(layer, kind), layer, kind));
    const size_t bytes = size_t{n} * src.channels() * src.elem_size;
    Status s;
    {
      DeviceTables tables;
      StreamBuffer rows;
      s = tables.UploadPageable(src, mem_pool_, stream);
      if (s.ok()) s = rows.Allocate(mem_pool_, bytes, stream);
      if (s.ok()) {
        s = LaunchGather(src.base(layer, kind), tables.addr(), static_cast<uint32_t>(src.dtype),
                         src.channels(), n, rows.get(), stream);
      }
      if (s.ok()) {
        s = CudaStatus(cudaMemcpyAsync(out, rows.get(), bytes, cudaMemcpyDeviceToHost, stream),
                       "cudaMemcpyAsync (gather)");
      }
    }
    Status synced = CudaStatus(cudaStreamSynchronize(stream), "cudaStreamSynchronize (gather)");
    return s.ok() ? synced : s;
  }

 private:
  // A destination pointer must be memory of this device (or managed memory).
  Status CheckDevicePointer(const void* p, const std::string& what) const {
    if (p == nullptr) return Status::OK();
    cudaPointerAttributes attr;
    const cudaError_t err = cudaPointerGetAttributes(&attr, p);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      return Status::InvalidArgument(what + " is not CUDA memory: " + cudaGetErrorString(err));
    }
    if (attr.type == cudaMemoryTypeManaged) return Status::OK();
    if (attr.type != cudaMemoryTypeDevice) {
      return Status::InvalidArgument(what +
                                     " is not device memory (a CUDA context writes device memory)");
    }
    if (attr.device != device_) {
      return Status::InvalidArgument(what + " is memory of device " + std::to_string(attr.device) +
                                     ", the context's device is " + std::to_string(device_));
    }
    return Status::OK();
  }
  Status CheckDevicePointer(const void* p, uint32_t layer, KvKind kind) const {
    return CheckDevicePointer(
        p, std::string(kind == KvKind::kKey ? "k_base[" : "v_base[") + std::to_string(layer) + "]");
  }

  static void FillRope(const DestSpec& d, const DestAddressing& addr, const RopeShift& shift,
                       RopeArgs* a) {
    a->addr = addr;
    a->dtype = static_cast<uint32_t>(d.dtype);
    a->n_heads = d.n_kv_heads;
    a->style = shift.style;
    a->rotary_dim = shift.rotary_dim;
    std::fill(std::begin(a->cos), std::end(a->cos), 0.0f);
    std::fill(std::begin(a->sin), std::end(a->sin), 0.0f);
    std::copy(shift.cos.begin(), shift.cos.end(), a->cos);
    std::copy(shift.sin.begin(), shift.sin.end(), a->sin);
  }

  // Reads, verifies and prepares the layer's blocks of head group `group` (0 in a file of one
  // group) into `slot` (after its previous copy is done).
  Status StageLayer(const LoadRequest& req, uint32_t layer, uint32_t group, StagingSlot& slot,
                    StagedBlock (&blocks)[2]) {
    const BlockReader& reader = *req.reader;
    const KvHeader& h = reader.header();
    // tc and lossless rANS blocks go to the device encoded and are decoded there (EnqueueLayer);
    // the host only parses their tables. A zstd stage is undone here.
    const bool rans = codec_internal::IsLosslessRans(h.codec);
    const bool zstd = (h.codec.id == CodecId::kLossless && !rans) || h.codec.zstd;
    size_t read_at[2] = {0, 0};
    size_t total = 0;
    for (int kv = 0; kv < 2; ++kv) {
      blocks[kv].present = req.dest->base(layer, static_cast<KvKind>(kv)) != nullptr;
      blocks[kv].rans.reset();
      if (!blocks[kv].present) continue;
      read_at[kv] = total;
      total += AlignUp(reader.ReadSize(layer, static_cast<KvKind>(kv), group), kStagingAlign);
    }
    // Payloads of a zstd stage are decompressed next to the encoded bytes, so that one copy moves
    // both; their sizes are the decoded block layouts, at most a few bytes over the raw size.
    size_t payload_at = total;
    if (zstd) {
      for (int kv = 0; kv < 2; ++kv) {
        if (blocks[kv].present) total += AlignUp(PayloadBound(h), kPayloadAlign);
      }
    }
    KDN_RETURN_IF_ERROR(slot.WaitIdle());
    if (slot.buffer.size() < total) {
      slot.buffer.Release();
      KDN_ASSIGN_OR_RETURN(slot.buffer, staging_->Acquire(total));
    }
    const BlockShape shape{h.n_tokens, h.group_channels(), h.model.dtype};
    for (int kv = 0; kv < 2; ++kv) {
      if (!blocks[kv].present) continue;
      const KvKind kind = static_cast<KvKind>(kv);
      const size_t n = reader.ReadSize(layer, kind, group);
      const std::span<std::byte> region = slot.buffer.span().subspan(read_at[kv], n);
      KDN_RETURN_IF_ERROR(reader.ReadBlock(layer, kind, region, group));
      const uint64_t encoded_bytes = h.block(layer, kind, group).encoded_bytes;
      if (rans) {
        const std::span<const std::byte> encoded = region.first(encoded_bytes);
        Status st = codec_internal::CheckEncodedSize(h.codec, kind, shape, encoded.size());
        auto parsed = st.ok() ? codec_internal::LosslessRansBlock::Parse(shape, encoded)
                              : Result<std::shared_ptr<const codec_internal::LosslessRansBlock>>(st);
        if (!parsed.ok()) {
          return parsed.status().WithContext(reader.path() + ": " +
                                             reader.BlockName(layer, kind, group));
        }
        blocks[kv].prepared.reset();
        blocks[kv].rans = std::move(*parsed);
        blocks[kv].payload = encoded.data();
        blocks[kv].payload_bytes = encoded.size();
        continue;
      }
      Result<PreparedBlock> p =
          PreparedBlock::Prepare(h.codec, kind, shape, region.first(encoded_bytes));
      if (!p.ok())
        return p.status().WithContext(reader.path() + ": " + reader.BlockName(layer, kind, group));
      blocks[kv].prepared.emplace(std::move(*p));
      const std::span<const std::byte> payload = blocks[kv].prepared->payload();
      if (zstd) {
        if (payload.size() > PayloadBound(h))
          return Status::Internal("zstd payload larger than its bound");
        std::byte* dst = slot.buffer.data() + payload_at;
        std::memcpy(dst, payload.data(), payload.size());
        blocks[kv].payload = dst;
        payload_at += AlignUp(PayloadBound(h), kPayloadAlign);
      } else {
        blocks[kv].payload = payload.data();
      }
      blocks[kv].payload_bytes = payload.size();
    }
    return Status::OK();
  }

  // Bytes of a block's payload after its zstd stage: byte planes (lossless) or params + pad +
  // codes (quant), per docs/kv-format.md. (A head group's block, in a grouped file.)
  static size_t PayloadBound(const KvHeader& h) {
    const uint64_t channels = h.group_channels();
    if (h.codec.id != CodecId::kQuant) return h.group_block_bytes();
    const uint64_t groups =
        h.codec.group_size == 0 ? 0 : (h.n_tokens + h.codec.group_size - 1) / h.codec.group_size;
    const uint64_t k_params = groups * channels;
    const uint64_t v_params = uint64_t{h.n_tokens} * ((channels + h.codec.group_size - 1) /
                                                      std::max<uint32_t>(1, h.codec.group_size));
    const uint64_t params = std::max(k_params, v_params) * 4;
    const uint64_t codes = uint64_t{h.n_tokens} * ((channels * h.codec.bits + 7) / 8);
    return static_cast<size_t>(AlignUp(params, 16) + codes);
  }

  // Enqueues the copy and decode of a staged layer's head group into its heads' channels; after
  // the layer's last group, its RoPE and its event.
  Status EnqueueLayer(const LoadRequest& req, uint32_t layer, uint32_t group, StagingSlot& slot,
                      StagedBlock (&blocks)[2], const DestAddressing& addr, cudaStream_t stream,
                      RopeArgs* rope) {
    const KvHeader& h = req.reader->header();
    const bool last_group = group + 1 == h.head_groups;
    cudaEvent_t done = static_cast<CudaCacheState*>(req.device_state)->events[layer].get();
    const auto record_if_last = [&]() -> Status {
      if (!last_group) return Status::OK();
      return CudaStatus(cudaEventRecord(done, stream), "cudaEventRecord");
    };
    const std::byte* lo = nullptr;
    const std::byte* hi = nullptr;
    for (const StagedBlock& b : blocks) {
      if (!b.present) continue;
      lo = lo == nullptr ? b.payload : std::min(lo, b.payload);
      hi = std::max(hi, b.payload + b.payload_bytes);
    }
    if (lo == nullptr) return record_if_last();  // nothing of this layer is wanted
    StreamBuffer device;
    KDN_RETURN_IF_ERROR(device.Allocate(mem_pool_, static_cast<size_t>(hi - lo), stream));
    KDN_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(device.get(), lo, static_cast<size_t>(hi - lo),
                                             cudaMemcpyHostToDevice, stream));
    KDN_CUDA_RETURN_IF_ERROR(cudaEventRecord(slot.copied.get(), stream));
    slot.in_flight = true;

    // tc: the encoded blocks decoded on the device into model-dtype rows (tc_launch.h, the same
    // functions as the CPU decoder), which the raw decode then places.
    const bool tc = h.codec.id == CodecId::kTc;
    StreamBuffer tc_rows[2];
    if (tc) {
      for (int kv = 0; kv < 2; ++kv) {
        if (!blocks[kv].present) continue;
        const KvKind kind = static_cast<KvKind>(kv);
        KDN_RETURN_IF_ERROR(tc_rows[kv].Allocate(mem_pool_, h.group_block_bytes(), stream));
        const auto* encoded =
            reinterpret_cast<const uint8_t*>(device.get()) + (blocks[kv].payload - lo);
        Status st = DecodeTcOnDevice(*blocks[kv].prepared->tc(), encoded,
                                     static_cast<uint32_t>(h.model.dtype), tc_rows[kv].get(),
                                     stream);
        if (!st.ok()) {
          return st.WithContext(req.reader->path() + ": " +
                                req.reader->BlockName(layer, kind, group));
        }
      }
    }

    // lossless rANS: the segments decoded on the device into the byte planes the lossless decode
    // reads (lossless_rans_launch.h).
    const bool rans = codec_internal::IsLosslessRans(h.codec);
    StreamBuffer planes[2];
    if (rans) {
      for (int kv = 0; kv < 2; ++kv) {
        if (!blocks[kv].present) continue;
        const KvKind kind = static_cast<KvKind>(kv);
        KDN_RETURN_IF_ERROR(planes[kv].Allocate(mem_pool_, h.group_block_bytes(), stream));
        const auto* encoded =
            reinterpret_cast<const uint8_t*>(device.get()) + (blocks[kv].payload - lo);
        Status st = DecodeLosslessRansOnDevice(*blocks[kv].rans, encoded,
                                               static_cast<uint8_t*>(planes[kv].get()), stream);
        if (!st.ok()) {
          return st.WithContext(req.reader->path() + ": " +
                                req.reader->BlockName(layer, kind, group));
        }
      }
    }

    DecodeArgs args;
    args.codec = static_cast<uint32_t>(tc ? CodecId::kRaw : h.codec.id);
    args.bits = h.codec.bits;
    args.group_size = h.codec.group_size;
    args.model_dtype = static_cast<uint32_t>(h.model.dtype);
    args.out_dtype = static_cast<uint32_t>(req.dest->dtype);
    args.tokens = h.n_tokens;
    // A group's block fills its heads: the destination seen from its first head on.
    args.channels = h.group_channels();
    const int64_t group_offset = int64_t{group} * h.heads_per_group() * req.dest->head_stride *
                                 static_cast<int64_t>(req.dest->elem_size);
    args.addr = addr;
    args.dest_token_offset = req.dest_token_offset;
    for (int kv = 0; kv < 2; ++kv) {
      if (!blocks[kv].present) continue;
      args.block[kv].payload =
          tc                ? static_cast<const uint8_t*>(tc_rows[kv].get())
          : rans ? static_cast<const uint8_t*>(planes[kv].get())
                 : reinterpret_cast<const uint8_t*>(device.get()) + (blocks[kv].payload - lo);
      args.block[kv].out =
          static_cast<std::byte*>(req.dest->base(layer, static_cast<KvKind>(kv))) + group_offset;
      args.block[kv].codes_offset =
          blocks[kv].prepared ? static_cast<uint32_t>(blocks[kv].prepared->codes_offset()) : 0;
    }
    KDN_RETURN_IF_ERROR(LaunchDecode(args, stream));
    if (last_group && rope != nullptr && req.dest->base(layer, KvKind::kKey) != nullptr) {
      rope->base = req.dest->base(layer, KvKind::kKey);
      KDN_RETURN_IF_ERROR(LaunchRope(*rope, stream));
    }
    device.Free();  // stream-ordered: after the kernels above
    for (StreamBuffer& rows : tc_rows) rows.Free();
    for (StreamBuffer& p : planes) p.Free();
    return record_if_last();
  }

  void RunLoad(LoadRequest& req) {
    RunLayers(req);
    // Everything of this load (device buffers, events, staging) is released: the caller may now
    // destroy its stream, close the cache or free the destination.
    req.done.Finish(Status::OK());
  }

  void RunLayers(LoadRequest& req) {
    const auto stream = static_cast<cudaStream_t>(req.stream);
    ScopedDevice dev(device_);
    Status fatal = dev.status();  // a failure that stops the whole load
    DeviceTables tables;
    StagingSlot slots[2];
    std::unique_ptr<RopeArgs> rope;
    fatal = Guarded([&]() -> Status {
      KDN_RETURN_IF_ERROR(fatal);
      KDN_RETURN_IF_ERROR(slots[0].copied.Create());
      KDN_RETURN_IF_ERROR(slots[1].copied.Create());
      KDN_RETURN_IF_ERROR(tables.Upload(*req.dest, mem_pool_, stream, staging_));
      if (req.rope && req.rope_shift.style != 0) {
        rope = std::make_unique<RopeArgs>();
        FillRope(*req.dest, tables.addr(), req.rope_shift, rope.get());
        rope->token_begin = req.dest_token_offset;
        rope->n_tokens = req.reader->header().n_tokens;
      }
      return Status::OK();
    });
    // Whole loads only (Cache::Load refuses head ranges here): every head group of each layer,
    // in turn, through the two staging slots.
    const uint32_t groups = req.reader->header().head_groups;
    uint64_t staged = 0;
    for (uint32_t l = req.layer_begin; l < req.layer_end; ++l) {
      Status s = fatal;
      if (s.ok()) {
        s = Guarded([&]() -> Status {
          for (uint32_t g = 0; g < groups; ++g) {
            StagingSlot& slot = slots[staged++ % 2];
            StagedBlock blocks[2];
            KDN_RETURN_IF_ERROR(StageLayer(req, l, g, slot, blocks));
            KDN_RETURN_IF_ERROR(
                EnqueueLayer(req, l, g, slot, blocks, tables.addr(), stream, rope.get()));
          }
          return Status::OK();
        });
        // After a CUDA failure the stream's state is unknown: stop enqueueing.
        if (ToApiStatus(s) == KDN_E_CUDA) fatal = s;
      }
      req.layers[l - req.layer_begin]->Finish(s);
    }
    // Staging buffers go back to the pool only once the copies out of them are done; the table
    // buffer's free is enqueued (stream-ordered) when `tables` goes.
    for (StagingSlot& slot : slots) (void)slot.WaitIdle();
    (void)tables.WaitCopied();
  }

  const int device_;
  WorkerPool* pool_;
  StagingPool* staging_;
  cudaMemPool_t mem_pool_;
};

}  // namespace

Result<std::unique_ptr<HostAllocator>> PinnedHostAllocator(int device) {
  return std::unique_ptr<HostAllocator>(std::make_unique<PinnedAllocator>(device));
}

Result<std::unique_ptr<Backend>> NewCudaBackend(int device, WorkerPool* pool,
                                                StagingPool* staging) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    return Status::NotFound(std::string("no CUDA device: ") + cudaGetErrorName(err) + ": " +
                            cudaGetErrorString(err));
  }
  if (device >= count) {
    return Status::NotFound("no CUDA device " + std::to_string(device) + " (" +
                            std::to_string(count) + " present)");
  }
  ScopedDevice dev(device);
  KDN_RETURN_IF_ERROR(dev.status());
  cudaMemPoolProps props;
  std::memset(&props, 0, sizeof props);
  props.allocType = cudaMemAllocationTypePinned;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = device;
  cudaMemPool_t mem_pool = nullptr;
  KDN_CUDA_RETURN_IF_ERROR(cudaMemPoolCreate(&mem_pool, &props));
  // Keep freed memory for the next layer instead of returning it to the driver at each sync.
  uint64_t keep = UINT64_MAX;
  Status s = CudaStatus(cudaMemPoolSetAttribute(mem_pool, cudaMemPoolAttrReleaseThreshold, &keep),
                        "cudaMemPoolSetAttribute");
  if (!s.ok()) {
    (void)cudaMemPoolDestroy(mem_pool);
    return s;
  }
  return std::unique_ptr<Backend>(std::make_unique<CudaBackend>(device, pool, staging, mem_pool));
}

}  // namespace kdn::libkdn
