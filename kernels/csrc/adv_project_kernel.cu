// The fused ALUM perturbation update: kernel bodies and the host-side launcher.
//
// Two paths, both computing alum/perturbation.py::adv_project in fp32:
//
// * single pass (level="token", rows up to 8192 vectors): one thread block per token row.
//   Each thread loads its slice of delta and grad once into registers, the block reduces
//   the row norm (warp shuffles + one shared-memory step, any hidden size), applies the
//   rule and writes the new delta: every byte of delta and grad is read exactly once.
// * grouped (level="sequence", or a row too long for registers): the norm is taken over
//   group_rows consecutive rows (all tokens x hidden of a sequence). Phase kernels write
//   one fp32 partial per row, a small kernel reduces the partials of each group in a fixed
//   order (deterministic, no float atomics), and a final kernel writes delta. project/inf
//   reads grad twice and delta once; project/l2 and normalize re-read delta and grad once
//   more for the second norm ||u||. The extra reads hit L2 for moderate sequences.
//
// The rules of docs/algorithm.md (s = per-group scale or 1; x / ||x|| is 0 when ||x|| = 0,
// the only guard: the step is scale-free, so a row with a non-zero gradient moves by eta):
//   project:   u = d + (eta s) g / ||g||;   inf: clamp(u, +-eps s);
//              l2: u * (eps s / ||u||) when ||u|| > eps s, else u.
//   normalize: u = d + (eta s) g;   l1: r s sign(u);   inf/l2: (r s) u / ||u||.
// The norms are fp32 reductions: scale-free while the row's sum of squares (L2) is a normal
// float, i.e. for gradient elements down to about 1e-18; the reference also prescales by
// the row's max magnitude and has no such floor.
// d and g are multiplied by the padding mask before any reduction (padding rows never enter
// a sequence norm) and the result is multiplied by it again (padding rows get delta = 0).
#include "adv_project_kernel.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cfloat>

namespace alum_kernels {
namespace {

constexpr int kWarp = 32;
constexpr int kMaxItems = 8;           // vectors per thread cached by the single-pass kernel
constexpr int kTargetThreads = 256;    // block size cap of the single-pass kernel

// Block size cap for a given vector width and items per thread: 512 threads at kMaxItems
// (128 registers each) for fp32/odd rows, 256 when 2 x 64 cached floats need more registers.
constexpr int single_pass_max_threads(int vec, int items) {
  return items < kMaxItems || vec * items * 2 > 96 ? kTargetThreads : 2 * kTargetThreads;
}
constexpr int kStreamThreads = 256;    // block size of the grouped-path kernels

// ---------------------------------------------------------------- dtype conversions
__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
// Round to nearest even, as torch's .to(dtype) does.
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <> __device__ __forceinline__ __half from_float<__half>(float x) {
  return __float2half_rn(x);
}

// VEC consecutive elements: one 16-byte transaction when VEC > 1 (the launcher checks the
// alignment of every pointer and row stride), else one scalar access.
template <typename T, int VEC>
__device__ __forceinline__ void load_vec(const T* ptr, float (&out)[VEC]) {
  if constexpr (VEC == 1) {
    out[0] = to_float(ptr[0]);
  } else {
    static_assert(sizeof(T) * VEC == 16, "vector accesses are 16 bytes");
    alignas(16) T tmp[VEC];
    *reinterpret_cast<uint4*>(tmp) = *reinterpret_cast<const uint4*>(ptr);
#pragma unroll
    for (int i = 0; i < VEC; ++i) out[i] = to_float(tmp[i]);
  }
}

template <typename T, int VEC>
__device__ __forceinline__ void store_vec(T* ptr, const float (&in)[VEC]) {
  if constexpr (VEC == 1) {
    ptr[0] = from_float<T>(in[0]);
  } else {
    alignas(16) T tmp[VEC];
#pragma unroll
    for (int i = 0; i < VEC; ++i) tmp[i] = from_float<T>(in[i]);
    *reinterpret_cast<uint4*>(ptr) = *reinterpret_cast<const uint4*>(tmp);
  }
}

// ---------------------------------------------------------------- reductions
// The per-element contribution to a row norm and how contributions combine:
// inf -> max |x|, l2 -> sum x^2 (sqrt taken once at the end), l1 -> sum |x|.
__device__ __forceinline__ float norm_term(AdvNorm norm, float x) {
  return norm == AdvNorm::kL2 ? x * x : fabsf(x);
}
__device__ __forceinline__ float norm_combine(AdvNorm norm, float a, float b) {
  return norm == AdvNorm::kInf ? fmaxf(a, b) : a + b;
}
__device__ __forceinline__ float norm_finish(AdvNorm norm, float acc) {
  return norm == AdvNorm::kL2 ? sqrtf(acc) : acc;
}

__device__ __forceinline__ float warp_reduce(AdvNorm norm, float v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    v = norm_combine(norm, v, __shfl_xor_sync(0xffffffffu, v, offset));
  }
  return v;
}

// Block-wide reduction; every thread gets the result. `scratch` holds 32 floats. The
// trailing barrier lets the caller reduce again with the same scratch.
__device__ float block_reduce(AdvNorm norm, float v, float* scratch) {
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  const int warps = (blockDim.x + kWarp - 1) / kWarp;
  v = warp_reduce(norm, v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float w = lane < warps ? scratch[lane] : 0.f;  // 0 is neutral: norms are >= 0
    w = warp_reduce(norm, w);
    if (lane == 0) scratch[kWarp] = w;
  }
  __syncthreads();
  const float result = scratch[kWarp];
  __syncthreads();
  return result;
}

// ---------------------------------------------------------------- the update rules
struct GroupCoeffs {
  float eta;     // step size times the group's scale
  float eps;     // project radius times the scale
  float radius;  // normalize radius times the scale
};

__device__ __forceinline__ GroupCoeffs group_coeffs(const AdvProjectParams& p, int64_t group) {
  const float s = p.scale != nullptr ? p.scale[group] : 1.f;
  return GroupCoeffs{p.step_size * s, p.epsilon * s, p.radius * s};
}

// The divisor of x / ||x||: ||x||, or 1 for a zero row (whose elements are all 0, so the
// quotient is 0). No additive guard: it would shrink steps of rows with small gradients.
__device__ __forceinline__ float safe_norm(float n) { return n > 0.f ? n : 1.f; }

// u = d + ascent step (alum.perturbation.ascent_step): (eta g)/||g|| for project, eta g for
// normalize. `g_denominator` is safe_norm(||g||) (unused for normalize).
__device__ __forceinline__ float ascent(const AdvProjectParams& p, const GroupCoeffs& c,
                                        float d, float g, float g_denominator) {
  return p.update == AdvUpdate::kProject ? d + (c.eta * g) / g_denominator : d + c.eta * g;
}

// The new element from u once the group's ||u|| is known (u_norm unused for project/inf
// and normalize/l1, which need no second reduction).
__device__ __forceinline__ float finish(const AdvProjectParams& p, const GroupCoeffs& c,
                                        float u, float u_norm) {
  if (p.update == AdvUpdate::kProject) {
    if (p.norm == AdvNorm::kInf) return fmaxf(fminf(u, c.eps), -c.eps);
    const float factor = u_norm > c.eps ? c.eps / fmaxf(u_norm, FLT_MIN) : 1.f;
    return u * factor;
  }
  if (p.norm == AdvNorm::kL1) {
    const float sign = u > 0.f ? 1.f : (u < 0.f ? -1.f : 0.f);  // torch.sign
    return c.radius * sign;
  }
  return (c.radius * u) / safe_norm(u_norm);
}

// Whether the rule needs ||u|| (a second reduction after the ascent step).
__device__ __forceinline__ bool needs_u_norm(const AdvProjectParams& p) {
  return p.update == AdvUpdate::kProject ? p.norm == AdvNorm::kL2 : p.norm != AdvNorm::kL1;
}

__device__ __forceinline__ void flag_nonfinite(const AdvProjectParams& p, bool bad) {
  if (bad) *p.nonfinite = 1;  // benign race: every writer stores the same byte
}

template <typename T>
__device__ __forceinline__ const T* row_ptr(const void* base, int64_t row, int64_t stride) {
  return static_cast<const T*>(base) + row * stride;
}

// ---------------------------------------------------------------- single-pass kernel
// One block per token row; thread t owns vectors t, t + blockDim, ... (ITEMS of them) and
// keeps d and g in registers between the two reductions.
template <typename T, int VEC, int ITEMS>
__global__ void __launch_bounds__(single_pass_max_threads(VEC, ITEMS))
adv_project_single_pass_kernel(const AdvProjectParams p) {
  __shared__ float scratch[kWarp + 1];
  const int64_t nvec = p.hidden / VEC;
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    T* out = static_cast<T*>(p.out) + row * p.out_row_stride;
    const float m = p.mask != nullptr ? p.mask[row] : 1.f;
    if (m == 0.f) {  // padding row: delta = 0, nothing read (uniform across the block)
      float zeros[VEC] = {};
      for (int64_t v = threadIdx.x; v < nvec; v += blockDim.x) store_vec<T, VEC>(out + v * VEC, zeros);
      continue;
    }
    const T* dp = row_ptr<T>(p.delta, row, p.delta_row_stride);
    const T* gp = row_ptr<T>(p.grad, row, p.grad_row_stride);
    float d[ITEMS][VEC];
    float g[ITEMS][VEC];
    bool bad = false;
    float g_acc = 0.f;
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      const int64_t v = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
      if (v < nvec) {
        load_vec<T, VEC>(dp + v * VEC, d[k]);
        load_vec<T, VEC>(gp + v * VEC, g[k]);
      }
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        if (v >= nvec) { d[k][i] = 0.f; g[k][i] = 0.f; }
        bad |= !isfinite(g[k][i]);
        d[k][i] *= m;  // the reference zeroes (scales) padding before any reduction
        g[k][i] *= m;
        g_acc = norm_combine(p.norm, g_acc, norm_term(p.norm, g[k][i]));
      }
    }
    flag_nonfinite(p, bad);
    const GroupCoeffs c = group_coeffs(p, row);
    float g_denominator = 1.f;
    if (p.update == AdvUpdate::kProject) {
      g_denominator = safe_norm(norm_finish(p.norm, block_reduce(p.norm, g_acc, scratch)));
    }
    // u overwrites d in registers.
    const AdvNorm u_norm_kind = p.update == AdvUpdate::kProject ? AdvNorm::kL2 : p.norm;
    float u_acc = 0.f;
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        d[k][i] = ascent(p, c, d[k][i], g[k][i], g_denominator);
        u_acc = norm_combine(u_norm_kind, u_acc, norm_term(u_norm_kind, d[k][i]));
      }
    }
    float u_norm = 0.f;
    if (needs_u_norm(p)) u_norm = norm_finish(u_norm_kind, block_reduce(u_norm_kind, u_acc, scratch));
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      const int64_t v = threadIdx.x + static_cast<int64_t>(k) * blockDim.x;
      if (v < nvec) {
        float result[VEC];
#pragma unroll
        for (int i = 0; i < VEC; ++i) result[i] = finish(p, c, d[k][i], u_norm) * m;
        store_vec<T, VEC>(out + v * VEC, result);
      }
    }
  }
}

// ---------------------------------------------------------------- grouped path
// Stage of a partial-norm pass over one row.
enum class PartialStage : int {
  kGradNorm = 0,  // project: ||m g|| contributions
  kStepNorm = 1,  // normalize: ||m d + eta m g|| contributions
  kProjectL2 = 2, // project/l2: ||u||_2 contributions, given the group's ||g||
};

template <typename T, int VEC>
__global__ void __launch_bounds__(kStreamThreads)
adv_project_partial_kernel(const AdvProjectParams p, PartialStage stage, const float* g_norm,
                           float* partial) {
  __shared__ float scratch[kWarp + 1];
  const int64_t nvec = p.hidden / VEC;
  const AdvNorm kind = stage == PartialStage::kProjectL2 ? AdvNorm::kL2 : p.norm;
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    const float m = p.mask != nullptr ? p.mask[row] : 1.f;
    if (m == 0.f) {
      if (threadIdx.x == 0) partial[row] = 0.f;
      continue;
    }
    const int64_t group = row / p.group_rows;
    const GroupCoeffs c = group_coeffs(p, group);
    const float g_denominator = stage == PartialStage::kProjectL2 ? safe_norm(g_norm[group]) : 1.f;
    const T* dp = row_ptr<T>(p.delta, row, p.delta_row_stride);
    const T* gp = row_ptr<T>(p.grad, row, p.grad_row_stride);
    float acc = 0.f;
    for (int64_t v = threadIdx.x; v < nvec; v += blockDim.x) {
      float g[VEC];
      float d[VEC] = {};
      load_vec<T, VEC>(gp + v * VEC, g);
      if (stage != PartialStage::kGradNorm) load_vec<T, VEC>(dp + v * VEC, d);
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        float x = g[i] * m;
        if (stage != PartialStage::kGradNorm) x = ascent(p, c, d[i] * m, x, g_denominator);
        acc = norm_combine(kind, acc, norm_term(kind, x));
      }
    }
    acc = block_reduce(kind, acc, scratch);
    if (threadIdx.x == 0) partial[row] = acc;
  }
}

// One block per group: combines its rows' partials in a fixed order (deterministic).
__global__ void __launch_bounds__(kStreamThreads)
adv_project_group_reduce_kernel(const float* partial, int64_t groups, int64_t group_rows,
                                AdvNorm kind, float* group_norm) {
  __shared__ float scratch[kWarp + 1];
  for (int64_t group = blockIdx.x; group < groups; group += gridDim.x) {
    float acc = 0.f;
    for (int64_t r = threadIdx.x; r < group_rows; r += blockDim.x) {
      acc = norm_combine(kind, acc, partial[group * group_rows + r]);
    }
    acc = block_reduce(kind, acc, scratch);
    if (threadIdx.x == 0) group_norm[group] = norm_finish(kind, acc);
  }
}

template <typename T, int VEC>
__global__ void __launch_bounds__(kStreamThreads)
adv_project_write_kernel(const AdvProjectParams p, const float* g_norm, const float* u_norm) {
  const int64_t nvec = p.hidden / VEC;
  for (int64_t row = blockIdx.x; row < p.rows; row += gridDim.x) {
    T* out = static_cast<T*>(p.out) + row * p.out_row_stride;
    const float m = p.mask != nullptr ? p.mask[row] : 1.f;
    if (m == 0.f) {
      float zeros[VEC] = {};
      for (int64_t v = threadIdx.x; v < nvec; v += blockDim.x) store_vec<T, VEC>(out + v * VEC, zeros);
      continue;
    }
    const int64_t group = row / p.group_rows;
    const GroupCoeffs c = group_coeffs(p, group);
    const float g_denominator = g_norm != nullptr ? safe_norm(g_norm[group]) : 1.f;
    const float un = u_norm != nullptr ? u_norm[group] : 0.f;
    const T* dp = row_ptr<T>(p.delta, row, p.delta_row_stride);
    const T* gp = row_ptr<T>(p.grad, row, p.grad_row_stride);
    bool bad = false;
    for (int64_t v = threadIdx.x; v < nvec; v += blockDim.x) {
      float d[VEC];
      float g[VEC];
      load_vec<T, VEC>(dp + v * VEC, d);
      load_vec<T, VEC>(gp + v * VEC, g);
#pragma unroll
      for (int i = 0; i < VEC; ++i) {
        bad |= !isfinite(g[i]);
        const float u = ascent(p, c, d[i] * m, g[i] * m, g_denominator);
        d[i] = finish(p, c, u, un) * m;
      }
      store_vec<T, VEC>(out + v * VEC, d);
    }
    flag_nonfinite(p, bad);
  }
}

// ---------------------------------------------------------------- launcher
int threads_for(int64_t work, int cap) {
  int64_t t = (work + kWarp - 1) / kWarp * kWarp;
  if (t < kWarp) t = kWarp;
  return static_cast<int>(t > cap ? cap : t);
}

unsigned grid_for(int64_t n) {
  const int64_t cap = 2147483647;  // gridDim.x limit; kernels loop over the rest
  return static_cast<unsigned>(n < 1 ? 1 : (n > cap ? cap : n));
}

template <typename T>
int vector_width(const AdvProjectParams& p) {
  constexpr int vec = 16 / sizeof(T);
  const bool aligned =
      p.hidden % vec == 0 && p.delta_row_stride % vec == 0 && p.grad_row_stride % vec == 0 &&
      p.out_row_stride % vec == 0 && reinterpret_cast<uintptr_t>(p.delta) % 16 == 0 &&
      reinterpret_cast<uintptr_t>(p.grad) % 16 == 0 && reinterpret_cast<uintptr_t>(p.out) % 16 == 0;
  return aligned ? vec : 1;
}

// Vectors per thread for the single-pass kernel: the fewest that keep the block at or
// under kTargetThreads (more items = more loads in flight per thread), 0 if the row does
// not fit in one block (the grouped path takes it).
int single_pass_items(int64_t nvec, int vec) {
  int items = 1;
  while (items < kMaxItems && (nvec + items - 1) / items > kTargetThreads) items *= 2;
  return (nvec + items - 1) / items <= single_pass_max_threads(vec, items) ? items : 0;
}

template <typename T, int VEC, int ITEMS>
void launch_single_pass(const AdvProjectParams& p, cudaStream_t stream) {
  const int64_t nvec = p.hidden / VEC;
  const int threads = threads_for((nvec + ITEMS - 1) / ITEMS, single_pass_max_threads(VEC, ITEMS));
  adv_project_single_pass_kernel<T, VEC, ITEMS><<<grid_for(p.rows), threads, 0, stream>>>(p);
}

template <typename T, int VEC>
void launch_grouped(const AdvProjectParams& p, cudaStream_t stream) {
  const int64_t nvec = p.hidden / VEC;
  const int64_t groups = p.rows / p.group_rows;
  const int threads = threads_for(nvec, kStreamThreads);
  const int reduce_threads = threads_for(p.group_rows, kStreamThreads);
  float* partial = p.workspace;                 // [rows]
  float* g_norm = p.workspace + p.rows;         // [groups]
  float* u_norm = g_norm + groups;              // [groups]
  const unsigned grid = grid_for(p.rows);
  const float* g_norm_used = nullptr;
  const float* u_norm_used = nullptr;
  if (p.update == AdvUpdate::kProject) {
    adv_project_partial_kernel<T, VEC><<<grid, threads, 0, stream>>>(p, PartialStage::kGradNorm, nullptr, partial);
    adv_project_group_reduce_kernel<<<grid_for(groups), reduce_threads, 0, stream>>>(
        partial, groups, p.group_rows, p.norm, g_norm);
    g_norm_used = g_norm;
    if (p.norm == AdvNorm::kL2) {
      adv_project_partial_kernel<T, VEC><<<grid, threads, 0, stream>>>(p, PartialStage::kProjectL2, g_norm, partial);
      adv_project_group_reduce_kernel<<<grid_for(groups), reduce_threads, 0, stream>>>(
          partial, groups, p.group_rows, AdvNorm::kL2, u_norm);
      u_norm_used = u_norm;
    }
  } else if (p.norm != AdvNorm::kL1) {
    adv_project_partial_kernel<T, VEC><<<grid, threads, 0, stream>>>(p, PartialStage::kStepNorm, nullptr, partial);
    adv_project_group_reduce_kernel<<<grid_for(groups), reduce_threads, 0, stream>>>(
        partial, groups, p.group_rows, p.norm, u_norm);
    u_norm_used = u_norm;
  }
  adv_project_write_kernel<T, VEC><<<grid, threads, 0, stream>>>(p, g_norm_used, u_norm_used);
}

template <typename T, int VEC>
void launch_typed_vec(const AdvProjectParams& p, cudaStream_t stream) {
  if (!adv_project_is_single_pass(p)) {
    launch_grouped<T, VEC>(p, stream);
    return;
  }
  switch (single_pass_items(p.hidden / VEC, VEC)) {
    case 1: launch_single_pass<T, VEC, 1>(p, stream); break;
    case 2: launch_single_pass<T, VEC, 2>(p, stream); break;
    case 4: launch_single_pass<T, VEC, 4>(p, stream); break;
    default: launch_single_pass<T, VEC, 8>(p, stream); break;
  }
}

template <typename T>
void launch_typed(const AdvProjectParams& p, cudaStream_t stream) {
  constexpr int vec = 16 / sizeof(T);
  if (vector_width<T>(p) == vec) {
    launch_typed_vec<T, vec>(p, stream);
  } else {
    launch_typed_vec<T, 1>(p, stream);
  }
}

int vector_width_of(const AdvProjectParams& p) {
  switch (p.dtype) {
    case AdvDType::kBFloat16: return vector_width<__nv_bfloat16>(p);
    case AdvDType::kFloat16: return vector_width<__half>(p);
    default: return vector_width<float>(p);
  }
}

}  // namespace

const char* adv_project_validate(const AdvProjectParams& p) {
  if (p.rows < 0 || p.hidden < 0) return "rows and hidden must be >= 0";
  if (p.group_rows < 1 || p.rows % p.group_rows != 0) return "rows must be a multiple of group_rows";
  if (p.update == AdvUpdate::kProject && p.norm == AdvNorm::kL1)
    return "norm l1 (sign) exists only for the normalize rule";
  if (p.rows > 0 && p.hidden > 0 && (p.delta == nullptr || p.grad == nullptr || p.out == nullptr))
    return "delta, grad and out must be set";
  if (p.nonfinite == nullptr) return "the non-finite flag must be set";
  if (adv_project_workspace_floats(p) > 0 && p.workspace == nullptr) return "the grouped path needs a workspace";
  return nullptr;
}

bool adv_project_is_single_pass(const AdvProjectParams& p) {
  const int vec = vector_width_of(p);
  return p.group_rows == 1 && single_pass_items(p.hidden / vec, vec) > 0;
}

int64_t adv_project_workspace_floats(const AdvProjectParams& p) {
  if (adv_project_is_single_pass(p)) return 0;
  return p.rows + 2 * (p.rows / (p.group_rows > 0 ? p.group_rows : 1));
}

cudaError_t adv_project_launch(const AdvProjectParams& p, cudaStream_t stream) {
  if (adv_project_validate(p) != nullptr) return cudaErrorInvalidValue;
  cudaError_t err = cudaMemsetAsync(p.nonfinite, 0, 1, stream);
  if (err != cudaSuccess) return err;
  if (p.rows == 0 || p.hidden == 0) return cudaSuccess;
  switch (p.dtype) {
    case AdvDType::kFloat32: launch_typed<float>(p, stream); break;
    case AdvDType::kBFloat16: launch_typed<__nv_bfloat16>(p, stream); break;
    case AdvDType::kFloat16: launch_typed<__half>(p, stream); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace alum_kernels
