// The C API's model descriptor and dtypes, and the checks that keep KV out of the wrong model.
#ifndef KDN_LIBKDN_MODEL_DESC_H_
#define KDN_LIBKDN_MODEL_DESC_H_

#include <cstring>

#include "kdn/format.h"
#include "kdn/kdn.h"
#include "kdn/status.h"

namespace kdn::libkdn {

// The integer a C caller stored in an enum-typed argument or field, read without loading it as
// the enum: a C program may pass any int there, and loading an out-of-range enumerator is
// undefined in C++.
template <typename E>
int RawEnum(const E& e) {
  static_assert(sizeof(E) == sizeof(int), "C enums are int-sized");
  int v;
  std::memcpy(&v, &e, sizeof v);
  return v;
}

Result<DType> FromApiDType(int dtype, const char* what);
kdn_dtype ToApiDType(DType t);

// A validated ModelIdentity (rope_scale 0 read as 1).
Result<ModelIdentity> FromApiModel(const kdn_model_desc* model);
// Fills `out` from `m`; out->name points into `m`.
void ToApiModel(const ModelIdentity& m, kdn_model_desc* out);

// OK when `cache` (the identity a file records) equals `expected`; ModelMismatch naming the first
// differing field otherwise ("n_kv_heads: cache has 8, model has 4").
Status CompareModel(const ModelIdentity& cache, const ModelIdentity& expected);

}  // namespace kdn::libkdn

#endif  // KDN_LIBKDN_MODEL_DESC_H_
