/* KDN engine library: load precomputed, compressed KV caches (`.kv` files) into an inference
 * engine's KV memory, on the CPU or a CUDA device, and blend several of them into one context.
 *
 * A C ABI, usable from C, C++, Python (ctypes), Rust. Every function returns a kdn_status; on an
 * error, kdn_last_error() gives a message for the calling thread ("layer 3 V block: checksum
 * mismatch"). No exception, signal or abort crosses this boundary. Handles are opaque.
 *
 * Typical use:
 *   kdn_ctx* ctx;     kdn_ctx_create(0, &ctx);             // CUDA device 0; -1 = CPU
 *   kdn_cache* c;     kdn_open(ctx, "/kdn/llama3-8b/legal/contract.kv", &c);
 *   kdn_expect_model(c, &my_model);                         // never load KV into the wrong model
 *   kdn_dest d;       kdn_dest_paged(&d, ...);                 // where the engine keeps its KV
 *   kdn_load(c, 0, n_layers, &d, stream);                   // enqueued on the engine's stream
 *   for (l...) { kdn_layer_wait(c, l) or wait on kdn_layer_event(c, l); compute layer l; }
 *   kdn_close(c); kdn_ctx_destroy(ctx);
 */
#ifndef KDN_KDN_H_
#define KDN_KDN_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define KDN_EXPORT __attribute__((visibility("default")))
#else
#define KDN_EXPORT
#endif

/* Bumped on any incompatible change of this header; kdn_api_version() returns the library's. */
#define KDN_API_VERSION 1

typedef enum kdn_status {
  KDN_OK = 0,
  KDN_E_INVALID_ARG = 1,    /* a malformed argument or descriptor */
  KDN_E_IO = 2,             /* the OS failed a read or write */
  KDN_E_NOT_FOUND = 3,      /* no such file */
  KDN_E_CORRUPT = 4,        /* a structure or checksum check failed: the message names the block */
  KDN_E_UNSUPPORTED = 5,    /* a file version, codec or layout this build cannot serve */
  KDN_E_MODEL_MISMATCH = 6, /* the cache was computed by another model: the message names the field */
  KDN_E_NO_MEMORY = 7,
  KDN_E_NO_DEVICE = 8,      /* CUDA requested but not built in, or no such device */
  KDN_E_CUDA = 9,           /* a CUDA call failed: the message has the CUDA error */
  KDN_E_NO_SPACE = 10,      /* kdn_save: the disk or store is full */
  KDN_E_INTERNAL = 11
} kdn_status;

KDN_EXPORT int kdn_api_version(void);
KDN_EXPORT const char* kdn_version_string(void);
/* The calling thread's message for its last failed call (empty string when none). */
KDN_EXPORT const char* kdn_last_error(void);
KDN_EXPORT const char* kdn_status_name(kdn_status s); /* "KDN_E_CORRUPT" */

/* The library never writes to the process's stderr. What it has to say beyond a status (e.g. why
 * the fast path of a cache was turned off, at KDN_LOG_DEBUG) goes to a callback the program
 * installs, process-wide; without one it is discarded. The callback may be called from any
 * library thread, concurrently with the program's own calls; calls are serialized, and once
 * kdn_set_log_callback returns the previous callback is no longer called (so its `user` may be
 * freed). It must not call kdn_set_log_callback. `message` is one line without a newline, valid
 * during the call. fn = NULL removes the callback. */
typedef enum kdn_log_level {
  KDN_LOG_ERROR = 0,
  KDN_LOG_WARNING = 1,
  KDN_LOG_INFO = 2,
  KDN_LOG_DEBUG = 3
} kdn_log_level;
typedef void (*kdn_log_fn)(void* user, kdn_log_level level, const char* message);
KDN_EXPORT void kdn_set_log_callback(kdn_log_fn fn, void* user);

typedef enum kdn_dtype { KDN_F16 = 1, KDN_BF16 = 2, KDN_F32 = 3 } kdn_dtype;
typedef enum kdn_rope_style { KDN_ROPE_NONE = 0, KDN_ROPE_NEOX = 1, KDN_ROPE_GPTJ = 2 } kdn_rope_style;
typedef enum kdn_kv { KDN_K = 0, KDN_V = 1 } kdn_kv;

/* What KV depends on. Must match the cache's identity exactly for kdn_expect_model. */
typedef struct kdn_model_desc {
  const char* name;           /* e.g. "llama3-8b" */
  uint32_t n_layers;
  uint32_t n_heads;           /* query heads; not compared (KV does not depend on it) */
  uint32_t n_kv_heads;
  uint32_t head_dim;
  kdn_dtype dtype;            /* dtype in which the model computes KV */
  kdn_rope_style rope_style;
  uint32_t rotary_dim;        /* 0 = head_dim */
  float rope_theta;
  float rope_scale;           /* linear position scaling; 1 = none (0 is read as 1) */
} kdn_model_desc;

typedef struct kdn_ctx kdn_ctx;
typedef struct kdn_cache kdn_cache;

/* device -1: CPU backend (host memory). device >= 0: that CUDA device (KDN_E_NO_DEVICE when the
 * library was built without CUDA or the device does not exist). A context owns a pinned staging
 * pool and worker threads ($KDN_CPU_THREADS, default: the hardware's concurrency); it may be used
 * from several threads. Caches opened through a context keep it alive: kdn_ctx_destroy releases
 * the handle, the context goes when its last cache is closed. */
KDN_EXPORT kdn_status kdn_ctx_create(int device, kdn_ctx** out);
KDN_EXPORT void kdn_ctx_destroy(kdn_ctx* ctx);
KDN_EXPORT int kdn_ctx_device(const kdn_ctx* ctx);

/* Opens a `.kv` file: reads and validates the header. Bytes are always read through the file
 * (on kdnfs the kernel reads a committed file straight from the store's chunk file: FUSE
 * passthrough); no attribute redirects them. Nothing is decoded yet. KDN_E_NOT_FOUND: no such
 * file; KDN_E_CORRUPT: not a `.kv` file, truncated, or a header check failed; KDN_E_UNSUPPORTED:
 * a format version this library does not read. */
KDN_EXPORT kdn_status kdn_open(kdn_ctx* ctx, const char* path, kdn_cache** out);
/* Waits for this cache's pending loads, then frees it. */
KDN_EXPORT void kdn_close(kdn_cache* cache);

typedef struct kdn_cache_info {
  kdn_model_desc model;       /* model.name points into the cache; valid until kdn_close */
  uint8_t fingerprint[16];    /* model fingerprint as stored (little-endian lo, then hi) */
  uint32_t n_tokens;
  uint32_t position_offset;   /* position of token 0 when the KV was computed */
  const uint32_t* tokens;     /* n_tokens ids; valid until kdn_close */
  char codec[32];             /* canonical codec name: "raw", "lossless", "q4", "q4+zstd"... */
  uint64_t file_bytes;
  uint64_t decoded_bytes;     /* all layers, K and V, in the model dtype */
  int fast_path;              /* always 0 (kept for the ABI; the extent fast path is gone) */
} kdn_cache_info;
KDN_EXPORT kdn_status kdn_info(const kdn_cache* cache, kdn_cache_info* out);

/* KDN_OK when the cache was computed by `model`; KDN_E_MODEL_MISMATCH with a message naming the
 * first differing field otherwise (name, layers, kv heads, head dim, dtype, RoPE style/theta/
 * rotary dims/scale). */
KDN_EXPORT kdn_status kdn_expect_model(const kdn_cache* cache, const kdn_model_desc* model);

/* Sliding-window layers (Mistral, Gemma 2's local layers): a file's model identity may give a
 * layer a window w (the model attends there to its last w tokens only). *window is layer's window
 * (0: full attention) and *first_token (may be NULL) the first of the cache's tokens a load of that
 * layer takes: n_tokens - w when w < n_tokens, else 0. The window is part of the identity the
 * file's fingerprint and prefix hashes cover; kdn_model_desc does not carry it, so kdn_save writes
 * no windows and kdn_expect_model compares the other fields. */
KDN_EXPORT kdn_status kdn_layer_window(const kdn_cache* cache, uint32_t layer, uint32_t* window,
                                       uint32_t* first_token);

/* MLA caches (DeepSeek-style latent attention) hold one vector per token and layer: the latent
 * (kv_lora_rank values) then the RoPE-rotated decoupled key (rope_dim values). The cache's model
 * says n_kv_heads 1, head_dim kv_lora_rank + rope_dim, rotary_dim rope_dim; *kv_lora_rank is the
 * latent's width, 0 for a cache of K and V. Loads write the latents through the destination's K
 * tensors (a destination of 1 head of head_dim values; its V tensors must be NULL); blending
 * re-rotates only the trailing rope_dim channels. kdn_expect_model compares the descriptor's
 * fields (which cannot say MLA); kdn_save writes K/V caches only. */
KDN_EXPORT kdn_status kdn_cache_mla(const kdn_cache* cache, uint32_t* kv_lora_rank);

/* Where KV goes: one addressing scheme covers contiguous and paged layouts.
 *
 * Token t of the destination sequence, head h, dim d, of layer l (K or V) lives at
 *   base[l] + (phys_block * block_stride + (t % block_size) * token_stride + h * head_stride + d)
 * elements, where phys_block = block_table ? block_table[t / block_size] : t / block_size, or, when
 * slot_mapping is set, phys_block = slot_mapping[t] / block_size and t % block_size is replaced by
 * slot_mapping[t] % block_size. Head dims are contiguous.
 *   contiguous [tokens][kv_heads][head_dim]: block_size 1, block_stride kv_heads*head_dim,
 *     head_stride head_dim (token_stride unused);
 *   paged NHD [blocks][block_size][kv_heads][head_dim]: token_stride kv_heads*head_dim,
 *     head_stride head_dim, block_stride block_size*kv_heads*head_dim;
 *   paged HND [blocks][kv_heads][block_size][head_dim]: token_stride head_dim,
 *     head_stride block_size*head_dim, block_stride kv_heads*block_size*head_dim.
 * Use the kdn_dest_* helpers below to fill one. The tensors k_base[l] and v_base[l] point to are
 * host memory for a CPU context and device memory of the context's device for a CUDA context,
 * aligned to their element size. The descriptor's own arrays (k_base, v_base, block_table,
 * slot_mapping) are host memory, read during the call that takes the descriptor (the library
 * keeps a copy of what it needs), so they may change once that call returns. Bounds: every
 * destination token a call touches must be < capacity_tokens, and < n_slots (slot_mapping) or
 * map to a block < n_block_table (block_table) with an entry >= 0. */
typedef struct kdn_dest {
  kdn_dtype dtype;            /* what to write: conversion happens during decode */
  uint32_t n_layers;          /* entries in k_base and v_base */
  void* const* k_base;        /* per layer; NULL entries are skipped */
  void* const* v_base;
  uint32_t n_kv_heads;
  uint32_t head_dim;
  uint32_t block_size;
  int64_t block_stride;       /* in elements */
  int64_t token_stride;
  int64_t head_stride;
  const int32_t* block_table; /* logical -> physical block; NULL = identity */
  uint32_t n_block_table;     /* entries in block_table (bounds check) */
  const int64_t* slot_mapping;/* per destination token; NULL = use block_table; entries < 0 skip */
  uint32_t n_slots;           /* entries in slot_mapping */
  uint32_t capacity_tokens;   /* destination tokens addressable (bounds check) */
} kdn_dest;

KDN_EXPORT kdn_status kdn_dest_contiguous(kdn_dest* d, kdn_dtype dtype, uint32_t n_layers,
                                          void* const* k_base, void* const* v_base,
                                          uint32_t n_kv_heads, uint32_t head_dim,
                                          uint32_t capacity_tokens);
/* hnd = 0: NHD; hnd = 1: HND. capacity_tokens is set to n_block_table * block_size, or, without a
 * block table, to UINT32_MAX (set it to the buffer's size in tokens for a bounds check). */
KDN_EXPORT kdn_status kdn_dest_paged(kdn_dest* d, kdn_dtype dtype, uint32_t n_layers,
                                     void* const* k_base, void* const* v_base, uint32_t n_kv_heads,
                                     uint32_t head_dim, uint32_t block_size, int hnd,
                                     const int32_t* block_table, uint32_t n_block_table);

/* Decodes layers [layer_begin, layer_end) of `cache` into `dest`, the cache's token i going to
 * destination token dest_token_offset + i. Keys are written as stored (at the positions they were
 * computed at); kdn_blend_load re-positions them.
 *
 * May return before the data is in place: CUDA work is enqueued on `stream` (a cudaStream_t; NULL
 * = the legacy default stream) by a library thread, layer after layer, while it reads the next
 * layer; CPU work runs on the context's workers. Layer l is complete when kdn_layer_wait(cache, l)
 * returns KDN_OK, or (CUDA) when kdn_layer_event(cache, l) has fired: order GPU work after a layer
 * with cudaStreamWaitEvent(s, kdn_layer_event(cache, l)), not by the stream's order alone (the
 * work may not be enqueued yet when this call returns). Checksums are verified on this path: a bad
 * block makes this call, or kdn_layer_wait for that layer, return KDN_E_CORRUPT naming the layer
 * and block, and nothing of that block is written. Layers fail or succeed on their own.
 * A sliding-window layer (kdn_layer_window) shorter than the cache takes its last `window` tokens
 * only: cache tokens [n_tokens - window, n_tokens) go to destination tokens dest_token_offset +
 * n_tokens - window onward (their own places), and the destination rows of the layer's earlier
 * tokens are left as they were. Its blocks are still read and checksummed whole, and their zstd
 * stage (lossless, quant+zstd) undone whole; only the window's rows are then decoded (tc: the
 * segments that hold them). CPU context only: a CUDA context answers KDN_E_UNSUPPORTED for such
 * a layer. */
KDN_EXPORT kdn_status kdn_load(kdn_cache* cache, uint32_t layer_begin, uint32_t layer_end,
                               const kdn_dest* dest, uint32_t dest_token_offset, void* stream);
/* Tensor parallelism: one file, each rank loads its share of the KV heads straight into its own
 * cache. kdn_load_heads is kdn_load of the cache's KV heads [head_begin, head_end) only: `dest`
 * describes the rank's cache (dest->n_kv_heads == head_end - head_begin), the cache's head h going
 * to the destination's head h - head_begin. kdn_load is kdn_load_heads over all heads. What a
 * slice costs: a file saved with head groups (kdn_save_layout) stores each layer's K and V as one
 * block per group, and a slice reads, checksums and decodes only the blocks of the groups its
 * heads are in (one rank of 8 on a file of 8 groups: 1/8 of the bytes). In a file of one group a
 * block holds all heads of a layer's K or V, token-major: every block is read and checksummed
 * whole; raw, lossless and q8/q4/q2 blocks then decode only the slice's values (quant: when the
 * slice's codes start on a byte, as head-aligned ones do), tc blocks whole rows, keeping the
 * slice. CPU context only: a CUDA context answers KDN_E_UNSUPPORTED for a range that is not all
 * heads. */
KDN_EXPORT kdn_status kdn_load_heads(kdn_cache* cache, uint32_t layer_begin, uint32_t layer_end,
                                     uint32_t head_begin, uint32_t head_end, const kdn_dest* dest,
                                     uint32_t dest_token_offset, void* stream);
/* The KV heads rank tp_rank of tp_size holds, as engines shard them: [r*H/T, (r+1)*H/T) when
 * tp_size <= n_kv_heads (H); with more ranks than heads (GQA), tp_size must be a multiple of H and
 * each head is replicated on tp_size / H ranks: rank r holds the one head r*H/T. */
KDN_EXPORT kdn_status kdn_tp_heads(uint32_t n_kv_heads, uint32_t tp_rank, uint32_t tp_size,
                                   uint32_t* head_begin, uint32_t* head_end);
KDN_EXPORT kdn_status kdn_layer_wait(kdn_cache* cache, uint32_t layer);
/* CUDA: the cudaEvent_t (as void*) recorded after layer l's last write; blocks until it has been
 * recorded. NULL for the CPU backend, when no load of that layer was issued, or when that load
 * failed before its work was enqueued (kdn_layer_wait then returns the error). Owned by the cache,
 * one per layer: a later load of the same layer records the same event again. */
KDN_EXPORT void* kdn_layer_event(kdn_cache* cache, uint32_t layer);
/* Waits for every pending load of this cache; returns the first error among them. */
KDN_EXPORT kdn_status kdn_sync(kdn_cache* cache);

/* A codec by name: "raw", "lossless", "q8", "q4", "q2", with options "+zstd", ":g64". */
typedef struct kdn_save_opts {
  const char* codec;          /* NULL = "raw" */
  uint32_t chunk_tokens;      /* prefix hash granularity; 0 = 256 */
  int fsync;                  /* fsync the file before returning */
} kdn_save_opts;

/* Encodes KV tensors and writes a `.kv` file at `path` (atomically: a temporary file in the same
 * directory, then rename). `src` describes where token i of the sequence lives (dtype must be the
 * model's dtype, every layer's K and V present), tokens are the n_tokens ids, computed at
 * positions position_offset + i. Synchronous. A CUDA context reads the tensors on the legacy
 * default stream: work that writes them on a non-blocking stream must be complete. */
KDN_EXPORT kdn_status kdn_save(kdn_ctx* ctx, const kdn_model_desc* model, const uint32_t* tokens,
                               uint32_t n_tokens, uint32_t position_offset, const kdn_dest* src,
                               const kdn_save_opts* opts, const char* path);

/* Tensor parallelism: rank r's share of one file. `src` holds the model's KV heads [head_begin,
 * head_end) (src->n_kv_heads == head_end - head_begin, e.g. from kdn_tp_heads). The share is
 * written, raw and atomically, as a hidden part file beside `path` (".<name>.kdn-heads.<A>-<B>");
 * the call that finds parts of this save (same model, tokens, position) covering every head
 * encodes the whole file with opts->codec, writes it at `path` as kdn_save does, removes the
 * parts, and sets *wrote_file (may be NULL) to 1. Until then `path` is absent (or still the old
 * file): the file exists, complete and verifiable, only once every head has been saved, and it is
 * the file one kdn_save of all heads writes, byte for byte. Ranks may run concurrently, in
 * separate processes, with no lock: each rank that sees every part writes the same bytes. Every
 * rank passes the same model, tokens, position_offset and opts; where heads are replicated (more
 * ranks than KV heads), one rank of each head's replicas saves it. */
KDN_EXPORT kdn_status kdn_save_heads(kdn_ctx* ctx, const kdn_model_desc* model,
                                     const uint32_t* tokens, uint32_t n_tokens,
                                     uint32_t position_offset, uint32_t head_begin,
                                     uint32_t head_end, const kdn_dest* src,
                                     const kdn_save_opts* opts, const char* path,
                                     int* wrote_file);

/* How kdn_save_ex and kdn_save_heads_ex lay the file out. Versioned by its size: set struct_size
 * to sizeof(kdn_save_layout); a later version appends fields, and the library reads only the
 * fields a caller's struct_size covers (the rest take their defaults). */
typedef struct kdn_save_layout {
  uint32_t struct_size;
  /* Head groups G: each layer's K and V are stored as G blocks of n_kv_heads / G heads each, so
   * that a tensor-parallel rank (kdn_load_heads) reads and decodes only the blocks of its heads.
   * 0 = the default: 8 when n_kv_heads is a multiple of 8, else 1 (docs/kv-format.md, "Head
   * groups", says what grouping costs); 1 = one block per layer's K and V (what kdn_save
   * writes); else a divisor of n_kv_heads (KDN_E_INVALID_ARG otherwise). */
  uint32_t head_groups;
} kdn_save_layout;

/* kdn_save and kdn_save_heads with a layout (NULL: every field's default). kdn_save and
 * kdn_save_heads are these with head_groups 1. */
KDN_EXPORT kdn_status kdn_save_ex(kdn_ctx* ctx, const kdn_model_desc* model, const uint32_t* tokens,
                                  uint32_t n_tokens, uint32_t position_offset, const kdn_dest* src,
                                  const kdn_save_opts* opts, const kdn_save_layout* layout,
                                  const char* path);
KDN_EXPORT kdn_status kdn_save_heads_ex(kdn_ctx* ctx, const kdn_model_desc* model,
                                        const uint32_t* tokens, uint32_t n_tokens,
                                        uint32_t position_offset, uint32_t head_begin,
                                        uint32_t head_end, const kdn_dest* src,
                                        const kdn_save_opts* opts, const kdn_save_layout* layout,
                                        const char* path, int* wrote_file);

/* --- Prefix lookup ---------------------------------------------------------------------------- */

/* Finds, among the `.kv` files of the knowledge set `set_dir` (a directory; its subdirectories are
 * other sets), the one that holds the longest prefix of the prompt `tokens` (n_tokens ids) as
 * computed by `model`: writes its path (set_dir + "/" + its name) to path_out (path_cap bytes,
 * NUL-terminated) and the number of prompt tokens it holds to *n_prefix_out. The file may hold
 * more tokens than that: use its first *n_prefix_out only. Prefixes are matched at multiples of
 * chunk_tokens (the prefix-hash granularity the files were saved with; 0 = 256) and at the whole
 * prompt. KDN_E_NOT_FOUND (path_out "", *n_prefix_out 0) when no file holds one.
 *
 * A file is answered only when it is owned by a user the set trusts (the set directory's owner;
 * on kdnfs also the uids its owner listed in the set's `user.kdn.trust` attribute), was computed
 * by the same model at position 0, and its own token ids equal the prompt's: this call opens
 * every candidate and compares, so a colliding or forged prefix hash selects nothing. On a kdnfs
 * mount the daemon's `<set>/.kdn-prefix/<hash>` lookups are asked, longest prefix first (a few
 * opens); on any other directory every `.kv` header of the set is read (one open per file), and
 * `user.kdn.trust` is ignored there (anyone who may write a directory may set its user.*
 * attributes). Whoever may rename files in the set can still swap the name after this call
 * returns: when others may write the set, compare kdn_info's tokens after kdn_open. */
KDN_EXPORT kdn_status kdn_find_prefix(const char* set_dir, const kdn_model_desc* model,
                                      const uint32_t* tokens, uint32_t n_tokens,
                                      uint32_t chunk_tokens, char* path_out, size_t path_cap,
                                      uint32_t* n_prefix_out);

/* The chained prefix hashes of the format's prefix index, for an engine that looks a prefix up
 * itself (one stat of <set>/.kdn-prefix/<hash> on kdnfs; kdn_find_prefix does that and then checks
 * the file's token ids, which a hash alone never proves). Hash i covers the first
 * min((i + 1) * chunk_tokens, n_tokens) tokens (chunk_tokens 0 = 256): ceil(n_tokens /
 * chunk_tokens) hashes, each written as 32 lowercase hex digits and a NUL at hex_out + 33 * i.
 * *n_out is the count; KDN_E_INVALID_ARG, nothing written, when it is over `cap`. */
#define KDN_PREFIX_HASH_HEX_BYTES 33
KDN_EXPORT kdn_status kdn_prefix_hashes(const kdn_model_desc* model, const uint32_t* tokens,
                                        uint32_t n_tokens, uint32_t chunk_tokens, char* hex_out,
                                        uint32_t cap, uint32_t* n_out);
/* The open file's own prefix hashes (its header's, same form and rule as above) and the
 * chunk_tokens it was saved with (chunk_tokens_out may be NULL). */
KDN_EXPORT kdn_status kdn_cache_prefix_hashes(const kdn_cache* cache, char* hex_out, uint32_t cap,
                                              uint32_t* n_out, uint32_t* chunk_tokens_out);

/* --- Blending (CacheBlend-style reuse of non-prefix chunks) --------------------------------- */

/* Re-rotates keys of layers [layer_begin, layer_end), destination tokens [token_begin,
 * token_begin + n_tokens), in place, from position p to p + delta, per the model's RoPE. The
 * rotation's cosines and sines are computed in double precision on the host and applied in
 * binary32 without fused multiply-adds, so both backends give the same bits. CPU: done when it
 * returns; CUDA: enqueued on `stream`. Loads of these layers must be complete first. */
KDN_EXPORT kdn_status kdn_rope_shift(kdn_ctx* ctx, const kdn_model_desc* model,
                                     const kdn_dest* keys, uint32_t layer_begin, uint32_t layer_end,
                                     uint32_t token_begin, uint32_t n_tokens, int64_t delta,
                                     void* stream);

/* Places n caches into one destination: cache i's tokens go to destination tokens starting at
 * dest_token_offsets[i], its keys (MLA: the latents' rope channels) re-rotated from their stored positions to position_base +
 * dest_token_offset[i] + j. Equivalent to kdn_load + kdn_rope_shift per cache, fused. Every cache
 * must match `model` (KDN_E_MODEL_MISMATCH otherwise, nothing started) and belong to one context;
 * the caches' token ranges should not overlap. Completion is per cache: kdn_layer_wait,
 * kdn_layer_event or kdn_sync on each of them. */
/* kdn_rope_shift of MLA latents: model->head_dim = kv_lora_rank + model->rotary_dim and
 * n_kv_heads 1; rotates only channels [kv_lora_rank, head_dim) of each latent. CPU context only
 * (a CUDA context answers KDN_E_UNSUPPORTED). */
KDN_EXPORT kdn_status kdn_rope_shift_mla(kdn_ctx* ctx, const kdn_model_desc* model,
                                         uint32_t kv_lora_rank, const kdn_dest* latents,
                                         uint32_t layer_begin, uint32_t layer_end,
                                         uint32_t token_begin, uint32_t n_tokens, int64_t delta,
                                         void* stream);

KDN_EXPORT kdn_status kdn_blend_load(kdn_cache* const* caches, uint32_t n_caches,
                                     const uint32_t* dest_token_offsets, uint32_t position_base,
                                     const kdn_model_desc* model, uint32_t layer_begin,
                                     uint32_t layer_end, const kdn_dest* dest, void* stream);
/* kdn_blend_load of the KV heads [head_begin, head_end) only (a tensor-parallel rank's share):
 * dest->n_kv_heads == head_end - head_begin, as for kdn_load_heads. */
KDN_EXPORT kdn_status kdn_blend_load_heads(kdn_cache* const* caches, uint32_t n_caches,
                                           const uint32_t* dest_token_offsets,
                                           uint32_t position_base, const kdn_model_desc* model,
                                           uint32_t layer_begin, uint32_t layer_end,
                                           uint32_t head_begin, uint32_t head_end,
                                           const kdn_dest* dest, void* stream);

/* Per-token squared deviation between `fresh` (recomputed rows, contiguous [n_tokens][kv_heads *
 * head_dim] of dest->dtype) and the cached rows of destination tokens [token_begin, token_begin +
 * n_tokens) of layer `layer`, K or V, in `cached`. Writes the indices (relative to token_begin) of
 * the ceil(ratio * n_tokens) most deviating tokens, largest first, to out_indices (capacity
 * n_tokens), their count to *out_count, and, when out_deviation is not NULL, every token's
 * deviation. `fresh` is memory of the context's backend (device memory for CUDA); the outputs are
 * host memory. Ties go to the lower index; a NaN deviation counts as the largest; every token must
 * have a cached row (no skipped slot). ceil(ratio * n_tokens) is taken as the nearest integer when
 * it is within float precision of one (0.15f * 100 selects 15). Synchronous: results are on the
 * host when it returns. */
KDN_EXPORT kdn_status kdn_select_deviation(kdn_ctx* ctx, const void* fresh, const kdn_dest* cached,
                                           uint32_t layer, kdn_kv kv, uint32_t token_begin,
                                           uint32_t n_tokens, float ratio, uint32_t* out_indices,
                                           uint32_t* out_count, float* out_deviation, void* stream);

/* Writes n_rows rows (contiguous [n_rows][kv_heads * head_dim] of dest->dtype, memory of the
 * context's backend) to destination tokens token_indices[i] (host array, distinct indices) of
 * layer `layer`, K or V. Enqueued on `stream` for CUDA. */
KDN_EXPORT kdn_status kdn_scatter_rows(kdn_ctx* ctx, const void* rows, const uint32_t* token_indices,
                                       uint32_t n_rows, const kdn_dest* dest, uint32_t layer,
                                       kdn_kv kv, void* stream);

#ifdef __cplusplus
}
#endif

#endif /* KDN_KDN_H_ */
