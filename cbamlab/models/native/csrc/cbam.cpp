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
#include "small_maps.h"

#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <c10/core/impl/alloc_cpu.h>

#include <chrono>
#include <cstdio>
#include <mutex>
#include <optional>
#include <tuple>
#include <unordered_map>

namespace cbamlab {
namespace {

// A build with -DCBAMLAB_PROFILE prints the time between consecutive TICKs (a benchmarking aid; off in the cache).
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

using Forward = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;
using Backward = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;
using OptTensor = std::optional<Tensor>;

at::ScalarType acc_type_of(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

void check_inputs(const Tensor& x, const Tensor& w1, const Tensor& w2) {
  TORCH_CHECK(x.dim() == 4, "cbamlab::cbam: x must be (B, C, H, W), got ", x.dim(), " dimensions");
  TORCH_CHECK(x.device().is_cpu(), "cbamlab::cbam: the native CBAM runs on the CPU");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble || x.scalar_type() == at::kBFloat16,
              "cbamlab::cbam: float32, float64 or bfloat16 maps, got ", x.scalar_type());
  TORCH_CHECK(w1.dim() == 2 && w2.dim() == 2 && w1.size(1) == x.size(1) && w2.size(0) == x.size(1) &&
                  w2.size(1) == w1.size(0),
              "cbamlab::cbam: MLP weights do not match ", x.size(1), " channels");
}

// x in the layout the kernels read: channels_last as it is, anything else contiguous.
Tensor readable(const Tensor& x) {
  return !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast) ? x : x.contiguous();
}

// The large maps this operator returns (its output, the input gradient) come from a cache of the blocks it
// returned before: a training step frees and asks again for the same sizes every step, and glibc hands blocks
// this large back to the OS on free, so each fresh one page-faults in, which costs more than a pass over the
// map (benchmarks/results/ has the measurement). Idle blocks are capped at kMaxIdle bytes; past that they are freed.
class BlockCache {
 public:
  static BlockCache& instance() {
    static auto* cache = new BlockCache();  // never destroyed: tensors may give blocks back during exit
    return *cache;
  }
  void* take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = idle_.find(bytes);
      if (it != idle_.end()) {
        void* p = it->second;
        idle_.erase(it);
        idle_bytes_ -= bytes;
        return p;
      }
    }
    return c10::alloc_cpu(bytes);
  }
  void give(void* p, size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (idle_bytes_ + bytes <= kMaxIdle) {
        idle_.emplace(bytes, p);
        idle_bytes_ += bytes;
        return;
      }
    }
    c10::free_cpu(p);
  }

 private:
  static constexpr size_t kMaxIdle = size_t(1) << 30;
  std::mutex mu_;
  std::unordered_multimap<size_t, void*> idle_;
  size_t idle_bytes_ = 0;
};

constexpr size_t kCachedBytes = size_t(1) << 20;  // smaller maps: the allocator keeps those itself

// An uninitialised map shaped like x in layout g, from the block cache when it is large.
Tensor empty_map(const Tensor& x, const Geo& g) {
  const size_t bytes = static_cast<size_t>(x.numel()) * x.element_size();
  if (bytes < kCachedBytes) return at::empty_like(x, layout_of(g));
  const int64_t C = x.size(1), H = x.size(2), W = x.size(3);
  const std::vector<int64_t> strides = g.cl ? std::vector<int64_t>{H * W * C, 1, W * C, C}
                                            : std::vector<int64_t>{C * H * W, H * W, W, 1};
  void* p = BlockCache::instance().take(bytes);
  return at::from_blob(p, x.sizes(), strides, [bytes](void* q) { BlockCache::instance().give(q, bytes); },
                       x.options());
}

// The small parameters in the accumulation type, contiguous (kept alive here while the kernels point into them).
struct Small {
  Tensor w1, b1, w2, b2, conv;
  template <typename A>
  Mlp<A> mlp() const {
    return {w1.data_ptr<A>(), b1.data_ptr<A>(), w2.data_ptr<A>(), b2.defined() ? b2.data_ptr<A>() : nullptr,
            w1.size(0), w1.size(1)};
  }
};

Small small_params(at::ScalarType acc, const Tensor& w1, const Tensor& b1, const Tensor& w2, const Tensor& b2,
                   const OptTensor& conv_w) {
  auto as = [acc](const Tensor& t) { return t.defined() ? t.to(acc).contiguous() : t; };
  return {as(w1), as(b1), as(w2), as(b2), conv_w ? as(*conv_w) : Tensor()};
}

double scalar(const OptTensor& t) { return t->item<double>(); }

// nn.BatchNorm2d's update of its running statistics from this batch's mean and biased variance of n values.
void update_running_stats(const OptTensor& rm, const OptTensor& rv, const OptTensor& nbt, double momentum, double mean,
                          double var, int64_t n) {
  double factor = momentum;
  if (nbt && nbt->defined()) {
    auto* count = nbt->data_ptr<int64_t>();
    *count += 1;
    if (momentum < 0) factor = 1.0 / static_cast<double>(*count);  // momentum None: the cumulative average
  }
  const double unbiased = n > 1 ? var * n / (n - 1) : var;
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, rm->scalar_type(), "cbamlab_running_stats", [&] {
    auto* m = rm->data_ptr<scalar_t>();
    auto* v = rv->data_ptr<scalar_t>();
    m[0] = static_cast<scalar_t>(factor * mean + (1 - factor) * static_cast<double>(m[0]));
    v[0] = static_cast<scalar_t>(factor * unbiased + (1 - factor) * static_cast<double>(v[0]));
  });
}

Forward cbam_forward(const Tensor& x_in, const Tensor& w1_in, const Tensor& b1_in, const Tensor& w2_in,
                     const Tensor& b2_in, const OptTensor& conv_w, const OptTensor& bn_w, const OptTensor& bn_b,
                     const OptTensor& rm, const OptTensor& rv, const OptTensor& nbt,
                     const std::string& arrangement_name, bool use_avg, bool use_max, bool training, double momentum,
                     double eps) {
  TICK("fwd start");
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);  // the MLP stays in A
  check_inputs(x_in, w1_in, w2_in);
  TORCH_CHECK(use_avg || use_max, "cbamlab::cbam: the channel gate needs the avg pool, the max pool or both");
  const auto arr = parse_arrangement(arrangement_name);
  const bool spatial = arr != Arrangement::channel_only;
  const bool tracked = rm && rm->defined() && rv && rv->defined();
  const bool batch_stats = training || !tracked;
  TORCH_CHECK(!spatial || (conv_w && bn_w && bn_b), "cbamlab::cbam: the spatial gate needs its weights");
  const Tensor x = readable(x_in);
  const Geo g = geometry(x);
  const auto acc = acc_type_of(x.scalar_type());
  const auto aopt = x.options().dtype(acc);
  const auto lopt = x.options().dtype(at::kLong);
  const int64_t B = g.B, C = g.C, P = g.P, H = x.size(2), W = x.size(3), K = int(use_avg) + int(use_max);
  const Small sm = small_params(acc, w1_in, b1_in, w2_in, b2_in, conv_w);
  auto out = empty_map(x, g);
  auto mc = at::empty({B, C}, aopt);
  auto pools = at::empty({K, B, C}, aopt);
  auto hidden = at::empty({K * B, w1_in.size(0)}, aopt);
  auto hidx = at::empty(use_max ? std::vector<int64_t>{B, C} : std::vector<int64_t>{0}, lopt);
  auto ms = at::empty(spatial ? std::vector<int64_t>{B, H, W} : std::vector<int64_t>{0}, aopt);
  auto sidx = at::empty(spatial ? std::vector<int64_t>{B, H, W} : std::vector<int64_t>{0}, lopt);
  auto sa = at::empty(spatial ? std::vector<int64_t>{3, B, H, W} : std::vector<int64_t>{0}, aopt);
  auto stats = at::empty({spatial ? 2 : 0}, aopt.dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "cbamlab_cbam_forward", [&] {
    using T = scalar_t;
    using A = acc_t<T>;
    const T* xp = x.data_ptr<T>();
    A* pp = pools.data_ptr<A>();
    std::vector<A> scratch(use_avg ? 0 : B * C);  // the H, W sums are computed alongside the max anyway
    auto channel = [&](const A* s) {  // Mc from the pools of x * s over H, W
      pool_hw<T>(xp, s, g, use_max, use_avg ? pp : scratch.data(), use_max ? pp + (K - 1) * B * C : nullptr,
                 use_max ? hidx.data_ptr<int64_t>() : nullptr);
      TICK("fwd pool_hw");
      channel_map<A>(sm.mlp<A>(), pp, K, B, hidden.data_ptr<A>(), mc.data_ptr<A>());
      TICK("fwd mlp");
    };
    auto spatial_gate = [&](const A* m) {  // Ms from the pools of x * m over C
      A *smax = sa.data_ptr<A>(), *smean = smax + B * P, *a = smean + B * P;
      pool_c<T>(xp, m, g, smax, sidx.data_ptr<int64_t>(), smean);
      TICK("fwd pool_c");
      conv_forward<A>(smax, smean, sm.conv.data_ptr<A>(), B, H, W, conv_w->size(-1), a);
      TICK("fwd conv");
      double mean, var;
      if (batch_stats) {
        mean_var<A>(a, B * P, mean, var);
        if (training && tracked) update_running_stats(rm, rv, nbt, momentum, mean, var, B * P);
      } else {
        mean = scalar(rm), var = scalar(rv);
      }
      stats.data_ptr<double>()[0] = mean, stats.data_ptr<double>()[1] = var;
      const double invstd = 1.0 / std::sqrt(var + eps), gamma = scalar(bn_w), beta = scalar(bn_b);
      affine_sigmoid<A>(a, static_cast<A>(gamma * invstd), static_cast<A>(beta - mean * gamma * invstd), B * P,
                        ms.data_ptr<A>());
      TICK("fwd bn sigmoid");
    };
    Terms<A> tm;
    switch (arr) {
      case Arrangement::channel_only:
        channel(nullptr);
        tm.c1 = mc.data_ptr<A>();
        break;
      case Arrangement::channel_first:
        channel(nullptr);
        spatial_gate(mc.data_ptr<A>());
        tm.c1 = mc.data_ptr<A>(), tm.s1 = ms.data_ptr<A>();
        break;
      case Arrangement::spatial_first:
        spatial_gate(nullptr);
        channel(ms.data_ptr<A>());
        tm.c1 = mc.data_ptr<A>(), tm.s1 = ms.data_ptr<A>();
        break;
      case Arrangement::parallel:
        channel(nullptr);
        spatial_gate(nullptr);
        tm.c1 = mc.data_ptr<A>(), tm.s1 = ms.data_ptr<A>();
        break;
    }
    fused_map<T>(xp, xp, tm.place(g), g, out.data_ptr<T>(), nullptr, nullptr);
    TICK("fwd scale");
  });
  return {out, mc, ms, pools, hidden, hidx, sidx, sa, stats};
}

Backward cbam_backward(const Tensor& dout_in, const Tensor& x_in, const Tensor& w1_in, const Tensor& b1_in,
                       const Tensor& w2_in, const OptTensor& conv_w, const OptTensor& bn_w, const Tensor& mc,
                       const Tensor& ms, const Tensor& pools, const Tensor& hidden, const Tensor& hidx,
                       const Tensor& sidx, const Tensor& sa, const Tensor& stats, const std::string& arrangement_name,
                       bool use_avg, bool use_max, bool batch_stats, double eps) {
  TICK("bwd start");
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  check_inputs(x_in, w1_in, w2_in);
  const auto arr = parse_arrangement(arrangement_name);
  const bool spatial = arr != Arrangement::channel_only;
  const Tensor x = readable(x_in);
  const Geo g = geometry(x);
  const Tensor dout = dout_in.to(x.scalar_type()).contiguous(layout_of(g));
  const auto acc = acc_type_of(x.scalar_type());
  const auto aopt = x.options().dtype(acc);
  const int64_t B = g.B, C = g.C, P = g.P, H = x.size(2), W = x.size(3), K = int(use_avg) + int(use_max);
  const int64_t hid = w1_in.size(0), k = spatial ? conv_w->size(-1) : 0;
  const Small sm = small_params(acc, w1_in, b1_in, w2_in, Tensor(), conv_w);
  auto dx = empty_map(x, g);
  auto dw1 = at::empty({hid, C}, aopt), db1 = at::empty({hid}, aopt), dw2 = at::empty({C, hid}, aopt);
  auto db2 = at::empty({C}, aopt);
  auto dconv = at::empty({spatial ? 2 * k * k : 0}, aopt), dgamma = at::empty({spatial ? 1 : 0}, aopt);
  auto dbeta = at::empty({spatial ? 1 : 0}, aopt);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "cbamlab_cbam_backward", [&] {
    using T = scalar_t;
    using A = acc_t<T>;
    const T *xp = x.data_ptr<T>(), *dp = dout.data_ptr<T>();
    const A* mcp = mc.data_ptr<A>();
    const A* msp = spatial ? ms.data_ptr<A>() : nullptr;
    const int64_t* hp = use_max ? hidx.data_ptr<int64_t>() : nullptr;
    const int64_t* sp = spatial ? sidx.data_ptr<int64_t>() : nullptr;
    std::vector<A> dpools(K * B * C), davg_p, dsmax(spatial ? B * P : 0), dsmean_c(spatial ? B * P : 0);
    const A* dmax_c = nullptr;  // d max pool (B, C)
    auto channel_back = [&](const A* dmc) {
      channel_map_backward<A>(sm.mlp<A>(), pools.data_ptr<A>(), hidden.data_ptr<A>(), mcp, dmc, K, B, dpools.data(),
                              dw1.data_ptr<A>(), db1.data_ptr<A>(), dw2.data_ptr<A>(), db2.data_ptr<A>());
      if (use_avg) {
        davg_p.resize(B * C);
        for (const auto j : c10::irange(B * C)) davg_p[j] = dpools[j] / static_cast<A>(P);
      }
      if (use_max) dmax_c = dpools.data() + (K - 1) * B * C;
      TICK("bwd mlp");
    };
    auto spatial_back = [&](const A* dms) {  // through the sigmoid, BatchNorm and the convolution
      const A *smax = sa.data_ptr<A>(), *smean = smax + B * P, *a = smean + B * P;
      const double mean = stats.data_ptr<double>()[0], var = stats.data_ptr<double>()[1];
      const double invstd = 1.0 / std::sqrt(var + eps), gamma = scalar(bn_w);
      const int64_t n = B * P;
      std::vector<A> da(n);
      const auto [sdy, sdyx] = bn_sigmoid_backward<A>(dms, msp, a, n, mean, invstd, gamma, batch_stats, da.data());
      conv_backward<A>(smax, smean, sm.conv.data_ptr<A>(), da.data(), B, H, W, k, dsmax.data(), dsmean_c.data(),
                       dconv.data_ptr<A>());
      for (auto& v : dsmean_c) v /= static_cast<A>(C);  // the channel mean's gradient reaches each channel / C
      dgamma.data_ptr<A>()[0] = static_cast<A>(sdyx);
      dbeta.data_ptr<A>()[0] = static_cast<A>(sdy);
      TICK("bwd spatial gate");
    };
    auto avg = [&]() -> const A* { return use_avg ? davg_p.data() : nullptr; };
    std::vector<A> red(B * std::max(C, P));
    auto contract = [&](Terms<A> tm, bool over_p) {  // sum over P (-> (B, C)) or over C (-> (B, P)) of x * y
      const bool over_inner = over_p != g.cl;      // NCHW: P is the inner axis
      fused_map<T>(dp, xp, tm.place(g), g, nullptr, over_inner ? red.data() : nullptr,
                   over_inner ? nullptr : red.data());
      TICK(over_inner ? "bwd contract inner" : "bwd contract outer");
      return red.data();
    };
    T* dxp = dx.data_ptr<T>();
    Terms<A> tm;
    switch (arr) {
      case Arrangement::channel_only: {  // out = x Mc
        channel_back(contract(Terms<A>{}, true));
        tm.c1 = mcp, tm.c3 = avg();
        fused_map<T>(dp, xp, tm.place(g), g, dxp, nullptr, nullptr);
        if (use_max) add_at_position<T>(dxp, hp, dmax_c, nullptr, g);
        break;
      }
      case Arrangement::channel_first: {  // out = G Ms, G = x Mc; Ms pools G
        Terms<A> t1;
        t1.c1 = mcp;
        spatial_back(contract(t1, false));  // dL/dMs = sum_c dout x Mc
        Terms<A> t2;                        // dL/dG = dout Ms + dmean / C (+ dmax at the arg-max channel)
        t2.s1 = msp, t2.s3 = dsmean_c.data();
        A* dmc = contract(t2, true);
        gather_channel<T>(xp, sp, dsmax.data(), g, dmc);
        channel_back(dmc);
        tm.c1 = mcp, tm.s1 = msp, tm.c2 = mcp, tm.s2 = dsmean_c.data(), tm.c3 = avg();  // dx = Mc dL/dG + ...
        fused_map<T>(dp, xp, tm.place(g), g, dxp, nullptr, nullptr);
        TICK("bwd dx");
        add_at_channel<T>(dxp, sp, dsmax.data(), mcp, g);
        if (use_max) add_at_position<T>(dxp, hp, dmax_c, nullptr, g);
        break;
      }
      case Arrangement::spatial_first: {  // out = G Mc, G = x Ms; Mc pools G
        Terms<A> t1;
        t1.s1 = msp;
        channel_back(contract(t1, true));  // dL/dMc = sum_p dout x Ms
        Terms<A> t2;                       // dL/dG = dout Mc + davg / P (+ dmax at the arg-max position)
        t2.c1 = mcp, t2.c3 = avg();
        A* dms = contract(t2, false);
        if (use_max) gather_position<T>(xp, hp, dmax_c, g, dms);
        spatial_back(dms);
        tm.c1 = mcp, tm.s1 = msp, tm.c2 = avg(), tm.s2 = use_avg ? msp : nullptr, tm.s3 = dsmean_c.data();
        fused_map<T>(dp, xp, tm.place(g), g, dxp, nullptr, nullptr);
        if (use_max) add_at_position<T>(dxp, hp, dmax_c, msp, g);
        add_at_channel<T>(dxp, sp, dsmax.data(), nullptr, g);
        break;
      }
      case Arrangement::parallel: {  // out = x Mc Ms; both maps pool x
        Terms<A> t1, t2;
        t1.s1 = msp;
        t2.c1 = mcp;
        std::vector<A> dmc(B * C);
        const A* r = contract(t1, true);
        std::copy(r, r + B * C, dmc.begin());
        spatial_back(contract(t2, false));
        channel_back(dmc.data());
        tm.c1 = mcp, tm.s1 = msp, tm.c3 = avg(), tm.s3 = dsmean_c.data();
        fused_map<T>(dp, xp, tm.place(g), g, dxp, nullptr, nullptr);
        if (use_max) add_at_position<T>(dxp, hp, dmax_c, nullptr, g);
        add_at_channel<T>(dxp, sp, dsmax.data(), nullptr, g);
        break;
      }
    }
    TICK("bwd sparse");
  });
  auto like = [](const Tensor& grad, const OptTensor& param) {
    return param && param->defined() && grad.numel() ? grad.to(param->scalar_type()).view(param->sizes()) : grad;
  };
  return {dx, like(dw1, w1_in), like(db1, b1_in), like(dw2, w2_in), like(db2, w2_in.select(1, 0)),
          spatial ? like(dconv, conv_w) : dconv, spatial ? like(dgamma, bn_w) : dgamma,
          spatial ? like(dbeta, bn_w) : dbeta};
}

// ---- autograd: the backward operator as the forward's derivative, in C++ (no Python on the training path)

c10::TypedOperatorHandle<Forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                 const OptTensor&, const OptTensor&, const OptTensor&, const OptTensor&,
                                 const OptTensor&, const OptTensor&, const std::string&, bool, bool, bool, double,
                                 double)>
forward_op() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("cbamlab::cbam_forward", "")
                       .typed<Forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                      const OptTensor&, const OptTensor&, const OptTensor&, const OptTensor&,
                                      const OptTensor&, const OptTensor&, const std::string&, bool, bool, bool,
                                      double, double)>();
  return op;
}

c10::TypedOperatorHandle<Backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                  const OptTensor&, const OptTensor&, const Tensor&, const Tensor&, const Tensor&,
                                  const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                  const std::string&, bool, bool, bool, double)>
backward_op() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("cbamlab::cbam_backward", "")
                       .typed<Backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                       const OptTensor&, const OptTensor&, const Tensor&, const Tensor&,
                                       const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                       const Tensor&, const std::string&, bool, bool, bool, double)>();
  return op;
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class CbamFunction : public torch::autograd::Function<CbamFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& w1, const Tensor& b1,
                               const Tensor& w2, const Tensor& b2, const OptTensor& conv_w, const OptTensor& bn_w,
                               const OptTensor& bn_b, const OptTensor& rm, const OptTensor& rv, const OptTensor& nbt,
                               const std::string& arrangement, bool use_avg, bool use_max, bool training,
                               double momentum, double eps) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, mc, ms, pools, hidden, hidx, sidx, sa, stats] = forward_op().call(
        x, w1, b1, w2, b2, conv_w, bn_w, bn_b, rm, rv, nbt, arrangement, use_avg, use_max, training, momentum, eps);
    const bool spatial = conv_w.has_value() && conv_w->defined();
    ctx->save_for_backward({x, w1, b1, w2, spatial ? *conv_w : Tensor(), spatial ? *bn_w : Tensor(), mc, ms, pools,
                            hidden, hidx, sidx, sa, stats});
    ctx->saved_data["arrangement"] = arrangement;
    ctx->saved_data["use_avg"] = use_avg;
    ctx->saved_data["use_max"] = use_max;
    ctx->saved_data["batch_stats"] = training || !(rm && rm->defined());
    ctx->saved_data["eps"] = eps;
    ctx->mark_non_differentiable({mc, ms, pools, hidden, hidx, sidx, sa, stats});
    return {out, mc, ms, pools, hidden, hidx, sidx, sa, stats};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const bool spatial = s[4].defined();
    auto opt = [](const Tensor& t) { return t.defined() ? OptTensor(t) : OptTensor(); };
    const Tensor dout = grads[0].defined() ? grads[0] : at::zeros_like(s[0]);
    auto [dx, dw1, db1, dw2, db2, dconv, dgamma, dbeta] = backward_op().call(
        dout, s[0], s[1], s[2], s[3], opt(s[4]), opt(s[5]), s[6], s[7], s[8], s[9], s[10], s[11], s[12], s[13],
        ctx->saved_data["arrangement"].toStringRef(), ctx->saved_data["use_avg"].toBool(),
        ctx->saved_data["use_max"].toBool(), ctx->saved_data["batch_stats"].toBool(),
        ctx->saved_data["eps"].toDouble());
    const Tensor none;
    return {dx, dw1, db1, dw2, db2, spatial ? dconv : none, spatial ? dgamma : none, spatial ? dbeta : none,
            none, none, none, none, none, none, none, none, none};
  }
};

Forward cbam_forward_autograd(const Tensor& x, const Tensor& w1, const Tensor& b1, const Tensor& w2,
                              const Tensor& b2, const OptTensor& conv_w, const OptTensor& bn_w, const OptTensor& bn_b,
                              const OptTensor& rm, const OptTensor& rv, const OptTensor& nbt,
                              const std::string& arrangement, bool use_avg, bool use_max, bool training,
                              double momentum, double eps) {
  auto r = CbamFunction::apply(x, w1, b1, w2, b2, conv_w, bn_w, bn_b, rm, rv, nbt, arrangement, use_avg, use_max,
                               training, momentum, eps);
  return {r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8]};
}

}  // namespace

TORCH_LIBRARY(cbamlab, m) {
  m.def(
      "cbam_forward(Tensor x, Tensor w1, Tensor b1, Tensor w2, Tensor b2, Tensor? conv_w, Tensor? bn_w, "
      "Tensor? bn_b, Tensor(a!)? running_mean, Tensor(b!)? running_var, Tensor(c!)? num_batches_tracked, "
      "str arrangement, bool use_avg, bool use_max, bool training, float momentum, float eps) -> (Tensor out, "
      "Tensor mc, Tensor ms, Tensor pools, Tensor hidden, Tensor hw_index, Tensor c_index, Tensor spatial, "
      "Tensor stats)");
  m.def(
      "cbam_backward(Tensor dout, Tensor x, Tensor w1, Tensor b1, Tensor w2, Tensor? conv_w, Tensor? bn_w, "
      "Tensor mc, Tensor ms, Tensor pools, Tensor hidden, Tensor hw_index, Tensor c_index, Tensor spatial, "
      "Tensor stats, str arrangement, bool use_avg, bool use_max, bool batch_stats, float eps) -> (Tensor dx, "
      "Tensor dw1, Tensor db1, Tensor dw2, Tensor db2, Tensor dconv_w, Tensor dbn_w, Tensor dbn_b)");
}

TORCH_LIBRARY_IMPL(cbamlab, CPU, m) {
  m.impl("cbam_forward", &cbam_forward);
  m.impl("cbam_backward", &cbam_backward);
}

TORCH_LIBRARY_IMPL(cbamlab, Autograd, m) { m.impl("cbam_forward", &cbam_forward_autograd); }

}  // namespace cbamlab
