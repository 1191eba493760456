#include "libkdn/context.h"

#include <string>

#include "libkdn/cpu/cpu_backend.h"
#if KDN_HAVE_CUDA
#include "libkdn/cuda/cuda_backend.h"
#endif

namespace kdn::libkdn {

Result<std::shared_ptr<Context>> Context::Create(int device) {
  if (device < -1)
    return Status::InvalidArgument("device " + std::to_string(device) + " (use -1 for the CPU)");
  std::shared_ptr<Context> ctx(new Context(device));
  ctx->pool_ = std::make_unique<WorkerPool>(DefaultWorkerCount());
  if (device == -1) {
    ctx->staging_ = StagingPool::Create(AlignedHostAllocator(), kStagingKeepBytes);
    ctx->backend_ = NewCpuBackend(ctx->pool_.get(), ctx->staging_.get());
    return ctx;
  }
#if KDN_HAVE_CUDA
  KDN_ASSIGN_OR_RETURN(std::unique_ptr<HostAllocator> pinned, PinnedHostAllocator(device));
  ctx->staging_ = StagingPool::Create(std::move(pinned), kStagingKeepBytes);
  KDN_ASSIGN_OR_RETURN(ctx->backend_,
                       NewCudaBackend(device, ctx->pool_.get(), ctx->staging_.get()));
  return ctx;
#else
  return Status::Unsupported("CUDA device " + std::to_string(device) +
                             " requested, but this libkdn was built without CUDA");
#endif
}

Context::~Context() {
  pool_.reset();  // runs what is queued, joins the workers
  backend_.reset();
}

}  // namespace kdn::libkdn
