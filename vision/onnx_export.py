"""Export a torch image tower to ONNX once, verify it, cache it, and run it with onnxruntime."""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import warnings
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

OPSET = 17
# Largest |onnx - torch| accepted on L2-normalised embeddings when an export is verified; fp32
# kernels differ in summation order, typically by ~1e-6 — 1e-3 catches a wrong graph, not noise.
TOLERANCE = 1e-3
INPUT_NAME = "pixels"
OUTPUT_NAME = "embedding"


def onnxruntime_available() -> bool:
    """True when onnxruntime (and the onnx exporter's dependency, onnx) can be imported."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def onnx_cache_path(cache_dir: Path, model_key: str, input_size: int, opset: int = OPSET) -> Path:
    """Where the graph of one model at one input size and opset is cached."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_key)
    return Path(cache_dir) / "onnx" / f"{safe}-{input_size}px-opset{opset}.onnx"


def export_onnx(module, example, path: Path, opset: int = OPSET) -> dict:
    """Export `module` (batch-dynamic) to `path` atomically; verify it against torch; return the report."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    # A per-process temp name + rename: two workers exporting at once never read half a file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    kwargs = {
        "input_names": [INPUT_NAME],
        "output_names": [OUTPUT_NAME],
        "dynamic_axes": {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        "opset_version": opset,
    }
    # The TorchScript exporter needs no extra package (the dynamo one needs onnxscript) and
    # handles these convolutional/transformer towers; newer torch defaults to dynamo.
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    try:
        # Grad stays enabled: under no_grad, nn.MultiheadAttention takes a fused fast path
        # (aten::_native_multi_head_attention) that has no ONNX export.
        with torch.enable_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exporter chatter about constant folding; verified below
            torch.onnx.export(module, (example,), str(tmp), **kwargs)
        runner = OnnxRunner(tmp, threads=0)
        with torch.inference_mode():
            expected = module(example).float().numpy()
        got = runner(example.numpy())
        diff = float(np.abs(_l2(got) - _l2(expected)).max())
        if not diff <= TOLERANCE:
            raise ValueError(f"exported graph differs from torch by {diff:.2e} > {TOLERANCE:.0e}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    report = {"opset": opset, "max_abs_diff": diff, "tolerance": TOLERANCE, "torch": torch.__version__}
    path.with_suffix(".json").write_text(json.dumps(report, indent=2))
    log.info("exported %s (max |onnx - torch| = %.2e)", path, diff)
    return report


class OnnxRunner:
    """One onnxruntime session on CPU; `runner(batch)` maps (n, 3, H, W) float32 to (n, dim)."""

    def __init__(self, path: Path, threads: int = 0):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(0, int(threads))  # 0 = onnxruntime picks (all cores)
        opts.inter_op_num_threads = 1  # the towers are one chain of ops: no parallel branches to run
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        (out,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)})
        return out


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
