// The CPU backend: KV decoded into host memory by the context's worker threads.
//
// A load runs as two chains of tasks, one for K blocks and one for V blocks. The task for block
// (l, kind) reads and checks the block, undoes its zstd stage, submits one task per token tile
// (each decodes straight into the destination rows), then submits the task for block (l + 1,
// kind): reading layer l + 1 overlaps decoding layer l, and at most a few blocks per chain are in
// memory at once. The last tile of a block finishes it; the last block of a layer finishes the
// layer (what kdn_layer_wait waits for), with the first error of its blocks.
#ifndef KDN_LIBKDN_CPU_CPU_BACKEND_H_
#define KDN_LIBKDN_CPU_CPU_BACKEND_H_

#include <memory>

#include "libkdn/backend.h"
#include "libkdn/staging_pool.h"
#include "libkdn/worker_pool.h"

namespace kdn::libkdn {

std::unique_ptr<Backend> NewCpuBackend(WorkerPool* pool, StagingPool* staging);

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_CPU_CPU_BACKEND_H_
