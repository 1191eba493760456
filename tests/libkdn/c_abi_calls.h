// Calls of the C API with enum arguments out of range, made from C (where an enum holding any int
// is well defined; in C++ merely loading such a value is undefined, which UBSan reports).
#ifndef KDN_TESTS_LIBKDN_C_ABI_CALLS_H_
#define KDN_TESTS_LIBKDN_C_ABI_CALLS_H_

#include "kdn/kdn.h"

#ifdef __cplusplus
extern "C" {
#endif

int kdn_test_dest_contiguous_with_dtype(int dtype);
const char* kdn_test_status_name(int status);
int kdn_test_load_with_dest_dtype(kdn_cache* cache, const kdn_dest* dest, int dtype);
int kdn_test_expect_model_with_style(const kdn_cache* cache, const kdn_model_desc* model,
                                     int style);
int kdn_test_select_deviation_with_kv(kdn_ctx* ctx, const void* fresh, const kdn_dest* cached,
                                      uint32_t layer, int kv, uint32_t n_tokens);

#ifdef __cplusplus
}
#endif

#endif  // KDN_TESTS_LIBKDN_C_ABI_CALLS_H_
