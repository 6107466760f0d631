// The small maps of the native CBAM: the spatial gate's 2 -> 1 k x k convolution, its BatchNorm and the sigmoids
// on (B, H, W) maps, and the channel MLP on (K * B, C) descriptors, all in the accumulation type A.
#pragma once

#include "map_kernels.h"

#include <cmath>
#include <utility>
#include <vector>

namespace cbamlab {
namespace {

// ---- the spatial gate's small maps: 2 -> 1 k x k convolution (zero padding k / 2, no bias), BatchNorm, sigmoid
//
// Each sample's input planes are copied into a zero-padded buffer whose rows are a whole number of vectors wide
// (plus the padding), so every tap is an unmasked vector load and a row's outputs stay in registers across the
// 2 k^2 taps; lanes past W compute from zeros and are never stored.

template <typename A>
struct Padded {
  int64_t H, W, pad, Wv, R, rows;  // R: padded row width; rows: H + 2 pad
  std::vector<A> buf;              // (planes, rows, R)
  Padded(int64_t planes, int64_t H_, int64_t W_, int64_t pad_) : H(H_), W(W_), pad(pad_) {
    constexpr int64_t L = Vectorized<A>::size();
    Wv = (W + L - 1) / L * L;
    R = Wv + 2 * pad + L;
    rows = H + 2 * pad;
    buf.assign(planes * rows * R, A(0));
  }
  A* row(int64_t plane, int64_t r) { return buf.data() + (plane * rows + r) * R; }
  void fill(int64_t plane, const A* src) {  // src (H, W) into the plane's interior
    for (const auto h : c10::irange(H)) std::copy(src + h * W, src + (h + 1) * W, row(plane, h + pad) + pad);
  }
};

// NV vectors of outputs of row h, starting at column j0, summed over the 2 k^2 taps in registers.
template <typename A, int NV>
inline void conv_row(Padded<A>& in, int64_t cin, const A* w, int64_t co, int64_t k, int64_t h, int64_t j0,
                     A* orow, int64_t n) {
  using V = Vectorized<A>;
  constexpr int64_t L = V::size();
  V acc[NV];
  for (int v = 0; v < NV; ++v) acc[v] = V(A(0));
  for (int64_t ci = 0; ci < cin; ++ci)
    for (int64_t kh = 0; kh < k; ++kh) {
      const A* irow = in.row(ci, h + kh) + j0;
      const A* wr = w + ((co * cin + ci) * k + kh) * k;
      for (int64_t kw = 0; kw < k; ++kw) {
        const V wt(wr[kw]);
        for (int v = 0; v < NV; ++v) acc[v] = at::vec::fmadd(wt, V::loadu(irow + kw + v * L), acc[v]);
      }
    }
  for (int v = 0; v < NV; ++v) acc[v].store(orow + v * L, std::min<int64_t>(L, n - v * L));
}

// out[co] (H, W) = sum_ci conv(in[ci], w[co, ci]) for one sample, w (cout, cin, k, k), in already padded.
template <typename A>
void conv_planes(Padded<A>& in, int64_t cin, const A* w, int64_t cout, int64_t k, A* out) {
  constexpr int64_t L = Vectorized<A>::size(), NV = 4;
  const int64_t H = in.H, W = in.W;
  for (int64_t co = 0; co < cout; ++co)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t j0 = 0; j0 < W; j0 += NV * L) {
        A* orow = out + (co * H + h) * W + j0;
        const int64_t n = std::min<int64_t>(NV * L, W - j0), nv = (n + L - 1) / L;
        switch (nv) {
          case 4: conv_row<A, 4>(in, cin, w, co, k, h, j0, orow, n); break;
          case 3: conv_row<A, 3>(in, cin, w, co, k, h, j0, orow, n); break;
          case 2: conv_row<A, 2>(in, cin, w, co, k, h, j0, orow, n); break;
          default: conv_row<A, 1>(in, cin, w, co, k, h, j0, orow, n); break;
        }
      }
}

// a[b] = conv([in0[b], in1[b]]) for the input planes in0, in1 (B, H, W), w (2, k, k), a (B, H, W).
template <typename A>
void conv_forward(const A* in0, const A* in1, const A* w, int64_t B, int64_t H, int64_t W, int64_t k, A* a) {
  at::parallel_for(0, B, grain(2 * k * k * H * W), [&](int64_t b0, int64_t b1) {
    Padded<A> pad(2, H, W, k / 2);
    for (const auto b : c10::irange(b0, b1)) {
      pad.fill(0, in0 + b * H * W);
      pad.fill(1, in1 + b * H * W);
      conv_planes<A>(pad, 2, w, 1, k, a + b * H * W);
    }
  });
}

// din0, din1 (B, H, W) = the convolution's input gradient for da (B, H, W): da convolved with the flipped
// kernel; dw (2, k, k) = its weight gradient, the correlation of da with the padded input, summed in order.
template <typename A>
void conv_backward(const A* in0, const A* in1, const A* w, const A* da, int64_t B, int64_t H, int64_t W, int64_t k,
                   A* din0, A* din1, A* dw) {
  using V = Vectorized<A>;
  constexpr int64_t L = V::size();
  const int64_t kk = k * k;
  std::vector<A> flipped(2 * kk);  // (cout 2, cin 1, k, k)
  for (const auto c : c10::irange(2))
    for (const auto j : c10::irange(kk)) flipped[c * kk + j] = w[c * kk + (kk - 1 - j)];
  std::vector<A> partial(B * 2 * kk, A(0));
  at::parallel_for(0, B, grain(6 * kk * H * W), [&](int64_t b0, int64_t b1) {
    Padded<A> pin(2, H, W, k / 2), pda(1, H, W, k / 2);
    std::vector<A> din(2 * H * W);
    for (const auto b : c10::irange(b0, b1)) {
      pda.fill(0, da + b * H * W);
      conv_planes<A>(pda, 1, flipped.data(), 2, k, din.data());
      std::copy(din.begin(), din.begin() + H * W, din0 + b * H * W);
      std::copy(din.begin() + H * W, din.end(), din1 + b * H * W);
      pin.fill(0, in0 + b * H * W);
      pin.fill(1, in1 + b * H * W);
      A* pw = partial.data() + b * 2 * kk;
      for (int64_t c = 0; c < 2; ++c)
        for (int64_t kh = 0; kh < k; ++kh)
          for (int64_t kw = 0; kw < k; ++kw) {
            V acc0(A(0)), acc1(A(0));
            for (int64_t h = 0; h < H; ++h) {
              const A* g = pda.row(0, h + pda.pad) + pda.pad;  // zeros past W
              const A* x = pin.row(c, h + kh) + kw;
              int64_t j = 0;
              for (; j + 2 * L <= pda.Wv; j += 2 * L) {
                acc0 = at::vec::fmadd(V::loadu(g + j), V::loadu(x + j), acc0);
                acc1 = at::vec::fmadd(V::loadu(g + j + L), V::loadu(x + j + L), acc1);
              }
              if (j < pda.Wv) acc0 = at::vec::fmadd(V::loadu(g + j), V::loadu(x + j), acc0);
            }
            pw[(c * k + kh) * k + kw] = lane_sum(acc0 + acc1);
          }
    }
  });
  for (const auto j : c10::irange(2 * kk)) {
    A s = 0;
    for (const auto b : c10::irange(B)) s += partial[b * 2 * kk + j];
    dw[j] = s;
  }
}

template <typename A>
using VA = Vectorized<A>;

// out[i] = sigmoid(a[i] * scale + shift) over n values.
template <typename A>
void affine_sigmoid(const A* a, A scale, A shift, int64_t n, A* out) {
  at::parallel_for(0, n, kGrain, [&](int64_t i0, int64_t i1) {
    at::vec::map([=](VA<A> v) { return VA<A>(A(1)) / (VA<A>(A(1)) + (v * VA<A>(scale) + VA<A>(shift)).neg().exp()); },
                 out + i0, a + i0, i1 - i0);
  });
}

// The mean and biased variance of n values, in double (independent partial sums: no add-latency chain).
template <typename A>
void mean_var(const A* a, int64_t n, double& mean, double& var) {
  double s4[4] = {0, 0, 0, 0}, q4[4] = {0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 4 <= n; j += 4)
    for (int u = 0; u < 4; ++u) s4[u] += a[j + u];
  for (; j < n; ++j) s4[0] += a[j];
  mean = (s4[0] + s4[1] + s4[2] + s4[3]) / n;
  for (j = 0; j + 4 <= n; j += 4)
    for (int u = 0; u < 4; ++u) q4[u] += (a[j + u] - mean) * (a[j + u] - mean);
  for (; j < n; ++j) q4[0] += (a[j] - mean) * (a[j] - mean);
  var = (q4[0] + q4[1] + q4[2] + q4[3]) / n;
}

// The spatial gate's BatchNorm + sigmoid backward on n values: da (the convolution output's gradient) from
// dL/dms; returns (sum dy, sum dy xhat), the gradients of beta and gamma. Sums per fixed chunk, added in order.
template <typename A>
std::pair<double, double> bn_sigmoid_backward(const A* dms, const A* ms, const A* a, int64_t n, double mean,
                                              double invstd, double gamma, bool batch_stats, A* da) {
  constexpr int64_t CH = 4096;
  const int64_t chunks = (n + CH - 1) / CH;
  std::vector<double> psdy(chunks), psdyx(chunks);
  at::parallel_for(0, chunks, grain(CH), [&](int64_t c0, int64_t c1) {
    for (const auto c : c10::irange(c0, c1)) {
      double s1 = 0, s2 = 0;
      for (int64_t j = c * CH; j < std::min(n, (c + 1) * CH); ++j) {
        const double dy = double(dms[j]) * ms[j] * (1.0 - ms[j]);  // through the sigmoid
        da[j] = static_cast<A>(dy);
        s1 += dy;
        s2 += dy * (a[j] - mean) * invstd;
      }
      psdy[c] = s1, psdyx[c] = s2;
    }
  });
  double sdy = 0, sdyx = 0;
  for (const auto c : c10::irange(chunks)) sdy += psdy[c], sdyx += psdyx[c];
  const A s = static_cast<A>(gamma * invstd), mdy = static_cast<A>(sdy / n), mdyx = static_cast<A>(sdyx / n);
  const A am = static_cast<A>(mean), ai = static_cast<A>(invstd);
  at::parallel_for(0, n, kGrain, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) da[j] = batch_stats ? s * (da[j] - mdy - (a[j] - am) * ai * mdyx) : s * da[j];
  });
  return {sdy, sdyx};
}

// out (R, N) = a (R, K) b (N, K)^T (+ bias (N)), all contiguous: vectorised dot products (small matrices).
template <typename A>
void gemm_nt(const A* a, const A* b, const A* bias, int64_t R, int64_t N, int64_t K, A* out) {
  using V = VA<A>;
  constexpr int64_t L = V::size();
  for (const auto r : c10::irange(R))
    for (const auto n : c10::irange(N)) {
      const A *x = a + r * K, *y = b + n * K;
      V acc(A(0));
      int64_t k = 0;
      for (; k + L <= K; k += L) acc = at::vec::fmadd(V::loadu(x + k), V::loadu(y + k), acc);
      A s = (bias ? bias[n] : A(0)) + lane_sum(acc);
      for (; k < K; ++k) s += x[k] * y[k];
      out[r * N + n] = s;
    }
}

// out (R, N) = a (R, K) b (K, N) (+ bias (N)), all contiguous, as row updates vectorised along N (small matrices
// whose contraction is short).
template <typename A>
void gemm_nn(const A* a, const A* b, const A* bias, int64_t R, int64_t N, int64_t K, A* out) {
  using V = VA<A>;
  constexpr int64_t L = V::size();
  for (const auto r : c10::irange(R)) {
    A* o = out + r * N;
    if (bias) {
      std::copy(bias, bias + N, o);
    } else {
      std::fill(o, o + N, A(0));
    }
    for (const auto k : c10::irange(K)) {
      const A s = a[r * K + k];
      const A* br = b + k * N;
      int64_t n = 0;
      for (; n + L <= N; n += L) at::vec::fmadd(V(s), V::loadu(br + n), V::loadu(o + n)).store(o + n);
      for (; n < N; ++n) o[n] += s * br[n];
    }
  }
}

// dst (K, R) = src (R, K)^T.
template <typename A>
void transpose(const A* src, int64_t R, int64_t K, A* dst) {
  for (const auto r : c10::irange(R))
    for (const auto k : c10::irange(K)) dst[k * R + r] = src[r * K + k];
}

// out (R, N) = op(a) op(b) (+ bias (N)), where op(a) (R, K) is a stored (R, K), or with ta its transpose stored
// (K, R), and op(b) (K, N) is b stored (K, N), or with tb its transpose stored (N, K). Large products go to ATen's
// matrix product (BLAS takes the transposes as they are; there its fixed cost pays); small ones run as dot
// products or row updates on transposed copies, which are small too.
constexpr int64_t kSmallGemm = 1 << 16;

template <typename A>
void matmul(const A* a, bool ta, const A* b, bool tb, const A* bias, int64_t R, int64_t N, int64_t K, A* out) {
  if (R * N * K > kSmallGemm) {
    const auto opt = at::TensorOptions().dtype(c10::CppTypeToScalarType<A>::value);
    auto at_ = ta ? at::from_blob(const_cast<A*>(a), {K, R}, opt).t() : at::from_blob(const_cast<A*>(a), {R, K}, opt);
    auto bt = tb ? at::from_blob(const_cast<A*>(b), {N, K}, opt).t() : at::from_blob(const_cast<A*>(b), {K, N}, opt);
    auto ot = at::from_blob(out, {R, N}, opt);
    if (bias) {
      at::addmm_out(ot, at::from_blob(const_cast<A*>(bias), {N}, opt), at_, bt);
    } else {
      at::mm_out(ot, at_, bt);
    }
    return;
  }
  constexpr int64_t L = VA<A>::size();
  std::vector<A> abuf, bbuf;
  const A* ar = a;
  if (ta) {
    abuf.resize(R * K);
    transpose(a, K, R, abuf.data());
    ar = abuf.data();
  }
  if (K >= 2 * L) {  // long contractions: dot products along K need b's rows (N, K)
    const A* bn = b;
    if (!tb) {
      bbuf.resize(N * K);
      transpose(b, K, N, bbuf.data());
      bn = bbuf.data();
    }
    gemm_nt<A>(ar, bn, bias, R, N, K, out);
  } else {  // short ones: row updates along N need b as (K, N)
    const A* bk = b;
    if (tb) {
      bbuf.resize(K * N);
      transpose(b, N, K, bbuf.data());
      bk = bbuf.data();
    }
    gemm_nn<A>(ar, bk, bias, R, N, K, out);
  }
}

// sums[n] = sum_r m[r, n] for m (R, N).
template <typename A>
void column_sums(const A* m, int64_t R, int64_t N, A* sums) {
  std::fill(sums, sums + N, A(0));
  for (const auto r : c10::irange(R))
    for (const auto n : c10::irange(N)) sums[n] += m[r * N + n];
}

// The channel MLP's parameters in A, contiguous: w1 (hid, C), b1 (hid), w2 (C, hid), b2 (C).
template <typename A>
struct Mlp {
  const A *w1, *b1, *w2, *b2;
  int64_t hid, C;
};

// mc (B, C) = sigmoid(sum_k MLP(pools[k])) for pools (K, B, C); z (K * B, hid) keeps the hidden pre-activations.
template <typename A>
void channel_map(const Mlp<A>& m, const A* pools, int64_t K, int64_t B, A* z, A* mc) {
  const int64_t R = K * B, C = m.C, hid = m.hid;
  matmul<A>(pools, false, m.w1, true, m.b1, R, hid, C, z);
  std::vector<A> h(R * hid), l(R * C);
  for (const auto j : c10::irange(R * hid)) h[j] = std::max(z[j], A(0));
  matmul<A>(h.data(), false, m.w2, true, m.b2, R, C, hid, l.data());
  for (const auto j : c10::irange(B * C)) {
    A s = 0;
    for (const auto k : c10::irange(K)) s += l[k * B * C + j];
    mc[j] = A(1) / (A(1) + std::exp(-s));
  }
}

// From dL/dmc (B, C): d pools (K, B, C) and the MLP's parameter gradients (dw1, db1, dw2, db2).
template <typename A>
void channel_map_backward(const Mlp<A>& m, const A* pools, const A* z, const A* mc, const A* dmc, int64_t K,
                          int64_t B, A* dpools, A* dw1, A* db1, A* dw2, A* db2) {
  const int64_t R = K * B, C = m.C, hid = m.hid;
  std::vector<A> dl(R * C), h(R * hid), dz(R * hid);
  for (const auto j : c10::irange(B * C)) {
    const A d = dmc[j] * mc[j] * (A(1) - mc[j]);  // through the sigmoid; the same for each pool's MLP output
    for (const auto k : c10::irange(K)) dl[k * B * C + j] = d;
  }
  for (const auto j : c10::irange(R * hid)) h[j] = std::max(z[j], A(0));
  matmul<A>(dl.data(), true, h.data(), false, nullptr, C, hid, R, dw2);  // dl^T h (C, hid)
  column_sums<A>(dl.data(), R, C, db2);
  matmul<A>(dl.data(), false, m.w2, false, nullptr, R, hid, C, dz.data());  // dh = dl w2 (R, hid)
  for (const auto j : c10::irange(R * hid)) dz[j] = z[j] > A(0) ? dz[j] : A(0);
  matmul<A>(dz.data(), true, pools, false, nullptr, hid, C, R, dw1);  // dz^T pools (hid, C)
  column_sums<A>(dz.data(), R, hid, db1);
  matmul<A>(dz.data(), false, m.w1, false, nullptr, R, C, hid, dpools);  // dz w1 (R, C)
}

}  // namespace
}  // namespace cbamlab
