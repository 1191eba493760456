/* load_cache FILE LAYER OUT: loads one layer of a `.kv` cache through the engine library into host
 * memory (a CPU context) and writes its keys, decoded to fp16, to OUT ([tokens][kv_heads][head_dim]
 * little-endian binary16: what `kdnctl export --layer LAYER --kv k --dtype fp16 FILE -o OUT`
 * gives).
 *
 * Builds outside the tree against the installed library:
 *   cc load_cache.c $(pkg-config --cflags --libs kdn) -o load_cache
 */
#include <kdn/kdn.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char* what, kdn_status s) {
  fprintf(stderr, "load_cache: %s: %s: %s\n", what, kdn_status_name(s), kdn_last_error());
  return 1;
}

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: load_cache FILE LAYER OUT\n");
    return 2;
  }
  char* end = NULL;
  errno = 0;
  const unsigned long layer = strtoul(argv[2], &end, 10);
  if (errno != 0 || end == argv[2] || *end != '\0') {
    fprintf(stderr, "load_cache: bad layer '%s'\n", argv[2]);
    return 2;
  }

  kdn_ctx* ctx = NULL;
  kdn_status s = kdn_ctx_create(-1, &ctx);
  if (s != KDN_OK) return fail("kdn_ctx_create", s);
  kdn_cache* cache = NULL;
  s = kdn_open(ctx, argv[1], &cache);
  if (s != KDN_OK) {
    kdn_ctx_destroy(ctx);
    return fail(argv[1], s);
  }

  int rc = 1;
  void** k_base = NULL;
  void* keys = NULL;
  kdn_cache_info info;
  s = kdn_info(cache, &info);
  if (s != KDN_OK) {
    rc = fail("kdn_info", s);
    goto done;
  }
  if (layer >= info.model.n_layers) {
    fprintf(stderr, "load_cache: layer %lu: the cache has %u layers\n", layer, info.model.n_layers);
    rc = 2;
    goto done;
  }
  const size_t bytes = (size_t)info.n_tokens * info.model.n_kv_heads * info.model.head_dim * 2;
  keys = malloc(bytes);
  k_base = calloc(info.model.n_layers, sizeof *k_base); /* NULL entries: layers not wanted */
  if (keys == NULL || k_base == NULL) {
    fprintf(stderr, "load_cache: out of memory\n");
    goto done;
  }
  k_base[layer] = keys;
  kdn_dest dest;
  s = kdn_dest_contiguous(&dest, KDN_F16, info.model.n_layers, k_base, NULL, info.model.n_kv_heads,
                          info.model.head_dim, info.n_tokens);
  if (s == KDN_OK) s = kdn_load(cache, (uint32_t)layer, (uint32_t)layer + 1, &dest, 0, NULL);
  if (s == KDN_OK) s = kdn_layer_wait(cache, (uint32_t)layer);
  if (s != KDN_OK) {
    rc = fail("kdn_load", s);
    goto done;
  }

  FILE* out = fopen(argv[3], "wb");
  if (out == NULL) {
    fprintf(stderr, "load_cache: %s: %s\n", argv[3], strerror(errno));
    goto done;
  }
  const int written = fwrite(keys, 1, bytes, out) == bytes;
  if (fclose(out) != 0 || !written) {
    fprintf(stderr, "load_cache: %s: write failed\n", argv[3]);
    goto done;
  }
  rc = 0;

done:
  free(keys);
  free(k_base);
  kdn_close(cache);
  kdn_ctx_destroy(ctx);
  return rc;
}
