#include "libkdn/model_desc.h"

#include <cstring>
#include <iomanip>
#include <sstream>
#include <string>

namespace kdn::libkdn {
namespace {

template <typename T>
Status Differs(const char* field, const T& cache, const T& model) {
  std::ostringstream msg;
  msg << std::setprecision(9) << "model mismatch: " << field << ": cache has " << cache
      << ", model has " << model;
  return Status::ModelMismatch(msg.str());
}

}  // namespace

Result<DType> FromApiDType(int dtype, const char* what) {
  switch (dtype) {
    case KDN_F16:
      return DType::kF16;
    case KDN_BF16:
      return DType::kBF16;
    case KDN_F32:
      return DType::kF32;
    default:
      return Status::InvalidArgument(std::string(what) + ": unknown dtype " +
                                     std::to_string(dtype));
  }
}

kdn_dtype ToApiDType(DType t) {
  switch (t) {
    case DType::kF16:
      return KDN_F16;
    case DType::kBF16:
      return KDN_BF16;
    case DType::kF32:
      return KDN_F32;
  }
  return KDN_F16;
}

Result<ModelIdentity> FromApiModel(const kdn_model_desc* model) {
  if (model == nullptr) return Status::InvalidArgument("model descriptor is NULL");
  if (model->name == nullptr) return Status::InvalidArgument("model.name is NULL");
  ModelIdentity m;
  m.name = model->name;
  m.n_layers = model->n_layers;
  m.n_heads = model->n_heads;
  m.n_kv_heads = model->n_kv_heads;
  m.head_dim = model->head_dim;
  KDN_ASSIGN_OR_RETURN(m.dtype, FromApiDType(RawEnum(model->dtype), "model.dtype"));
  const int style = RawEnum(model->rope_style);
  switch (style) {
    case KDN_ROPE_NONE:
      m.rope_style = RopeStyle::kNone;
      break;
    case KDN_ROPE_NEOX:
      m.rope_style = RopeStyle::kNeox;
      break;
    case KDN_ROPE_GPTJ:
      m.rope_style = RopeStyle::kGptj;
      break;
    default:
      return Status::InvalidArgument("model.rope_style: unknown style " + std::to_string(style));
  }
  m.rotary_dim = model->rotary_dim;
  m.rope_theta = model->rope_theta;
  m.rope_scale = model->rope_scale == 0.0f ? 1.0f : model->rope_scale;
  if (m.n_heads == 0) m.n_heads = m.n_kv_heads;  // informational only
  Status s = m.Validate();
  if (!s.ok()) return Status::InvalidArgument("model descriptor: " + s.message());
  return m;
}

void ToApiModel(const ModelIdentity& m, kdn_model_desc* out) {
  std::memset(out, 0, sizeof *out);
  out->name = m.name.c_str();
  out->n_layers = m.n_layers;
  out->n_heads = m.n_heads;
  out->n_kv_heads = m.n_kv_heads;
  out->head_dim = m.head_dim;
  out->dtype = ToApiDType(m.dtype);
  out->rope_style = static_cast<kdn_rope_style>(m.rope_style);
  out->rotary_dim = m.rotary_dim;
  out->rope_theta = m.rope_theta;
  out->rope_scale = m.rope_scale;
}

Status CompareModel(const ModelIdentity& cache, const ModelIdentity& expected) {
  if (cache.name != expected.name)
    return Differs("name", "'" + cache.name + "'", "'" + expected.name + "'");
  if (cache.n_layers != expected.n_layers)
    return Differs("n_layers", cache.n_layers, expected.n_layers);
  if (cache.n_kv_heads != expected.n_kv_heads) {
    return Differs("n_kv_heads", cache.n_kv_heads, expected.n_kv_heads);
  }
  if (cache.head_dim != expected.head_dim)
    return Differs("head_dim", cache.head_dim, expected.head_dim);
  if (cache.dtype != expected.dtype) {
    return Differs("dtype", DTypeName(cache.dtype), DTypeName(expected.dtype));
  }
  if (cache.rope_style != expected.rope_style) {
    return Differs("rope_style", RopeStyleName(cache.rope_style),
                   RopeStyleName(expected.rope_style));
  }
  if (cache.effective_rotary_dim() != expected.effective_rotary_dim()) {
    return Differs("rotary_dim", cache.effective_rotary_dim(), expected.effective_rotary_dim());
  }
  if (cache.rope_theta != expected.rope_theta)
    return Differs("rope_theta", cache.rope_theta, expected.rope_theta);
  const float cache_scale = cache.rope_scale == 0.0f ? 1.0f : cache.rope_scale;
  if (cache_scale != expected.rope_scale)
    return Differs("rope_scale", cache_scale, expected.rope_scale);
  return Status::OK();
}

}  // namespace kdn::libkdn
