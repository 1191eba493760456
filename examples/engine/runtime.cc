#include "engine/runtime.h"

namespace kdn::engine {

Result<std::unique_ptr<Runtime>> MakeRuntime(const RuntimeOptions& options) {
  auto rt = std::make_unique<Runtime>();
  if (!options.model_path.empty() && !options.synthetic_shape.empty()) {
    return Status::InvalidArgument("give --model or --synthetic-shape, not both");
  }
  if (!options.model_path.empty()) {
    KDN_ASSIGN_OR_RETURN(rt->model, Model::Load(options.model_path));
  } else if (!options.synthetic_shape.empty()) {
    KDN_ASSIGN_OR_RETURN(const ModelConfig config, ParseSyntheticShape(options.synthetic_shape));
    KDN_ASSIGN_OR_RETURN(rt->model, Model::Synthetic(config, options.seed));
    rt->synthetic = true;
  } else {
    return Status::InvalidArgument("a model is required: --model PATH or --synthetic-shape SHAPE");
  }
  rt->pool = std::make_unique<ThreadPool>(options.threads);
  rt->transformer = std::make_unique<Transformer>(*rt->model, *rt->pool);
  return rt;
}

}  // namespace kdn::engine
