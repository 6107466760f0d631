// The full-size kernels of the native CBAM: the pools over H, W and over C, and the fused element-wise maps with
// their contractions, over a (B, O, I) view of the feature map (see cbam.cpp's header).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/irange.h>

#include <algorithm>
#include <limits>
#include <string>

namespace cbamlab {
namespace {

using at::Tensor;
using at::vec::Vectorized;

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
// Indices per parallel task when each index is `work` elements: below kGrain elements in all, at::parallel_for
// runs the loop in the calling thread (an OpenMP region costs microseconds, more than a small map's work).
constexpr int64_t kGrain = 32768;
inline int64_t grain(int64_t work) { return std::max<int64_t>(1, kGrain / std::max<int64_t>(work, 1)); }

// Horizontal reductions of one vector in shuffles (at::vec::vec_reduce_all), not a loop over its lanes: for
// channels_last maps with few channels a row is one or two vectors, and a lane loop would cost more than the row.
template <typename A>
inline A lane_sum(const Vectorized<A>& v) {
  return at::vec::vec_reduce_all<A>([](const Vectorized<A>& a, const Vectorized<A>& b) { return a + b; }, v);
}

// First maximum of lane maxima `m` (never NaN: a lane takes only values > its maximum) with their first indices
// `ix`: the largest maximum, and among the lanes holding it the lowest index (ties: the first position).
template <typename A>
inline void lane_argmax(const Vectorized<A>& m, const Vectorized<A>& ix, A& best, A& best_ix) {
  using V = Vectorized<A>;
  best = at::vec::vec_reduce_all<A>([](const V& a, const V& b) { return V::blendv(a, b, b > a); }, m);
  const V at_best = V::blendv(V(std::numeric_limits<A>::infinity()), ix, m == V(best));
  best_ix = at::vec::vec_reduce_all<A>([](const V& a, const V& b) { return V::blendv(a, b, b < a); }, at_best);
}

// Per row (b, o): sum_i x * v[b, i], and (MAX) max_i with its first arg-max. v may be null (ones).
template <typename T, bool MAX>
void reduce_inner(const T* x, const acc_t<T>* v, const Geo& g, acc_t<T>* sum, acc_t<T>* mx, int64_t* idx) {
  using A = acc_t<T>;
  using V = typename IO<T>::V;
  constexpr int64_t L = V::size();
  const int64_t O = g.O, I = g.I;
  at::parallel_for(0, g.B * O, grain(I), [&](int64_t r0, int64_t r1) {
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
      A s = lane_sum(vs);
      A best = -std::numeric_limits<A>::infinity(), best_ix = 0;
      if constexpr (MAX) {
        if (I >= L) lane_argmax(vm, vi, best, best_ix);
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
  at::parallel_for(0, g.B * tasks, grain(O * NV * L), [&](int64_t t0, int64_t t1) {
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
  at::parallel_for(0, g.B * O, grain(I), [&](int64_t r0, int64_t r1) {
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
      if constexpr (RO) ro[r] = sro + lane_sum(vro);
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
  at::parallel_for(0, g.B * tasks, grain(O * NV * L), [&](int64_t t0, int64_t t1) {
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
  at::parallel_for(0, g.B, grain(g.C + g.P), [&](int64_t b0, int64_t b1) {
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
  at::parallel_for(0, g.B, grain(g.C + g.P), [&](int64_t b0, int64_t b1) {
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
  at::parallel_for(0, g.B, grain(g.C + g.P), [&](int64_t b0, int64_t b1) {
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
  at::parallel_for(0, g.B, grain(g.C + g.P), [&](int64_t b0, int64_t b1) {
    for (const auto b : c10::irange(b0, b1))
      for (const auto c : c10::irange(g.C)) {
        const int64_t p = hidx[b * g.C + c];
        out_p[b * g.P + p] += static_cast<acc_t<T>>(x[at_(g, b, c, p)]) * val[b * g.C + c];
      }
  });
}

}  // namespace
}  // namespace cbamlab
