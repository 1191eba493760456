// The CUDA backend: KV decoded on a CUDA device into device memory, on the caller's stream.
//
// A load runs on one worker thread that enqueues its layers in order. Per layer: the encoded K
// and V blocks are read into one of two pinned staging buffers and their checksums verified; a
// zstd stage, where the codec has one, is undone on the host (PreparedBlock) into the same
// buffer; one host-to-device copy moves the payloads to a stream-ordered device buffer; one decode
// kernel writes K and V into the destination (and, for kdn_blend_load, a RoPE kernel re-rotates
// the keys); the layer's event is recorded. Reading layer l + 1 into the other staging buffer
// overlaps the copy and decode of layer l; a staging buffer is refilled only after its copy has
// completed.
#ifndef KDN_LIBKDN_CUDA_CUDA_BACKEND_H_
#define KDN_LIBKDN_CUDA_CUDA_BACKEND_H_

#include <memory>

#include "libkdn/backend.h"
#include "libkdn/staging_pool.h"
#include "libkdn/worker_pool.h"
#include "kdn/status.h"

namespace kdn::libkdn {

// Page-locked, portable host memory (cudaHostAlloc).
Result<std::unique_ptr<HostAllocator>> PinnedHostAllocator(int device);

// NotFound when the device does not exist (or no CUDA driver is present).
Result<std::unique_ptr<Backend>> NewCudaBackend(int device, WorkerPool* pool, StagingPool* staging);

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_CUDA_CUDA_BACKEND_H_
