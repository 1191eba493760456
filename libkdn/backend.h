// The two ways of doing the work: the CPU backend (host memory, worker threads) and the CUDA
// backend (device memory, the caller's stream). The C API layer validates every argument and
// hands a backend only well-formed requests.
#ifndef KDN_LIBKDN_BACKEND_H_
#define KDN_LIBKDN_BACKEND_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "libkdn/dest.h"
#include "libkdn/load_request.h"
#include "kdn/status.h"

namespace kdn::libkdn {

// Per-cache state a backend keeps (CUDA: one event per layer).
class CacheDeviceState {
 public:
  virtual ~CacheDeviceState() = default;
};

// kdn_rope_shift on layers [layer_begin, layer_end), destination tokens [token_begin, +n_tokens).
struct RopeShiftCall {
  uint32_t layer_begin = 0;
  uint32_t layer_end = 0;
  uint32_t token_begin = 0;
  uint32_t n_tokens = 0;
  RopeShift shift;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Result<std::unique_ptr<CacheDeviceState>> NewCacheState(uint32_t n_layers) = 0;
  // Starts `req`; every completion in it is eventually finished, req->done last. Errors of the
  // request as a whole (before anything started) are returned and finish nothing.
  virtual Status StartLoad(std::shared_ptr<LoadRequest> req) = 0;
  // After the layer's completion finished OK: waits until its writes are in place (CUDA: its
  // event). `state` is the cache's.
  virtual Status WaitLayerWork(CacheDeviceState* state, uint32_t layer) = 0;
  // The layer's event (CUDA), nullptr for the CPU backend.
  virtual void* LayerEvent(CacheDeviceState* state, uint32_t layer) = 0;

  virtual Status RopeShiftKeys(const DestSpec& keys, const RopeShiftCall& call, void* stream) = 0;
  // Per-token deviation of `fresh` ([n][channels] of cached.dtype, backend memory) against the
  // cached rows [token_begin, +n) of (layer, kind), to `out` (host, n floats). Synchronous.
  virtual Status Deviation(const void* fresh, const DestSpec& cached, uint32_t layer, KvKind kind,
                           uint32_t token_begin, uint32_t n, float* out, void* stream) = 0;
  virtual Status ScatterRows(const void* rows, std::span<const uint32_t> tokens,
                             const DestSpec& dest, uint32_t layer, KvKind kind, void* stream) = 0;
  // Rows of tokens [0, n) of (layer, kind) copied to host memory `out` ([n][channels]). Reads on
  // the legacy default stream (CUDA), synchronous.
  virtual Status GatherRows(const DestSpec& src, uint32_t layer, KvKind kind, uint32_t n,
                            std::byte* out) = 0;
};

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_BACKEND_H_
