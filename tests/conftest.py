"""Loaded before any test module: without a GPU, Triton kernels run in Triton's interpreter on CPU tensors. This must be
set before anything imports triton, and other test modules (through `hybrid_ilrl.kernel`, trl, ...) import it first."""
import os
import torch

if not torch.cuda.is_available(): os.environ.setdefault("TRITON_INTERPRET", "1")
