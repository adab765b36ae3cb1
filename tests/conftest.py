"""Loaded before any test module: without a GPU, Triton kernels run in Triton's interpreter on CPU tensors. This must be
set before anything imports triton, and other test modules (through `hybrid_ilrl.ops`, trl, ...) import it first.

Tests that need a GPU carry the `cuda` marker, so `pytest -m cuda` (scripts/gpu_check.sh) runs just them: either
`@pytest.mark.cuda`, or a `skipif` whose reason names CUDA, as `needs a CUDA GPU` does."""
import os
import pytest
import torch

if not torch.cuda.is_available(): os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (run them alone with `pytest -m cuda`)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any("cuda" in str(m.kwargs.get("reason", "")).lower() for m in item.iter_markers("skipif")):
            item.add_marker(pytest.mark.cuda)
