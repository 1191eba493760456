#include "kdn-engine/transformer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kdn-engine/kernels.h"

namespace kdn::engine {

namespace {

// Rows of at least this many values are normalized or rotated on the pool.
constexpr size_t kParallelRowsWork = 1 << 14;

template <typename T>
void KeepRows(std::vector<T>& m, size_t width, std::span<const uint32_t> keep) {
  for (size_t i = 0; i < keep.size(); ++i) {
    if (keep[i] != i) std::memmove(&m[i * width], &m[keep[i] * width], width * sizeof(T));
  }
  m.resize(keep.size() * width);
}

}  // namespace

void Rows::Resize(size_t n, const ModelConfig& c) {
  slot.resize(n);
  position.resize(n);
  x.resize(n * c.dim);
  q.resize(n * c.dim);
  k.resize(n * c.kv_dim());
  v.resize(n * c.kv_dim());
  xb.resize(n * c.dim);
  att.resize(n * c.dim);
  h1.resize(n * c.hidden_dim);
  h3.resize(n * c.hidden_dim);
}

void Rows::Keep(std::span<const uint32_t> keep, const ModelConfig& c) {
  KeepRows(slot, 1, keep);
  KeepRows(position, 1, keep);
  KeepRows(x, c.dim, keep);
  KeepRows(q, c.dim, keep);
  KeepRows(k, c.kv_dim(), keep);
  KeepRows(v, c.kv_dim(), keep);
  KeepRows(xb, c.dim, keep);
  KeepRows(att, c.dim, keep);
  KeepRows(h1, c.hidden_dim, keep);
  KeepRows(h3, c.hidden_dim, keep);
}

Transformer::Transformer(const Model& model, ThreadPool& pool) : model_(model), pool_(pool) {
  const uint32_t hs = config().head_dim();
  for (uint32_t i = 0; i < hs / 2; ++i) {
    inv_freq_.push_back(std::pow(static_cast<double>(config().rope_theta),
                                 -2.0 * static_cast<double>(i) / static_cast<double>(hs)));
  }
}

void Transformer::Embed(std::span<const uint32_t> tokens, uint32_t first_slot,
                        uint32_t first_position, Rows& rows) const {
  const uint32_t dim = config().dim;
  rows.Resize(tokens.size(), config());
  for (size_t i = 0; i < tokens.size(); ++i) {
    rows.slot[i] = first_slot + static_cast<uint32_t>(i);
    rows.position[i] = first_position + static_cast<uint32_t>(i);
    std::memcpy(&rows.x[i * dim], model_.token_embedding() + size_t{tokens[i]} * dim,
                dim * sizeof(float));
  }
}

void Transformer::Rope(float* row, uint32_t n_heads, uint32_t position) const {
  const uint32_t hs = config().head_dim();
  // Angles in double: position * frequency stays accurate at long positions, so a key computed at
  // position p and one re-rotated there from elsewhere agree to float rounding.
  for (uint32_t i = 0; i < hs / 2; ++i) {
    const double angle = static_cast<double>(position) * inv_freq_[i];
    const float c = static_cast<float>(std::cos(angle));
    const float s = static_cast<float>(std::sin(angle));
    for (uint32_t h = 0; h < n_heads; ++h) {
      float* pair = row + size_t{h} * hs + 2 * i;
      const float x0 = pair[0], x1 = pair[1];
      pair[0] = x0 * c - x1 * s;
      pair[1] = x0 * s + x1 * c;
    }
  }
}

void Transformer::ProjectQkv(uint32_t layer, Rows& rows) {
  const ModelConfig& c = config();
  const LayerWeights& w = model_.layer(layer);
  const size_t n = rows.size(), dim = c.dim, kv = c.kv_dim();
  auto norm = [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r)
      RmsNorm(&rows.xb[r * dim], &rows.x[r * dim], w.rms_att, dim, c.norm_eps);
  };
  if (n * dim >= kParallelRowsWork) {
    pool_.ParallelFor(n, norm);
  } else {
    norm(0, n);
  }
  MatMul(pool_, rows.xb.data(), n, dim, w.wq, dim, rows.q.data());
  MatMul(pool_, rows.xb.data(), n, dim, w.wk, kv, rows.k.data());
  MatMul(pool_, rows.xb.data(), n, dim, w.wv, kv, rows.v.data());
  auto rotate = [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r) {
      Rope(&rows.q[r * dim], c.n_heads, rows.position[r]);
      Rope(&rows.k[r * kv], c.n_kv_heads, rows.position[r]);
    }
  };
  if (n * dim >= kParallelRowsWork) {
    pool_.ParallelFor(n, rotate);
  } else {
    rotate(0, n);
  }
}

void Transformer::StoreKv(uint32_t layer, const Rows& rows, PagedKvCache& cache) const {
  const size_t kv = config().kv_dim();
  for (size_t r = 0; r < rows.size(); ++r) {
    std::memcpy(cache.key(layer, rows.slot[r]), &rows.k[r * kv], kv * sizeof(float));
    std::memcpy(cache.value(layer, rows.slot[r]), &rows.v[r * kv], kv * sizeof(float));
  }
}

// Row r, head h attends to cache slots [0, slot[r]]: scores in slot order, a softmax, then the
// values summed in slot order. Nothing depends on which other rows are in the batch. Rows are
// taken in tiles that walk each key block together, so a block is read from memory once per tile
// rather than once per row (attention is bound by memory traffic, not arithmetic).
void Transformer::Attend(uint32_t layer, Rows& rows, const PagedKvCache& cache) {
  constexpr size_t kRowTile = 16;
  const ModelConfig& c = config();
  const uint32_t hs = c.head_dim(), group = c.n_heads / c.n_kv_heads, bs = cache.block_size();
  const size_t dim = c.dim, n = rows.size();
  const float sqrt_hs = std::sqrt(static_cast<float>(hs));
  uint32_t max_slot = 0;
  for (uint32_t s : rows.slot) max_slot = std::max(max_slot, s);
  const size_t stride = size_t{max_slot} + 1;  // of the scores matrix
  const int32_t* table = cache.block_table();
  const float* k_pool = static_cast<const float*>(cache.key_bases()[layer]);
  const float* v_pool = static_cast<const float*>(cache.value_bases()[layer]);
  const size_t block_stride = size_t{bs} * cache.kv_dim(), token_stride = cache.kv_dim();
  const size_t tiles = (n + kRowTile - 1) / kRowTile;

  auto work = [&](size_t i0, size_t i1) {
    std::vector<float> scores(kRowTile * stride);
    for (size_t i = i0; i < i1; ++i) {
      // Tiles in zigzag order (first, last, second, ...): later rows attend to more keys, and
      // ParallelFor hands each thread a contiguous range, which this keeps balanced.
      const size_t k = i / c.n_heads, tile = k % 2 == 0 ? k / 2 : tiles - 1 - k / 2;
      const size_t r0 = tile * kRowTile, r1 = std::min(n, r0 + kRowTile);
      const uint32_t h = static_cast<uint32_t>(i % c.n_heads);
      const size_t head_off = size_t{h / group} * hs;
      uint32_t tile_keys = 0;
      for (size_t r = r0; r < r1; ++r) tile_keys = std::max(tile_keys, rows.slot[r] + 1);
      for (uint32_t j0 = 0; j0 < tile_keys; j0 += bs) {
        const float* kb = k_pool + size_t(table[j0 / bs]) * block_stride + head_off;
        for (size_t r = r0; r < r1; ++r) {
          const uint32_t n_keys = rows.slot[r] + 1;
          if (j0 >= n_keys) continue;
          DotMany(&rows.q[r * dim + size_t{h} * hs], kb, token_stride, std::min(bs, n_keys - j0),
                  hs, &scores[(r - r0) * stride + j0]);
        }
      }
      for (size_t r = r0; r < r1; ++r) {
        float* p = &scores[(r - r0) * stride];
        const uint32_t n_keys = rows.slot[r] + 1;
        float max_score = -std::numeric_limits<float>::infinity();
        for (uint32_t j = 0; j < n_keys; ++j) {
          p[j] /= sqrt_hs;
          max_score = std::max(max_score, p[j]);
        }
        float sum = 0.0f;
        for (uint32_t j = 0; j < n_keys; ++j) {
          p[j] = std::exp(p[j] - max_score);
          sum += p[j];
        }
        for (uint32_t j = 0; j < n_keys; ++j) p[j] /= sum;
        std::fill_n(&rows.att[r * dim + size_t{h} * hs], hs, 0.0f);
      }
      for (uint32_t j0 = 0; j0 < tile_keys; j0 += bs) {
        const float* vb = v_pool + size_t(table[j0 / bs]) * block_stride + head_off;
        for (size_t r = r0; r < r1; ++r) {
          const uint32_t n_keys = rows.slot[r] + 1;
          if (j0 >= n_keys) continue;
          AxpyMany(&rows.att[r * dim + size_t{h} * hs], &scores[(r - r0) * stride + j0], vb,
                   token_stride, std::min(bs, n_keys - j0), hs);
        }
      }
    }
  };
  const size_t items = tiles * c.n_heads;
  if (n * stride * hs * c.n_heads >= kParallelRowsWork) {
    pool_.ParallelFor(items, work);
  } else {
    work(0, items);
  }
}

void Transformer::Finish(uint32_t layer, Rows& rows, const PagedKvCache& cache) {
  const ModelConfig& c = config();
  const LayerWeights& w = model_.layer(layer);
  const size_t n = rows.size(), dim = c.dim, hidden = c.hidden_dim;
  Attend(layer, rows, cache);
  MatMul(pool_, rows.att.data(), n, dim, w.wo, dim, rows.xb.data());
  for (size_t i = 0; i < n * dim; ++i) rows.x[i] += rows.xb[i];
  for (size_t r = 0; r < n; ++r) {
    RmsNorm(&rows.xb[r * dim], &rows.x[r * dim], w.rms_ffn, dim, c.norm_eps);
  }
  MatMul(pool_, rows.xb.data(), n, dim, w.w1, hidden, rows.h1.data());
  MatMul(pool_, rows.xb.data(), n, dim, w.w3, hidden, rows.h3.data());
  for (size_t i = 0; i < n * hidden; ++i) {
    const float a = rows.h1[i];
    rows.h1[i] = a * (1.0f / (1.0f + std::exp(-a))) * rows.h3[i];  // SwiGLU
  }
  MatMul(pool_, rows.h1.data(), n, hidden, w.w2, dim, rows.xb.data());
  for (size_t i = 0; i < n * dim; ++i) rows.x[i] += rows.xb[i];
}

void Transformer::Layer(uint32_t layer, Rows& rows, PagedKvCache& cache) {
  ProjectQkv(layer, rows);
  StoreKv(layer, rows, cache);
  Finish(layer, rows, cache);
}

void Transformer::Logits(Rows& rows, size_t begin, size_t n, float* out) {
  const ModelConfig& c = config();
  const size_t dim = c.dim;
  for (size_t r = begin; r < begin + n; ++r) {
    RmsNorm(&rows.xb[r * dim], &rows.x[r * dim], model_.rms_final(), dim, c.norm_eps);
  }
  MatMul(pool_, &rows.xb[begin * dim], n, dim, model_.classifier(), c.vocab_size, out);
}

}  // namespace kdn::engine
