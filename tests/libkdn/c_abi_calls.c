/* See c_abi_calls.h. Also proves that kdn.h compiles as C. */
#include "c_abi_calls.h"

int kdn_test_dest_contiguous_with_dtype(int dtype) {
  kdn_dest d;
  void* bases[2] = {0, 0};
  return kdn_dest_contiguous(&d, (kdn_dtype)dtype, 2, bases, bases, 4, 64, 1);
}

const char* kdn_test_status_name(int status) {
  return kdn_status_name((kdn_status)status);
}

int kdn_test_load_with_dest_dtype(kdn_cache* cache, const kdn_dest* dest, int dtype) {
  kdn_dest d = *dest;
  d.dtype = (kdn_dtype)dtype;
  return kdn_load(cache, 0, 1, &d, 0, 0);
}

int kdn_test_expect_model_with_style(const kdn_cache* cache, const kdn_model_desc* model,
                                     int style) {
  kdn_model_desc m = *model;
  m.rope_style = (kdn_rope_style)style;
  return kdn_expect_model(cache, &m);
}

int kdn_test_select_deviation_with_kv(kdn_ctx* ctx, const void* fresh, const kdn_dest* cached,
                                      uint32_t layer, int kv, uint32_t n_tokens) {
  uint32_t idx[64];
  uint32_t count = 0;
  if (n_tokens > 64) return -1;
  return kdn_select_deviation(ctx, fresh, cached, layer, (kdn_kv)kv, 0, n_tokens, 0.5f, idx, &count,
                              0, 0);
}
