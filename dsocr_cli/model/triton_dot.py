"""The matrix product both Triton kernels use: exact fp32 in the exactness mode, bf16 tensor cores otherwise."""
from __future__ import annotations

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs never launch a kernel
    triton = None

if triton is not None:
    @triton.jit
    def dot(a, b, IEEE: tl.constexpr):
        """a @ b accumulated in fp32; with IEEE (fp32 inputs) no TF32 rounding of the inputs."""
        if IEEE:
            out = tl.dot(a, b, input_precision="ieee")
        else:
            out = tl.dot(a, b)
        return out
