#include "kdn-engine/runtime.h"

namespace kdn::engine {

Result<std::unique_ptr<Runtime>> MakeRuntime(const RuntimeOptions& options) {
  auto rt = std::make_unique<Runtime>();
  if (!options.model_path.empty() && !options.synthetic_shape.empty()) {
    return Status::InvalidArgument("give --model or --synthetic-shape, not both");
  }
  std::string shape = options.synthetic_shape;
  constexpr std::string_view kSyntheticPrefix = "synthetic:";
  if (options.model_path.starts_with(kSyntheticPrefix)) {
    shape = options.model_path.substr(kSyntheticPrefix.size());
  } else if (!options.model_path.empty()) {
    KDN_ASSIGN_OR_RETURN(rt->model, Model::Load(options.model_path));
  }
  if (!rt->model && !shape.empty()) {
    KDN_ASSIGN_OR_RETURN(const ModelConfig config, ParseSyntheticShape(shape));
    KDN_ASSIGN_OR_RETURN(rt->model, Model::Synthetic(config, options.seed));
    rt->synthetic = true;
  }
  if (!rt->model) {
    return Status::InvalidArgument("a model is required: --model PATH or --synthetic-shape SHAPE");
  }
  rt->pool = std::make_unique<ThreadPool>(options.threads);
  rt->transformer = std::make_unique<Transformer>(*rt->model, *rt->pool);
  return rt;
}

}  // namespace kdn::engine
