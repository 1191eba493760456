// A reference llama2.c forward pass, written as plainly as possible (one token at a time,
// contiguous KV, double accumulators), to check the engine's optimized one against.
#ifndef KDN_TESTS_E2E_REFERENCE_LLAMA_H_
#define KDN_TESTS_E2E_REFERENCE_LLAMA_H_

#include <cmath>
#include <cstring>
#include <vector>

#include "kdn-engine/model.h"

namespace kdn::engine::reference {

class ReferenceLlama {
 public:
  explicit ReferenceLlama(const Model& m) : m_(m), c_(m.config()) {
    k_.assign(size_t{c_.n_layers} * c_.seq_len * c_.kv_dim(), 0.0f);
    v_.assign(k_.size(), 0.0f);
  }

  // Logits after feeding `token` at position `pos` (positions must be fed in order from 0).
  std::vector<float> Step(uint32_t token, uint32_t pos) {
    const size_t dim = c_.dim, kv = c_.kv_dim(), hs = c_.head_dim(), hidden = c_.hidden_dim;
    std::vector<float> x(m_.token_embedding() + token * dim,
                         m_.token_embedding() + (token + 1) * dim);
    std::vector<float> xb(dim), q(dim), att(dim), h1(hidden), h3(hidden), tmp(dim);
    for (uint32_t l = 0; l < c_.n_layers; ++l) {
      const LayerWeights& w = m_.layer(l);
      Norm(xb.data(), x.data(), w.rms_att);
      float* k = &k_[(size_t{l} * c_.seq_len + pos) * kv];
      float* v = &v_[(size_t{l} * c_.seq_len + pos) * kv];
      MatVec(q.data(), xb.data(), w.wq, dim, dim);
      MatVec(k, xb.data(), w.wk, dim, kv);
      MatVec(v, xb.data(), w.wv, dim, kv);
      for (size_t i = 0; i < dim; i += 2) {
        const size_t pair = (i % hs) / 2;
        const double angle = pos * std::pow(double{c_.rope_theta}, -2.0 * pair / hs);
        Rotate(&q[i], angle);
        if (i < kv) Rotate(&k[i], angle);
      }
      const size_t group = c_.n_heads / c_.n_kv_heads;
      for (size_t h = 0; h < c_.n_heads; ++h) {
        std::vector<double> score(pos + 1);
        double max = -1e300;
        for (uint32_t t = 0; t <= pos; ++t) {
          const float* kt = &k_[(size_t{l} * c_.seq_len + t) * kv + (h / group) * hs];
          double s = 0;
          for (size_t i = 0; i < hs; ++i) s += double{q[h * hs + i]} * kt[i];
          score[t] = s / std::sqrt(double(hs));
          max = std::max(max, score[t]);
        }
        double sum = 0;
        for (double& s : score) sum += (s = std::exp(s - max));
        for (size_t i = 0; i < hs; ++i) {
          double o = 0;
          for (uint32_t t = 0; t <= pos; ++t) {
            o += score[t] / sum * v_[(size_t{l} * c_.seq_len + t) * kv + (h / group) * hs + i];
          }
          att[h * hs + i] = float(o);
        }
      }
      MatVec(tmp.data(), att.data(), w.wo, dim, dim);
      for (size_t i = 0; i < dim; ++i) x[i] += tmp[i];
      Norm(xb.data(), x.data(), w.rms_ffn);
      MatVec(h1.data(), xb.data(), w.w1, dim, hidden);
      MatVec(h3.data(), xb.data(), w.w3, dim, hidden);
      for (size_t i = 0; i < hidden; ++i)
        h1[i] = float(h1[i] / (1 + std::exp(-double{h1[i]})) * h3[i]);
      MatVec(tmp.data(), h1.data(), w.w2, hidden, dim);
      for (size_t i = 0; i < dim; ++i) x[i] += tmp[i];
    }
    Norm(xb.data(), x.data(), m_.rms_final());
    std::vector<float> logits(c_.vocab_size);
    MatVec(logits.data(), xb.data(), m_.classifier(), dim, c_.vocab_size);
    return logits;
  }

 private:
  void Norm(float* out, const float* x, const float* w) const {
    double ss = 0;
    for (size_t i = 0; i < c_.dim; ++i) ss += double{x[i]} * x[i];
    const double scale = 1.0 / std::sqrt(ss / c_.dim + c_.norm_eps);
    for (size_t i = 0; i < c_.dim; ++i) out[i] = float(w[i] * (x[i] * scale));
  }
  static void MatVec(float* out, const float* x, const float* w, size_t in, size_t n_out) {
    for (size_t o = 0; o < n_out; ++o) {
      double s = 0;
      for (size_t i = 0; i < in; ++i) s += double{w[o * in + i]} * x[i];
      out[o] = float(s);
    }
  }
  static void Rotate(float* pair, double angle) {
    const double c = std::cos(angle), s = std::sin(angle), a = pair[0], b = pair[1];
    pair[0] = float(a * c - b * s);
    pair[1] = float(a * s + b * c);
  }

  const Model& m_;
  const ModelConfig& c_;
  std::vector<float> k_, v_;
};

}  // namespace kdn::engine::reference

#endif  // KDN_TESTS_E2E_REFERENCE_LLAMA_H_
