// The fused ALUM perturbation update (docs/algorithm.md, "Update rules"), plain CUDA C++.
//
// No torch header is included here or in adv_project_kernel.cu, so `nvcc -c` compiles the
// kernel body on a machine without a CUDA build of torch (the CI compile check); the torch
// binding (adv_project_binding.cpp) only fills AdvProjectParams from tensors.
//
// The arithmetic is exactly alum/perturbation.py::adv_project (the oracle): rows are
// scaled by the padding mask before any reduction, reductions and the update run in fp32,
// the result is multiplied by the mask again and written in delta's dtype.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

namespace alum_kernels {

// Update rule 1 (`project`) or rule 2 (`normalize`) of docs/algorithm.md.
enum class AdvUpdate : int { kProject = 0, kNormalize = 1 };
// `l1` means the sign of the step and exists for `normalize` only (rule 2).
enum class AdvNorm : int { kInf = 0, kL2 = 1, kL1 = 2 };
// Storage dtype of delta, grad and the output (they share it); compute is always fp32.
enum class AdvDType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

struct AdvProjectParams {
  // [rows, hidden] views; the last dimension has unit stride, rows may be strided.
  const void* delta = nullptr;
  int64_t delta_row_stride = 0;
  const void* grad = nullptr;
  int64_t grad_row_stride = 0;
  void* out = nullptr;
  int64_t out_row_stride = 0;
  // Optional per-row padding mask as fp32 (1 = real token, 0 = padding), [rows].
  const float* mask = nullptr;
  // Optional multiplier of eta, epsilon and radius per norm group, [rows / group_rows]
  // (alum.perturbation.embedding_scale, epsilon_scale="relative").
  const float* scale = nullptr;
  int64_t rows = 0;
  int64_t hidden = 0;
  // Consecutive rows that share one norm: 1 for level="token", the tokens of one
  // sequence for level="sequence" (rows = batch * group_rows).
  int64_t group_rows = 1;
  AdvUpdate update = AdvUpdate::kProject;
  AdvNorm norm = AdvNorm::kInf;
  AdvDType dtype = AdvDType::kFloat32;
  float step_size = 0.f;  // eta
  float epsilon = 0.f;    // radius of the project rule
  float radius = 1.f;     // r of the normalize rule
  // Set to 1 (one byte) when a non-padding row of grad holds NaN or Inf; the caller zeroes
  // it first (adv_project_launch does, with cudaMemsetAsync). docs/algorithm.md: skip such a step.
  uint8_t* nonfinite = nullptr;
  // fp32 scratch of adv_project_workspace_floats(p) elements (grouped path only).
  float* workspace = nullptr;
};

// nullptr when the parameters are usable, else a message naming the problem.
const char* adv_project_validate(const AdvProjectParams& p);

// Whether the single-pass kernel (one block per token row, the row cached in registers)
// handles p; otherwise the grouped multi-phase path runs (sequence level, huge rows).
bool adv_project_is_single_pass(const AdvProjectParams& p);

// Scratch floats the grouped path needs (0 for the single-pass kernel).
int64_t adv_project_workspace_floats(const AdvProjectParams& p);

// Zeroes *p.nonfinite and launches the update on `stream`; returns the launch error.
cudaError_t adv_project_launch(const AdvProjectParams& p, cudaStream_t stream);

}  // namespace alum_kernels
