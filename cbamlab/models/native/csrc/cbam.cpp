// The whole CBAM (Woo et al., ECCV 2018) as one CPU operator per direction: cbamlab::cbam_forward and
// cbamlab::cbam_backward. The math is cbamlab/models/attention.py's (the readable reference, which the tests hold
// this equal to); only the order of the work differs.
//
// A feature map x (B, C, H, W), P = H * W, is read as (B, O, I) with I the contiguous axis: O = C, I = P for NCHW,
// O = P, I = C for channels_last. Every full-size pass is one of three kernels over that view, vectorised along I
// (at::vec::Vectorized) and parallel over batch x rows (at::parallel_for):
//   reduce_inner  per (b, o): sum, max and first arg-max over i of x * v[i]
//   reduce_outer  per (b, i): sum, max and first arg-max over o of x * v[o]
//   fused_map     y = d * o1[o] * i1[i] + o2[o] * i2[i] + o3[o] + i3[i], written and/or contracted with x
// The pools over H, W and over C are each one of the first two depending on the layout. The small parts (the
// channel MLP on (B, C), the 2 -> 1 k x k convolution and BatchNorm on (B, P) maps, the sigmoids) run in the
// accumulation type (float for bfloat16 and float, double for double). Max-pool ties send the whole gradient
// to the first maximum (lowest channel; first position in row-major order), as torch.max(dim) does.
// Reductions over the batch (weight gradients, BatchNorm statistics) are summed in a fixed order: deterministic.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/util/irange.h>
#include <torch/library.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

namespace cbamlab {
namespace {

using at::Tensor;
using at::vec::Vectorized;

// A build with -DCBAMLAB_PROFILE prints the time between consecutive TICKs (for benchmarks/, never shipped on).
#ifdef CBAMLAB_PROFILE
inline void tick(const char* label) {
  static auto last = std::chrono::steady_clock::now();
  const auto now = std::chrono::steady_clock::now();
  std::fprintf(stderr, "%-22s %8.3f ms\n", label, std::chrono::duration<double, std::milli>(now - last).count());
  last = now;
}
#define TICK(label) tick(label)
#else
#define TICK(label)
#endif

enum class Arrangement { channel_only, channel_first, spatial_first, parallel };

Arrangement parse_arrangement(const std::string& name) {
  if (name == "channel_only") return Arrangement::channel_only;
  if (name == "channel_first") return Arrangement::channel_first;
  if (name == "spatial_first") return Arrangement::spatial_first;
  if (name == "parallel") return Arrangement::parallel;
  TORCH_CHECK(false, "cbamlab::cbam: unknown arrangement '", name,
              "'; known: channel_only, channel_first, spatial_first, parallel");
}

// Vector loads and stores in the accumulation type A from memory of type T.
template <typename T>
struct IO {
  using A = T;
  using V = Vectorized<T>;
  static V load(const T* p) { return V::loadu(p); }
  static void store(T* p, const V& v) { v.store(p); }
};

template <>
struct IO<c10::BFloat16> {
  using A = float;
  using V = Vectorized<float>;
  static V load(const c10::BFloat16* p) {
    V v;
    at::vec::load_fp32_from_bf16(p, v);
    return v;
  }
  static void store(c10::BFloat16* p, const V& v) {
    at::vec::convert_float_bfloat16(v, v).store(p, V::size());
  }
};

template <typename T>
using acc_t = typename IO<T>::A;

// (B, O, I) geometry of a map; `cl`: channels_last (O = P, I = C).
struct Geo {
  int64_t B, C, P, O, I;
  bool cl;
};

Geo geometry(const Tensor& x) {
  Geo g;
  g.B = x.size(0);
  g.C = x.size(1);
  g.P = x.size(2) * x.size(3);
  g.cl = !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  g.O = g.cl ? g.P : g.C;
  g.I = g.cl ? g.C : g.P;
  return g;
}

at::MemoryFormat layout_of(const Geo& g) {
  return g.cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

// Rows per parallel task: enough elements that a task outweighs its scheduling.
int64_t row_grain(int64_t row_len) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(row_len, 1)); }

// First maximum of lane maxima `m` with their indices `ix` (ties: lowest index).
template <typename A>
void lane_argmax(const A* m, const A* ix, int64_t n, A& best, A& best_ix) {
  for (const auto j : c10::irange(n)) {
    if (m[j] > best || (m[j] == best && ix[j] < best_ix)) {
      best = m[j];
      best_ix = ix[j];
    }
  }
}

// Per row (b, o): sum_i x * v[b, i], and (MAX) max_i with its first arg-max. v may be null (ones).
template <typename T, bool MAX>
void reduce_inner(const T* x, const acc_t<T>* v, const Geo& g, acc_t<T>* sum, acc_t<T>* mx, int64_t* idx) {
  using A = acc_t<T>;
  using V = typename IO<T>::V;
  constexpr int64_t L = V::size();
  const int64_t O = g.O, I = g.I;
  at::parallel_for(0, g.B * O, row_grain(I), [&](int64_t r0, int64_t r1) {
    for (const auto r : c10::irange(r0, r1)) {
      const T* row = x + r * I;
      const A* vr = v ? v + (r / O) * I : nullptr;
      V vs(A(0)), vm(-std::numeric_limits<A>::infinity()), vi(A(0)), cur = V::arange(A(0), A(1));
      int64_t i = 0;
      for (; i + L <= I; i += L) {
        V e = IO<T>::load(row + i);
        if (vr) e = e * V::loadu(vr + i);
        vs = vs + e;
        if constexpr (MAX) {
          V gt = e > vm;
          vm = V::blendv(vm, e, gt);
          vi = V::blendv(vi, cur, gt);
          cur = cur + V(A(L));
        }
      }
      __at_align__ A lanes[L];
      vs.store(lanes);
      A s = 0;
      for (const auto j : c10::irange(L)) s += lanes[j];
      A best = -std::numeric_limits<A>::infinity(), best_ix = 0;
      if constexpr (MAX) {
        __at_align__ A lane_ix[L];
        vm.store(lanes);
        vi.store(lane_ix);
        if (I >= L) lane_argmax(lanes, lane_ix, L, best, best_ix);
      }
      for (; i < I; ++i) {  // the tail comes after every vector position: strict > keeps the first maximum
        A e = static_cast<A>(row[i]) * (vr ? vr[i] : A(1));
        s += e;
        if (MAX && (e > best || i == 0)) {
          best = e;
          best_ix = A(i);
        }
      }
      sum[r] = s;
      if constexpr (MAX) {
        mx[r] = best;
        idx[r] = static_cast<int64_t>(best_ix);
      }
    }
  });
}

// Per column (b, i): sum_o x * v[b, o], and (MAX) max_o with its first arg-max. v may be null (ones).
// A task owns NV vectors of columns and keeps their sums, maxima and arg-maxima in registers over all rows.
template <typename T, bool MAX>
void reduce_outer(const T* x, const acc_t<T>* v, const Geo& g, acc_t<T>* sum, acc_t<T>* mx, int64_t* idx) {
  using A = acc_t<T>;
  using V = typename IO<T>::V;
  constexpr int64_t L = V::size(), NV = 4;
  const int64_t O = g.O, I = g.I, full = I / L, groups = (full + NV - 1) / NV;
  const int64_t tasks = groups + (I % L ? 1 : 0);  // the last task: the columns past the last whole vector
  at::parallel_for(0, g.B * tasks, 1, [&](int64_t t0, int64_t t1) {
    for (const auto t : c10::irange(t0, t1)) {
      const int64_t b = t / tasks, task = t % tasks;
      const A* vb = v ? v + b * O : nullptr;
      if (task < groups) {
        const int64_t i0 = task * NV * L, nv = std::min<int64_t>(NV, full - task * NV);
        V s[NV], m[NV], ix[NV];
        for (int64_t k = 0; k < NV; ++k) {
          s[k] = V(A(0));
          m[k] = V(-std::numeric_limits<A>::infinity());
          ix[k] = V(A(0));
        }
        for (const auto o : c10::irange(O)) {
          const T* row = x + (b * O + o) * I + i0;
          const V w(vb ? vb[o] : A(1)), vo(static_cast<A>(o));
          for (int64_t k = 0; k < nv; ++k) {
            const V e = IO<T>::load(row + k * L) * w;
            s[k] = s[k] + e;
            if constexpr (MAX) {
              const V gt = e > m[k];
              m[k] = V::blendv(m[k], e, gt);
              ix[k] = V::blendv(ix[k], vo, gt);
            }
          }
        }
        for (int64_t k = 0; k < nv; ++k) {
          __at_align__ A ls[L], lm[L], li[L];
          s[k].store(ls);
          m[k].store(lm);
          ix[k].store(li);
          for (const auto j : c10::irange(L)) {
            const int64_t i = b * I + i0 + k * L + j;
            sum[i] = ls[j];
            if constexpr (MAX) {
              mx[i] = lm[j];
              idx[i] = static_cast<int64_t>(li[j]);
            }
          }
        }
      } else {
        for (int64_t i = full * L; i < I; ++i) {
          A s = 0, m = -std::numeric_limits<A>::infinity();
          int64_t ix = 0;
          for (const auto o : c10::irange(O)) {
            const A e = static_cast<A>(x[(b * O + o) * I + i]) * (vb ? vb[o] : A(1));
            s += e;
            if (MAX && (e > m || o == 0)) {
              m = e;
              ix = o;
            }
          }
          sum[b * I + i] = s;
          if constexpr (MAX) {
            mx[b * I + i] = m;
            idx[b * I + i] = ix;
          }
        }
      }
    }
  });
}

// The vectors of fused_map, each (B, O) or (B, I) in the accumulation type, or null.
template <typename A>
struct MapTerms {
  const A *o1 = nullptr, *i1 = nullptr;  // multiply d (null: 1)
  const A *o2 = nullptr, *i2 = nullptr;  // their product is added (both or neither)
  const A *o3 = nullptr, *i3 = nullptr;  // added (null: 0)
};

// y = d * o1 * i1 + o2 * i2 + o3 + i3 per row (b, o); written to `y` if given; (RO) ro[b, o] = sum_i x * y.
template <typename T, bool ADD, bool WRITE, bool RO>
void fused_map_impl(const T* d, const T* x, const MapTerms<acc_t<T>>& tm, const Geo& g, T* y, acc_t<T>* ro) {
  using A = acc_t<T>;
  using V = typename IO<T>::V;
  constexpr int64_t L = V::size();
  const int64_t O = g.O, I = g.I;
  at::parallel_for(0, g.B * O, row_grain(I), [&](int64_t r0, int64_t r1) {
    for (const auto r : c10::irange(r0, r1)) {
      const int64_t b = r / O, off = r * I;
      const A* i1 = tm.i1 ? tm.i1 + b * I : nullptr;
      const A* i2 = tm.i2 ? tm.i2 + b * I : nullptr;
      const A* i3 = tm.i3 ? tm.i3 + b * I : nullptr;
      const A o1 = tm.o1 ? tm.o1[r] : A(1), o2 = tm.o2 ? tm.o2[r] : A(0), o3 = tm.o3 ? tm.o3[r] : A(0);
      const V vo1(o1), vo2(o2), vo3(o3);
      V vro(A(0));
      A sro = 0;
      int64_t i = 0;
      for (; i + L <= I; i += L) {
        V e = IO<T>::load(d + off + i) * vo1;
        if (i1) e = e * V::loadu(i1 + i);
        if constexpr (ADD) {
          V add = vo3;
          if (i2) add = at::vec::fmadd(vo2, V::loadu(i2 + i), add);
          if (i3) add = add + V::loadu(i3 + i);
          e = e + add;
        }
        if constexpr (WRITE) IO<T>::store(y + off + i, e);
        if constexpr (RO) vro = at::vec::fmadd(IO<T>::load(x + off + i), e, vro);
      }
      for (; i < I; ++i) {
        A e = static_cast<A>(d[off + i]) * o1 * (i1 ? i1[i] : A(1));
        if constexpr (ADD) e += (i2 ? o2 * i2[i] : A(0)) + o3 + (i3 ? i3[i] : A(0));
        if constexpr (WRITE) y[off + i] = static_cast<T>(e);
        if constexpr (RO) sro += static_cast<A>(x[off + i]) * e;
      }
      if constexpr (RO) {
        __at_align__ A lanes[L];
        vro.store(lanes);
        for (const auto j : c10::irange(L)) sro += lanes[j];
        ro[r] = sro;
      }
    }
  });
}

// ri[b, i] = sum_o x * y with y as in fused_map (nothing written): a task owns NV vectors of columns and keeps
// their sums in registers over all rows, as reduce_outer does.
template <typename T, bool ADD>
void contract_rows(const T* d, const T* x, const MapTerms<acc_t<T>>& tm, const Geo& g, acc_t<T>* ri) {
  using A = acc_t<T>;
  using V = typename IO<T>::V;
  constexpr int64_t L = V::size(), NV = 4;
  const int64_t O = g.O, I = g.I, full = I / L, groups = (full + NV - 1) / NV;
  const int64_t tasks = groups + (I % L ? 1 : 0);
  at::parallel_for(0, g.B * tasks, 1, [&](int64_t t0, int64_t t1) {
    for (const auto t : c10::irange(t0, t1)) {
      const int64_t b = t / tasks, task = t % tasks;
      const A* i1 = tm.i1 ? tm.i1 + b * I : nullptr;
      const A* i2 = tm.i2 ? tm.i2 + b * I : nullptr;
      const A* i3 = tm.i3 ? tm.i3 + b * I : nullptr;
      auto row_scalars = [&](int64_t o, A& o1, A& o2, A& o3) {
        o1 = tm.o1 ? tm.o1[b * O + o] : A(1);
        o2 = tm.o2 ? tm.o2[b * O + o] : A(0);
        o3 = tm.o3 ? tm.o3[b * O + o] : A(0);
      };
      if (task < groups) {
        const int64_t i0 = task * NV * L, nv = std::min<int64_t>(NV, full - task * NV);
        V acc[NV], m1[NV], a2[NV], a3[NV];
        for (int64_t k = 0; k < NV; ++k) {
          acc[k] = V(A(0));
          m1[k] = i1 && k < nv ? V::loadu(i1 + i0 + k * L) : V(A(1));
          a2[k] = i2 && k < nv ? V::loadu(i2 + i0 + k * L) : V(A(0));
          a3[k] = i3 && k < nv ? V::loadu(i3 + i0 + k * L) : V(A(0));
        }
        for (const auto o : c10::irange(O)) {
          A o1, o2, o3;
          row_scalars(o, o1, o2, o3);
          const V vo1(o1), vo2(o2), vo3(o3);
          const int64_t off = (b * O + o) * I + i0;
          for (int64_t k = 0; k < nv; ++k) {
            V e = IO<T>::load(d + off + k * L) * vo1 * m1[k];
            if constexpr (ADD) e = e + at::vec::fmadd(vo2, a2[k], vo3 + a3[k]);
            acc[k] = at::vec::fmadd(IO<T>::load(x + off + k * L), e, acc[k]);
          }
        }
        for (int64_t k = 0; k < nv; ++k) acc[k].store(ri + b * I + i0 + k * L);
      } else {
        for (int64_t i = full * L; i < I; ++i) {
          A s = 0;
          for (const auto o : c10::irange(O)) {
            A o1, o2, o3;
            row_scalars(o, o1, o2, o3);
            const int64_t off = (b * O + o) * I + i;
            A e = static_cast<A>(d[off]) * o1 * (i1 ? i1[i] : A(1));
            if constexpr (ADD) e += o2 * (i2 ? i2[i] : A(0)) + o3 + (i3 ? i3[i] : A(0));
            s += static_cast<A>(x[off]) * e;
          }
          ri[b * I + i] = s;
        }
      }
    }
  });
}

template <typename T>
void fused_map(const T* d, const T* x, const MapTerms<acc_t<T>>& tm, const Geo& g, T* y, acc_t<T>* ro,
               acc_t<T>* ri) {
  TORCH_CHECK(!(ro && ri), "cbamlab::cbam: fused_map contracts over one axis at a time");
  const bool add = tm.o2 || tm.i2 || tm.o3 || tm.i3;
  auto go = [&](auto add_c, auto write_c) {
    constexpr bool ADD = decltype(add_c)::value, WRITE = decltype(write_c)::value;
    if (ro) return fused_map_impl<T, ADD, WRITE, true>(d, x, tm, g, y, ro);
    if (ri) {
      TORCH_CHECK(!WRITE, "cbamlab::cbam: fused_map writes or contracts over rows, not both");
      return contract_rows<T, ADD>(d, x, tm, g, ri);
    }
    return fused_map_impl<T, ADD, WRITE, false>(d, x, tm, g, y, ro);
  };
  using t = std::true_type;
  using f = std::false_type;
  if (add) {
    y ? go(t{}, t{}) : go(t{}, f{});
  } else {
    y ? go(f{}, t{}) : go(f{}, f{});
  }
}

// The terms of fused_map from channel vectors (B, C) and spatial vectors (B, P), placed by the layout.
template <typename A>
struct Terms {
  const A *c1 = nullptr, *s1 = nullptr, *c2 = nullptr, *s2 = nullptr, *c3 = nullptr, *s3 = nullptr;
  MapTerms<A> place(const Geo& g) const {
    MapTerms<A> m;
    if (g.cl) {
      m.o1 = s1, m.i1 = c1, m.o2 = s2, m.i2 = c2, m.o3 = s3, m.i3 = c3;
    } else {
      m.o1 = c1, m.i1 = s1, m.o2 = c2, m.i2 = s2, m.o3 = c3, m.i3 = s3;
    }
    return m;
  }
};

// Pools over H, W of x * s (s (B, P) or null): avg and max (B, C) and the max's flat position (B, C).
template <typename T>
void pool_hw(const T* x, const acc_t<T>* s, const Geo& g, bool want_max, acc_t<T>* avg, acc_t<T>* mx,
             int64_t* idx) {
  using A = acc_t<T>;
  if (g.cl) {
    want_max ? reduce_outer<T, true>(x, s, g, avg, mx, idx) : reduce_outer<T, false>(x, s, g, avg, mx, idx);
  } else {
    want_max ? reduce_inner<T, true>(x, s, g, avg, mx, idx) : reduce_inner<T, false>(x, s, g, avg, mx, idx);
  }
  const A inv = A(1) / static_cast<A>(g.P);
  for (const auto j : c10::irange(g.B * g.C)) avg[j] *= inv;
}

// Pools over C of x * m (m (B, C) or null): max with its channel and mean (B, P).
template <typename T>
void pool_c(const T* x, const acc_t<T>* m, const Geo& g, acc_t<T>* mx, int64_t* idx, acc_t<T>* mean) {
  using A = acc_t<T>;
  if (g.cl) {
    reduce_inner<T, true>(x, m, g, mean, mx, idx);
  } else {
    reduce_outer<T, true>(x, m, g, mean, mx, idx);
  }
  const A inv = A(1) / static_cast<A>(g.C);
  for (const auto j : c10::irange(g.B * g.P)) mean[j] *= inv;
}

// Storage offset of element (b, c, p) of a map of this geometry.
inline int64_t at_(const Geo& g, int64_t b, int64_t c, int64_t p) {
  return g.cl ? (b * g.P + p) * g.C + c : (b * g.C + c) * g.P + p;
}

// y[b, sidx[b, p], p] += val[b, p] * (scale ? scale[b, sidx] : 1): the spatial max pool's gradient.
template <typename T>
void add_at_channel(T* y, const int64_t* sidx, const acc_t<T>* val, const acc_t<T>* scale, const Geo& g) {
  using A = acc_t<T>;
  at::parallel_for(0, g.B, 1, [&](int64_t b0, int64_t b1) {
    for (const auto b : c10::irange(b0, b1))
      for (const auto p : c10::irange(g.P)) {
        const int64_t c = sidx[b * g.P + p], k = at_(g, b, c, p);
        const A v = val[b * g.P + p] * (scale ? scale[b * g.C + c] : A(1));
        y[k] = static_cast<T>(static_cast<A>(y[k]) + v);
      }
  });
}

// y[b, c, hidx[b, c]] += val[b, c] * (scale ? scale[b, hidx] : 1): the channel max pool's gradient.
template <typename T>
void add_at_position(T* y, const int64_t* hidx, const acc_t<T>* val, const acc_t<T>* scale, const Geo& g) {
  using A = acc_t<T>;
  at::parallel_for(0, g.B, 1, [&](int64_t b0, int64_t b1) {
    for (const auto b : c10::irange(b0, b1))
      for (const auto c : c10::irange(g.C)) {
        const int64_t p = hidx[b * g.C + c], k = at_(g, b, c, p);
        const A v = val[b * g.C + c] * (scale ? scale[b * g.P + p] : A(1));
        y[k] = static_cast<T>(static_cast<A>(y[k]) + v);
      }
  });
}

// out_c[b, sidx[b, p]] += x[b, sidx, p] * val[b, p].
template <typename T>
void gather_channel(const T* x, const int64_t* sidx, const acc_t<T>* val, const Geo& g, acc_t<T>* out_c) {
  at::parallel_for(0, g.B, 1, [&](int64_t b0, int64_t b1) {
    for (const auto b : c10::irange(b0, b1))
      for (const auto p : c10::irange(g.P)) {
        const int64_t c = sidx[b * g.P + p];
        out_c[b * g.C + c] += static_cast<acc_t<T>>(x[at_(g, b, c, p)]) * val[b * g.P + p];
      }
  });
}

// out_p[b, hidx[b, c]] += x[b, c, hidx] * val[b, c].
template <typename T>
void gather_position(const T* x, const int64_t* hidx, const acc_t<T>* val, const Geo& g, acc_t<T>* out_p) {
  at::parallel_for(0, g.B, 1, [&](int64_t b0, int64_t b1) {
    for (const auto b : c10::irange(b0, b1))
      for (const auto c : c10::irange(g.C)) {
        const int64_t p = hidx[b * g.C + c];
        out_p[b * g.P + p] += static_cast<acc_t<T>>(x[at_(g, b, c, p)]) * val[b * g.C + c];
      }
  });
}

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

// a[b] = conv(in[b]) for in (B, 2, H, W), w (2, k, k), a (B, H, W).
template <typename A>
void conv_forward(const A* in, const A* w, int64_t B, int64_t H, int64_t W, int64_t k, A* a) {
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    Padded<A> pad(2, H, W, k / 2);
    for (const auto b : c10::irange(b0, b1)) {
      pad.fill(0, in + (b * 2) * H * W);
      pad.fill(1, in + (b * 2 + 1) * H * W);
      conv_planes<A>(pad, 2, w, 1, k, a + b * H * W);
    }
  });
}

// din (B, 2, H, W) = the convolution's input gradient for da (B, H, W): da convolved with the flipped kernel;
// dw (2, k, k) = its weight gradient, the correlation of da with the padded input, summed over samples in order.
template <typename A>
void conv_backward(const A* in, const A* w, const A* da, int64_t B, int64_t H, int64_t W, int64_t k, A* din,
                   A* dw) {
  using V = Vectorized<A>;
  constexpr int64_t L = V::size();
  const int64_t kk = k * k;
  std::vector<A> flipped(2 * kk);  // (cout 2, cin 1, k, k)
  for (const auto c : c10::irange(2))
    for (const auto j : c10::irange(kk)) flipped[c * kk + j] = w[c * kk + (kk - 1 - j)];
  std::vector<A> partial(B * 2 * kk, A(0));
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    Padded<A> pin(2, H, W, k / 2), pda(1, H, W, k / 2);
    for (const auto b : c10::irange(b0, b1)) {
      pda.fill(0, da + b * H * W);
      conv_planes<A>(pda, 1, flipped.data(), 2, k, din + b * 2 * H * W);
      pin.fill(0, in + (b * 2) * H * W);
      pin.fill(1, in + (b * 2 + 1) * H * W);
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
            __at_align__ A lanes[L];
            (acc0 + acc1).store(lanes);
            A s = 0;
            for (int64_t j = 0; j < L; ++j) s += lanes[j];
            pw[(c * k + kh) * k + kw] = s;
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

// ms = sigmoid(a * scale + shift) over n values.
template <typename A>
void affine_sigmoid(const A* a, A scale, A shift, int64_t n, A* ms) {
  at::vec::map([=](VA<A> v) { return VA<A>(A(1)) / (VA<A>(A(1)) + (v * VA<A>(scale) + VA<A>(shift)).neg().exp()); },
               ms, a, n);
}

// ---- the small tensors: channel MLP (ATen on (K*B, C)), spatial gate (above)

struct ChannelMaps {
  Tensor pools;  // (K, B, C) descriptors in pool order (avg, max)
  Tensor mc;     // (B, C)
};

ChannelMaps channel_map(const Tensor& pools, const Tensor& w1, const Tensor& b1, const Tensor& w2,
                        const Tensor& b2) {
  const int64_t K = pools.size(0), B = pools.size(1), C = pools.size(2);
  auto flat = pools.view({K * B, C});
  auto h = at::relu(at::addmm(b1, flat, w1.t()));
  auto logits = at::addmm(b2, h, w2.t()).view({K, B, C}).sum(0);
  return {pools, at::sigmoid(logits)};
}

// d pools (K, B, C) and the MLP's parameter gradients from dL/dmc (B, C).
std::vector<Tensor> channel_map_backward(const Tensor& pools, const Tensor& mc, const Tensor& dmc, const Tensor& w1,
                                         const Tensor& b1, const Tensor& w2) {
  const int64_t K = pools.size(0), B = pools.size(1), C = pools.size(2);
  auto flat = pools.view({K * B, C});
  auto z = at::addmm(b1, flat, w1.t());
  auto h = at::relu(z);
  auto dlogit = dmc * mc * (1 - mc);                       // (B, C)
  auto dl = dlogit.unsqueeze(0).expand({K, B, C}).reshape({K * B, C});
  auto dw2 = at::mm(dl.t(), h);
  auto db2 = dlogit.sum(0) * static_cast<double>(K);
  auto dz = at::mm(dl, w2) * (z > 0);
  auto dw1 = at::mm(dz.t(), flat);
  auto db1 = dz.sum(0);
  auto dpools = at::mm(dz, w1).view({K, B, C});
  return {dpools, dw1, db1, dw2, db2};
}

struct Spatial {
  Tensor sa;     // (B, 3, H, W): the channel max, the channel mean, the conv output a
  Tensor stats;  // (2,) double: the mean and biased variance BatchNorm normalised with
  Tensor ms;     // (B, H, W)
};

// The spatial map from the channel max and mean already in sa[:, 0:2].
template <typename A>
void spatial_map(Spatial& s, const Tensor& conv_w, const Tensor& bn_w, const Tensor& bn_b, const Tensor& rm,
                 const Tensor& rv, bool bn_train, double eps) {
  const int64_t B = s.sa.size(0), H = s.sa.size(2), W = s.sa.size(3), P = H * W, k = conv_w.size(-1);
  auto pooled = s.sa.narrow(1, 0, 2).contiguous();
  auto a = at::empty({B, H, W}, s.sa.options());
  TICK("fwd conv prep");
  conv_forward<A>(pooled.data_ptr<A>(), conv_w.contiguous().data_ptr<A>(), B, H, W, k, a.data_ptr<A>());
  TICK("fwd conv");
  s.sa.select(1, 2).copy_(a);
  double mean, var;
  if (bn_train) {
    const A* ap = a.data_ptr<A>();
    const int64_t n = B * P;
    double s4[4] = {0, 0, 0, 0}, q4[4] = {0, 0, 0, 0};  // independent sums: no add-latency chain
    int64_t j = 0;
    for (; j + 4 <= n; j += 4)
      for (int u = 0; u < 4; ++u) s4[u] += ap[j + u];
    for (; j < n; ++j) s4[0] += ap[j];
    mean = (s4[0] + s4[1] + s4[2] + s4[3]) / n;
    for (j = 0; j + 4 <= n; j += 4)
      for (int u = 0; u < 4; ++u) q4[u] += (ap[j + u] - mean) * (ap[j + u] - mean);
    for (; j < n; ++j) q4[0] += (ap[j] - mean) * (ap[j] - mean);
    const double sq = q4[0] + q4[1] + q4[2] + q4[3];
    var = sq / n;
  } else {
    mean = rm.item<double>();
    var = rv.item<double>();
  }
  s.stats = at::tensor({mean, var}, at::dtype(at::kDouble));
  TICK("fwd bn stats");
  const double invstd = 1.0 / std::sqrt(var + eps), gamma = bn_w.item<double>(), beta = bn_b.item<double>();
  s.ms = at::empty({B, H, W}, s.sa.options());
  affine_sigmoid<A>(a.data_ptr<A>(), static_cast<A>(gamma * invstd), static_cast<A>(beta - mean * gamma * invstd),
                    B * P, s.ms.data_ptr<A>());
  TICK("fwd sigmoid");
}

// (d channel max, d channel mean) (B, P) each, dconv_w, dgamma, dbeta from dL/dms (B, P).
template <typename A>
std::vector<Tensor> spatial_map_backward(const Tensor& sa, const Tensor& stats, const Tensor& ms, const Tensor& dms,
                                         const Tensor& conv_w, const Tensor& bn_w, bool bn_train, double eps) {
  const int64_t B = sa.size(0), H = sa.size(2), W = sa.size(3), P = H * W, n = B * P, k = conv_w.size(-1);
  const double mean = stats[0].item<double>(), var = stats[1].item<double>(), invstd = 1.0 / std::sqrt(var + eps);
  const double gamma = bn_w.item<double>();
  const Tensor a_t = sa.select(1, 2).contiguous();  // the conv output, kept alive while `a` points into it
  const A* a = a_t.data_ptr<A>();
  const A* m = ms.data_ptr<A>();
  const A* g = dms.data_ptr<A>();
  auto da_t = at::empty({B, H, W}, sa.options());
  A* da = da_t.data_ptr<A>();
  double sdy = 0, sdyx = 0;
  for (const auto j : c10::irange(n)) {
    const double dy = double(g[j]) * m[j] * (1.0 - m[j]);
    da[j] = static_cast<A>(dy);
    sdy += dy;
    sdyx += dy * (a[j] - mean) * invstd;
  }
  const double s = gamma * invstd, mdy = sdy / n, mdyx = sdyx / n;
  for (const auto j : c10::irange(n)) {
    const double dy = da[j];
    da[j] = static_cast<A>(bn_train ? s * (dy - mdy - (a[j] - mean) * invstd * mdyx) : s * dy);
  }
  auto pooled = sa.narrow(1, 0, 2).contiguous();
  auto din = at::empty({B, 2, H, W}, sa.options());
  auto dw = at::empty_like(conv_w, at::MemoryFormat::Contiguous);
  conv_backward<A>(pooled.data_ptr<A>(), conv_w.contiguous().data_ptr<A>(), da, B, H, W, k, din.data_ptr<A>(),
                   dw.data_ptr<A>());
  auto dgamma = at::full({1}, sdyx, conv_w.options());
  auto dbeta = at::full({1}, sdy, conv_w.options());
  return {din.select(1, 0).reshape({B, P}), din.select(1, 1).reshape({B, P}), dw, dgamma, dbeta};
}

// ---- the operator

struct Parts {
  Tensor x, w1, b1, w2, b2, conv_w, bn_w, bn_b;
};

at::ScalarType acc_type_of(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

void check_inputs(const Tensor& x, const Tensor& w1, const Tensor& w2) {
  TORCH_CHECK(x.dim() == 4, "cbamlab::cbam: x must be (B, C, H, W), got ", x.dim(), " dimensions");
  TORCH_CHECK(x.device().is_cpu(), "cbamlab::cbam: the native CBAM runs on the CPU");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble || x.scalar_type() == at::kBFloat16,
              "cbamlab::cbam: float32, float64 or bfloat16 maps, got ", x.scalar_type());
  TORCH_CHECK(w1.dim() == 2 && w2.dim() == 2 && w1.size(1) == x.size(1) && w2.size(0) == x.size(1),
              "cbamlab::cbam: MLP weights do not match ", x.size(1), " channels");
}

Tensor as_layout(const Tensor& t, const Geo& g) { return t.contiguous(layout_of(g)); }

Tensor empty_idx(const Tensor& x) { return at::empty({0}, x.options().dtype(at::kLong)); }

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> cbam_forward(
    const Tensor& x_in, const Tensor& w1_in, const Tensor& b1_in, const Tensor& w2_in, const Tensor& b2_in,
    const std::optional<Tensor>& conv_w_in, const std::optional<Tensor>& bn_w_in,
    const std::optional<Tensor>& bn_b_in, const std::optional<Tensor>& rm, const std::optional<Tensor>& rv,
    const std::string& arrangement_name, bool use_avg, bool use_max, bool bn_train, double eps) {
  TICK("fwd start");
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);  // the MLP stays in A
  check_inputs(x_in, w1_in, w2_in);
  TORCH_CHECK(use_avg || use_max, "cbamlab::cbam: the channel gate needs the avg pool, the max pool or both");
  const auto arr = parse_arrangement(arrangement_name);
  const bool spatial = arr != Arrangement::channel_only;
  TORCH_CHECK(!spatial || (conv_w_in && bn_w_in && bn_b_in), "cbamlab::cbam: the spatial gate needs its weights");
  TORCH_CHECK(!spatial || bn_train || (rm && rv), "cbamlab::cbam: BatchNorm in eval needs running statistics");
  const bool cl = !x_in.is_contiguous() && x_in.is_contiguous(at::MemoryFormat::ChannelsLast);
  const Tensor x = cl ? x_in : x_in.contiguous();
  const Geo g = geometry(x);
  const auto acc = acc_type_of(x.scalar_type());
  const auto aopt = x.options().dtype(acc);
  auto w1 = w1_in.to(acc), b1 = b1_in.to(acc), w2 = w2_in.to(acc), b2 = b2_in.to(acc);
  const int64_t B = g.B, C = g.C, H = x.size(2), W = x.size(3), K = int(use_avg) + int(use_max);
  auto out = at::empty_like(x, layout_of(g));
  auto pools = at::empty({K, B, C}, aopt);
  auto hidx = use_max ? at::empty({B, C}, x.options().dtype(at::kLong)) : empty_idx(x);
  Spatial sp;
  sp.sa = spatial ? at::empty({B, 3, H, W}, aopt) : at::empty({0}, aopt);
  sp.ms = at::empty({0}, aopt);
  sp.stats = at::empty({0}, aopt.dtype(at::kDouble));
  auto sidx = spatial ? at::empty({B, H, W}, x.options().dtype(at::kLong)) : empty_idx(x);
  Tensor mc;
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "cbamlab_cbam_forward", [&] {
    using T = scalar_t;
    using A = acc_t<T>;
    const T* xp = x.data_ptr<T>();
    auto hw_pools = [&](const A* s) {
      // avg into a scratch when not wanted, to keep one kernel call
      auto avg = use_avg ? pools[0] : at::empty({B, C}, aopt);
      auto mx = use_max ? pools[K - 1] : at::empty({0}, aopt);
      pool_hw<T>(xp, s, g, use_max, avg.data_ptr<A>(), use_max ? mx.data_ptr<A>() : nullptr,
                 use_max ? hidx.data_ptr<int64_t>() : nullptr);
      TICK("fwd pool_hw");
    };
    auto c_pools = [&](const A* m) {
      auto smax = at::empty({B, g.P}, aopt), smean = at::empty({B, g.P}, aopt);
      pool_c<T>(xp, m, g, smax.data_ptr<A>(), sidx.data_ptr<int64_t>(), smean.data_ptr<A>());
      TICK("fwd pool_c");
      sp.sa.select(1, 0).copy_(smax.view({B, H, W}));
      sp.sa.select(1, 1).copy_(smean.view({B, H, W}));
      TICK("fwd sa copy");
      spatial_map<A>(sp, conv_w_in->to(acc), bn_w_in->to(acc), bn_b_in->to(acc), bn_train ? Tensor() : rm->to(acc),
                     bn_train ? Tensor() : rv->to(acc), bn_train, eps);
    };
    auto channel = [&]() {
      mc = channel_map(pools, w1, b1, w2, b2).mc.contiguous();
      TICK("fwd mlp");
    };
    Terms<A> tm;
    switch (arr) {
      case Arrangement::channel_only:
        hw_pools(nullptr);
        channel();
        tm.c1 = mc.data_ptr<A>();
        break;
      case Arrangement::channel_first:
        hw_pools(nullptr);
        channel();
        c_pools(mc.data_ptr<A>());
        tm.c1 = mc.data_ptr<A>(), tm.s1 = sp.ms.data_ptr<A>();
        break;
      case Arrangement::spatial_first:
        c_pools(nullptr);
        hw_pools(sp.ms.data_ptr<A>());
        channel();
        tm.c1 = mc.data_ptr<A>(), tm.s1 = sp.ms.data_ptr<A>();
        break;
      case Arrangement::parallel:
        hw_pools(nullptr);
        c_pools(nullptr);
        channel();
        tm.c1 = mc.data_ptr<A>(), tm.s1 = sp.ms.data_ptr<A>();
        break;
    }
    fused_map<T>(xp, xp, tm.place(g), g, out.data_ptr<T>(), nullptr, nullptr);
    TICK("fwd scale");
  });
  return {out, mc, sp.ms, pools, hidx, sidx, sp.sa, sp.stats};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> cbam_backward(
    const Tensor& dout_in, const Tensor& x_in, const Tensor& w1_in, const Tensor& b1_in, const Tensor& w2_in,
    const std::optional<Tensor>& conv_w_in, const std::optional<Tensor>& bn_w_in, const Tensor& mc,
    const Tensor& ms, const Tensor& pools, const Tensor& hidx, const Tensor& sidx, const Tensor& sa,
    const Tensor& stats, const std::string& arrangement_name, bool use_avg, bool use_max, bool bn_train,
    double eps) {
  TICK("bwd start");
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  check_inputs(x_in, w1_in, w2_in);
  const auto arr = parse_arrangement(arrangement_name);
  const bool spatial = arr != Arrangement::channel_only;
  const bool cl = !x_in.is_contiguous() && x_in.is_contiguous(at::MemoryFormat::ChannelsLast);
  const Tensor x = cl ? x_in : x_in.contiguous();
  const Geo g = geometry(x);
  const Tensor dout = as_layout(dout_in.to(x.scalar_type()), g);
  const auto acc = acc_type_of(x.scalar_type());
  const auto aopt = x.options().dtype(acc);
  auto w1 = w1_in.to(acc), b1 = b1_in.to(acc), w2 = w2_in.to(acc);
  auto conv_w = spatial ? conv_w_in->to(acc) : Tensor();
  auto bn_w = spatial ? bn_w_in->to(acc) : Tensor();
  const int64_t B = g.B, C = g.C, P = g.P, K = int(use_avg) + int(use_max);
  auto dx = at::empty_like(x, layout_of(g));
  Tensor dw1, db1, dw2, db2, dconv, dgamma, dbeta;
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "cbamlab_cbam_backward", [&] {
    using T = scalar_t;
    using A = acc_t<T>;
    const T *xp = x.data_ptr<T>(), *dp = dout.data_ptr<T>();
    const A* mcp = mc.data_ptr<A>();
    const A* msp = spatial ? ms.data_ptr<A>() : nullptr;
    const int64_t* hp = use_max ? hidx.data_ptr<int64_t>() : nullptr;
    const int64_t* sp = spatial ? sidx.data_ptr<int64_t>() : nullptr;
    // d pools (K, B, C) -> (davg / P, dmax) pointers; keeps the tensors alive
    Tensor davg_p, dmax_c;
    auto channel_back = [&](const Tensor& dmc) {
      auto r = channel_map_backward(pools, mc, dmc, w1, b1, w2);
      dw1 = r[1], db1 = r[2], dw2 = r[3], db2 = r[4];
      davg_p = use_avg ? (r[0][0] / static_cast<double>(P)).contiguous() : Tensor();
      dmax_c = use_max ? r[0][K - 1].contiguous() : Tensor();
      TICK("bwd mlp");
    };
    Tensor dsmax, dsmean_c;  // (B, P): d channel max; d channel mean / C
    auto spatial_back = [&](const Tensor& dms) {
      auto r = spatial_map_backward<A>(sa, stats, ms, dms, conv_w, bn_w, bn_train, eps);
      dsmax = r[0].contiguous(), dsmean_c = (r[1] / static_cast<double>(C)).contiguous();
      dconv = r[2], dgamma = r[3], dbeta = r[4];
      TICK("bwd spatial gate");
    };
    auto ptr = [](const Tensor& t) -> const A* { return t.defined() ? t.data_ptr<A>() : nullptr; };
    auto contract = [&](Terms<A> tm, bool over_p) {  // sum over P (-> (B, C)) or over C (-> (B, P)) of x * y
      auto r = at::empty({B, over_p ? C : P}, aopt);
      A* rp = r.data_ptr<A>();
      const bool over_inner = over_p != g.cl;  // NCHW: P is the inner axis
      fused_map<T>(dp, xp, tm.place(g), g, nullptr, over_inner ? rp : nullptr, over_inner ? nullptr : rp);
      TICK(over_inner ? "bwd contract inner" : "bwd contract outer");
      return r;
    };
    T* dxp = dx.data_ptr<T>();
    Terms<A> tm;
    switch (arr) {
      case Arrangement::channel_only: {  // out = x Mc
        channel_back(contract(Terms<A>{}, true));
        tm.c1 = mcp, tm.c3 = ptr(davg_p);
        fused_map<T>(dp, xp, tm.place(g), g, dxp, nullptr, nullptr);
        if (use_max) add_at_position<T>(dxp, hp, dmax_c.data_ptr<A>(), nullptr, g);
        break;
      }
      case Arrangement::channel_first: {  // out = G Ms, G = x Mc; Ms pools G
        Terms<A> t1;
        t1.c1 = mcp;
        spatial_back(contract(t1, false));  // dL/dMs = sum_c dout x Mc
        Terms<A> t2;                        // dL/dG = dout Ms + dmean / C (+ dmax at the arg-max channel)
        t2.s1 = msp, t2.s3 = ptr(dsmean_c);
        auto dmc = contract(t2, true);
        gather_channel<T>(xp, sp, dsmax.data_ptr<A>(), g, dmc.data_ptr<A>());
        TICK("bwd gather");
        channel_back(dmc);
        tm.c1 = mcp, tm.s1 = msp, tm.c2 = mcp, tm.s2 = ptr(dsmean_c), tm.c3 = ptr(davg_p);  // dx = Mc dL/dG + ...
        fused_map<T>(dp, xp, tm.place(g), g, dxp, nullptr, nullptr);
        TICK("bwd dx");
        add_at_channel<T>(dxp, sp, dsmax.data_ptr<A>(), mcp, g);
        if (use_max) add_at_position<T>(dxp, hp, dmax_c.data_ptr<A>(), nullptr, g);
        break;
      }
      case Arrangement::spatial_first: {  // out = G Mc, G = x Ms; Mc pools G
        Terms<A> t1;
        t1.s1 = msp;
        channel_back(contract(t1, true));  // dL/dMc = sum_p dout x Ms
        Terms<A> t2;                       // dL/dG = dout Mc + davg / P (+ dmax at the arg-max position)
        t2.c1 = mcp, t2.c3 = ptr(davg_p);
        auto dms = contract(t2, false);
        if (use_max) gather_position<T>(xp, hp, dmax_c.data_ptr<A>(), g, dms.data_ptr<A>());
        spatial_back(dms);
        tm.c1 = mcp, tm.s1 = msp, tm.c2 = ptr(davg_p), tm.s2 = davg_p.defined() ? msp : nullptr;
        tm.s3 = ptr(dsmean_c);
        fused_map<T>(dp, xp, tm.place(g), g, dxp, nullptr, nullptr);
        if (use_max) add_at_position<T>(dxp, hp, dmax_c.data_ptr<A>(), msp, g);
        add_at_channel<T>(dxp, sp, dsmax.data_ptr<A>(), nullptr, g);
        break;
      }
      case Arrangement::parallel: {  // out = x Mc Ms; both maps pool x
        Terms<A> t1, t2;
        t1.s1 = msp;
        t2.c1 = mcp;
        auto dmc = contract(t1, true);
        spatial_back(contract(t2, false));
        channel_back(dmc);
        tm.c1 = mcp, tm.s1 = msp, tm.c3 = ptr(davg_p), tm.s3 = ptr(dsmean_c);
        fused_map<T>(dp, xp, tm.place(g), g, dxp, nullptr, nullptr);
        if (use_max) add_at_position<T>(dxp, hp, dmax_c.data_ptr<A>(), nullptr, g);
        add_at_channel<T>(dxp, sp, dsmax.data_ptr<A>(), nullptr, g);
        break;
      }
    }
  });
  TICK("bwd sparse");
  auto as_param = [](const Tensor& grad, const std::optional<Tensor>& like) {
    return like && grad.defined() ? grad.to(like->scalar_type()).view(like->sizes()) : at::empty({0}, grad.options());
  };
  return {dx,
          dw1.to(w1_in.scalar_type()),
          db1.to(b1_in.scalar_type()),
          dw2.to(w2_in.scalar_type()),
          db2.to(w2_in.scalar_type()),
          spatial ? as_param(dconv, conv_w_in) : at::empty({0}, aopt),
          spatial ? as_param(dgamma, bn_w_in) : at::empty({0}, aopt),
          spatial ? as_param(dbeta, bn_w_in) : at::empty({0}, aopt)};
}

}  // namespace

TORCH_LIBRARY(cbamlab, m) {
  m.def(
      "cbam_forward(Tensor x, Tensor w1, Tensor b1, Tensor w2, Tensor b2, Tensor? conv_w, Tensor? bn_w, "
      "Tensor? bn_b, Tensor? running_mean, Tensor? running_var, str arrangement, bool use_avg, bool use_max, "
      "bool bn_train, float eps) -> (Tensor out, Tensor mc, Tensor ms, Tensor pools, Tensor hw_index, "
      "Tensor c_index, Tensor spatial, Tensor stats)");
  m.def(
      "cbam_backward(Tensor dout, Tensor x, Tensor w1, Tensor b1, Tensor w2, Tensor? conv_w, Tensor? bn_w, "
      "Tensor mc, Tensor ms, Tensor pools, Tensor hw_index, Tensor c_index, Tensor spatial, Tensor stats, "
      "str arrangement, bool use_avg, bool use_max, bool bn_train, float eps) -> (Tensor dx, Tensor dw1, "
      "Tensor db1, Tensor dw2, Tensor db2, Tensor dconv_w, Tensor dbn_w, Tensor dbn_b)");
}

TORCH_LIBRARY_IMPL(cbamlab, CPU, m) {
  m.impl("cbam_forward", &cbam_forward);
  m.impl("cbam_backward", &cbam_backward);
}

}  // namespace cbamlab
