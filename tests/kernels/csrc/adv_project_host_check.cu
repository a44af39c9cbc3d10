// Host-side check of the adv_project launcher's path selection, built by
// tests/kernels/test_nvcc_compile.py together with the kernel (no GPU needed: nothing
// here calls the CUDA runtime). Prints one "name value" line per query.
#include <cstdio>

#include "adv_project_kernel.cuh"

using alum_kernels::AdvDType;
using alum_kernels::AdvNorm;
using alum_kernels::AdvProjectParams;
using alum_kernels::AdvUpdate;

namespace {

AdvProjectParams params(int64_t rows, int64_t hidden, int64_t group_rows, AdvDType dtype,
                        bool aligned) {
  // Fake, never dereferenced addresses: 16-byte aligned or deliberately not.
  alignas(16) static char storage[64];
  AdvProjectParams p;
  char* base = storage + (aligned ? 0 : 2);
  p.delta = base;
  p.grad = base;
  p.out = base;
  p.delta_row_stride = p.grad_row_stride = p.out_row_stride = hidden;
  p.rows = rows;
  p.hidden = hidden;
  p.group_rows = group_rows;
  p.dtype = dtype;
  static uint8_t flag;
  p.nonfinite = &flag;
  return p;
}

void report(const char* name, const AdvProjectParams& p) {
  std::printf("%s single_pass=%d workspace=%lld\n", name,
              alum_kernels::adv_project_is_single_pass(p) ? 1 : 0,
              static_cast<long long>(alum_kernels::adv_project_workspace_floats(p)));
}

}  // namespace

int main() {
  report("token_h768_bf16", params(16384, 768, 1, AdvDType::kBFloat16, true));
  report("token_h4096_fp32", params(16384, 4096, 1, AdvDType::kFloat32, true));
  report("token_h769_fp32", params(10, 769, 1, AdvDType::kFloat32, true));
  report("token_h4096_fp32_unaligned", params(10, 4096, 1, AdvDType::kFloat32, false));
  report("token_h8209_fp16", params(10, 8209, 1, AdvDType::kFloat16, true));
  report("token_h16384_bf16", params(10, 16384, 1, AdvDType::kBFloat16, true));
  report("sequence_b4_t5_h13", params(20, 13, 5, AdvDType::kFloat32, true));
  AdvProjectParams bad = params(20, 13, 3, AdvDType::kFloat32, true);
  const char* msg = alum_kernels::adv_project_validate(bad);
  std::printf("validate_group_mismatch %s\n", msg ? "rejected" : "accepted");
  AdvProjectParams l1 = params(4, 13, 1, AdvDType::kFloat32, true);
  l1.norm = AdvNorm::kL1;
  l1.update = AdvUpdate::kProject;
  msg = alum_kernels::adv_project_validate(l1);
  std::printf("validate_project_l1 %s\n", msg ? "rejected" : "accepted");
  std::printf("validate_ok %s\n",
              alum_kernels::adv_project_validate(params(4, 13, 1, AdvDType::kFloat32, true)) ? "rejected"
                                                                                               : "accepted");
  return 0;
}
