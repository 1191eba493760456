// What every command needs: a model (a checkpoint, or synthetic weights of a given shape), worker
// threads and the transformer over them.
#ifndef KDN_EXAMPLES_KDN_ENGINE_RUNTIME_H_
#define KDN_EXAMPLES_KDN_ENGINE_RUNTIME_H_

#include <memory>
#include <string>

#include "kdn-engine/model.h"
#include "kdn-engine/thread_pool.h"
#include "kdn-engine/transformer.h"

namespace kdn::engine {

struct RuntimeOptions {
  std::string model_path;       // a llama2.c checkpoint ("synthetic:SHAPE" means the shape), or
  std::string synthetic_shape;  // ParseSyntheticShape's syntax
  uint64_t seed = 1;            // synthetic weights
  unsigned threads = 0;         // 0 = all cores
};

struct Runtime {
  std::unique_ptr<Model> model;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<Transformer> transformer;
  bool synthetic = false;
};

Result<std::unique_ptr<Runtime>> MakeRuntime(const RuntimeOptions& options);

}  // namespace kdn::engine

#endif  // KDN_EXAMPLES_KDN_ENGINE_RUNTIME_H_
