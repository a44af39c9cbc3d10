// The torch binding of the fused perturbation update: the CUDA implementation of the
// custom op `alum::adv_project`.
//
// The op's schema, its CPU implementation (the PyTorch reference) and its fake (meta)
// implementation are registered from Python (alum/kernels/adv_project_op.py) before this
// library is loaded, so torch.compile can trace the op whether or not the extension was
// built. This file only adds the CUDA kernel for that schema:
//
//   alum::adv_project(Tensor delta, Tensor grad, Tensor? mask, Tensor? scale, str update,
//                     str norm, str level, float step_size, float epsilon, float radius)
//                     -> (Tensor new_delta, Tensor nonfinite)
//
// It is loaded with torch.ops.load_library (no Python module), built just in time by
// torch.utils.cpp_extension.load or ahead of time by setup.py.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <string>
#include <tuple>
#include <vector>

#include "adv_project_kernel.cuh"

namespace {

using alum_kernels::AdvDType;
using alum_kernels::AdvNorm;
using alum_kernels::AdvProjectParams;
using alum_kernels::AdvUpdate;

// Row stride of x seen as [rows, hidden] without a copy, or -1 when its leading dimensions
// do not collapse into one strided row dimension (then the caller makes it contiguous).
int64_t collapsed_row_stride(const at::Tensor& x) {
  const int64_t dim = x.dim();
  if (x.size(dim - 1) > 1 && x.stride(dim - 1) != 1) return -1;
  if (dim == 1) return x.size(0);
  for (int64_t i = 0; i < dim - 2; ++i) {
    if (x.size(i) > 1 && x.stride(i) != x.stride(i + 1) * x.size(i + 1)) return -1;
  }
  return x.stride(dim - 2);
}

at::Tensor as_rows(const at::Tensor& x, int64_t* row_stride) {
  int64_t stride = collapsed_row_stride(x);
  if (stride < 0) {
    at::Tensor c = x.contiguous();
    *row_stride = collapsed_row_stride(c);
    return c;
  }
  *row_stride = stride;
  return x;
}

AdvDType dtype_of(const at::Tensor& x) {
  switch (x.scalar_type()) {
    case at::kFloat: return AdvDType::kFloat32;
    case at::kBFloat16: return AdvDType::kBFloat16;
    case at::kHalf: return AdvDType::kFloat16;
    default: TORCH_CHECK(false, "alum::adv_project (CUDA) takes float32, bfloat16 or float16, got ",
                         x.scalar_type());
  }
}

AdvUpdate update_of(c10::string_view s) {
  if (s == "project") return AdvUpdate::kProject;
  TORCH_CHECK(s == "normalize", "alum::adv_project: unknown update rule ", std::string(s));
  return AdvUpdate::kNormalize;
}

AdvNorm norm_of(c10::string_view s) {
  if (s == "inf") return AdvNorm::kInf;
  if (s == "l2") return AdvNorm::kL2;
  TORCH_CHECK(s == "l1", "alum::adv_project: unknown norm ", std::string(s));
  return AdvNorm::kL1;
}

std::tuple<at::Tensor, at::Tensor> adv_project_cuda(
    const at::Tensor& delta, const at::Tensor& grad, const c10::optional<at::Tensor>& mask,
    const c10::optional<at::Tensor>& scale, c10::string_view update, c10::string_view norm,
    c10::string_view level, double step_size, double epsilon, double radius) {
  TORCH_CHECK(delta.is_cuda() && grad.is_cuda(), "alum::adv_project (CUDA) needs CUDA tensors");
  TORCH_CHECK(delta.sizes() == grad.sizes(), "delta shape ", delta.sizes(), " != grad shape ",
              grad.sizes());
  TORCH_CHECK(delta.scalar_type() == grad.scalar_type(),
              "alum::adv_project (CUDA) needs delta and grad of one dtype");
  TORCH_CHECK(delta.dim() >= 1, "delta needs a hidden dimension");
  const bool sequence = level == "sequence";
  TORCH_CHECK(sequence || level == "token", "alum::adv_project: unknown level ", std::string(level));
  TORCH_CHECK(!sequence || delta.dim() >= 2, "level='sequence' needs a [batch, ..., hidden] tensor");
  const c10::cuda::OptionalCUDAGuard guard(delta.device());

  const int64_t hidden = delta.size(-1);
  const int64_t rows = hidden > 0 ? delta.numel() / hidden : 0;
  const int64_t batch = sequence ? delta.size(0) : rows;
  const int64_t group_rows = sequence ? (batch > 0 ? rows / batch : 1) : 1;

  AdvProjectParams p;
  at::Tensor d = as_rows(delta, &p.delta_row_stride);
  at::Tensor g = as_rows(grad, &p.grad_row_stride);
  at::Tensor out = at::empty(delta.sizes(), delta.options().memory_format(at::MemoryFormat::Contiguous));
  at::Tensor nonfinite = at::empty({}, delta.options().dtype(at::kBool));
  p.out_row_stride = hidden;
  p.delta = d.data_ptr();
  p.grad = g.data_ptr();
  p.out = out.data_ptr();
  p.nonfinite = reinterpret_cast<uint8_t*>(nonfinite.data_ptr());

  // The mask and scale as fp32 per row / per group: tiny next to delta and grad.
  at::Tensor mask_f;
  if (mask.has_value()) {
    std::vector<int64_t> rows_shape(delta.sizes().begin(), delta.sizes().end() - 1);
    TORCH_CHECK(mask->sizes() == at::IntArrayRef(rows_shape), "mask shape ", mask->sizes(),
                " must equal the perturbation's shape without its hidden dimension");
    mask_f = mask->to(delta.device(), at::kFloat).contiguous();
    p.mask = mask_f.data_ptr<float>();
  }
  at::Tensor scale_f;
  if (scale.has_value()) {
    TORCH_CHECK(scale->numel() == batch, "scale must hold one value per ",
                sequence ? "sequence" : "row", " (", batch, "), got ", scale->numel());
    scale_f = scale->to(delta.device(), at::kFloat).contiguous();
    p.scale = scale_f.data_ptr<float>();
  }
  p.rows = rows;
  p.hidden = hidden;
  p.group_rows = group_rows;
  p.update = update_of(update);
  p.norm = norm_of(norm);
  p.dtype = dtype_of(delta);
  p.step_size = static_cast<float>(step_size);
  p.epsilon = static_cast<float>(epsilon);
  p.radius = static_cast<float>(radius);

  at::Tensor workspace;
  const int64_t workspace_floats = alum_kernels::adv_project_workspace_floats(p);
  if (workspace_floats > 0) {
    workspace = at::empty({workspace_floats}, delta.options().dtype(at::kFloat));
    p.workspace = workspace.data_ptr<float>();
  }
  const char* problem = alum_kernels::adv_project_validate(p);
  TORCH_CHECK(problem == nullptr, "alum::adv_project: ", problem ? problem : "");
  const cudaError_t err = alum_kernels::adv_project_launch(p, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, "alum::adv_project launch failed: ", cudaGetErrorString(err));
  return {out, nonfinite};
}

}  // namespace

TORCH_LIBRARY_IMPL(alum, CUDA, m) {
  m.impl("adv_project", &adv_project_cuda);
}
