"""A float16 graph for the CUDA and TensorRT providers, float32 where float16 is not safe.

onnxconverter-common's `convert_float_to_float16` (MIT; optional, `pip install --no-deps
onnxconverter-common`), else the copy that ships inside onnxruntime (onnxruntime.transformers.
float16). Inputs and logits stay float32 (keep_io_types) so callers feed the same arrays.
Constants beyond float16's range are clipped (an attention mask's float32 minimum would
otherwise become -inf, and 0 · -inf = NaN on every attended position). The reductions of a
decomposed LayerNorm stay float32: a sum of squares over 384+ features overflows or loses its
low bits in float16.
"""
from __future__ import annotations

import os
import warnings

FP32_OPS = ("Pow", "ReduceMean", "ReduceSum", "Sqrt", "ReduceL2")


def _converter():
    try:
        from onnxconverter_common import float16

        return float16, "onnxconverter-common"
    except ImportError:
        from onnxruntime.transformers import float16

        return float16, "onnxruntime.transformers.float16"


def convert_fp16(onnx_file: str, out_file: str) -> dict:
    import onnx

    float16, tool = _converter()
    model = onnx.load(onnx_file)
    blocked = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS))
    with warnings.catch_warnings(record=True) as clipped:  # one warning per clipped constant
        warnings.simplefilter("always")
        half = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked,
                                                max_finite_val=1e4)
    onnx.save(half, out_file)
    kept = sorted({n.op_type for n in half.graph.node if n.op_type in FP32_OPS})
    return {"converter": tool, "keep_io_types": True, "float32_ops": kept, "max_finite_val": 1e4,
            "clipped_constants": sum("truncated" in str(w.message) for w in clipped),
            "bytes": {"float32": os.path.getsize(onnx_file), "float16": os.path.getsize(out_file)}}
