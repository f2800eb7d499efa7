"""Writes a tiny ONNX model with the Wav2Lip signature, for tests of the lip-sync render path.

Usage: make_tiny_lipsync.py DST

    mel  [B,1,80,16]  (log-mel in [-4, 4], as Wav2Lip normalises it)
    face [B,6,96,96]  (masked face, then the reference face; RGB in 0..1)
 -> out  [B,3,96,96]

It is not a lip-sync model: it darkens an ellipse where the mouth is in the reference face, in
proportion to the audio's mean mel energy, so a test can see audio drive the mouth through the real
batched onnxruntime path (CPU, or CUDA on a GPU machine). The model is checked and run before it
takes its final name.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIDE = 96


def build():
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    # The mouth of a face framed in a square: lower middle.
    ellipse = ((xx - 48.0) / 20.0) ** 2 + ((yy - 68.0) / 9.0) ** 2
    mask = np.clip(1.5 * (1.0 - ellipse), 0.0, 1.0).reshape(1, 1, SIDE, SIDE)
    inits = [
        numpy_helper.from_array(mask.astype(np.float32), "mouth_mask"),
        numpy_helper.from_array(np.array([3], dtype=np.int64), "ref_start"),
        numpy_helper.from_array(np.array([6], dtype=np.int64), "ref_end"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "channel_axis"),
        numpy_helper.from_array(np.array(4.0, dtype=np.float32), "four"),
        numpy_helper.from_array(np.array(0.1, dtype=np.float32), "scale"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("Slice", ["face", "ref_start", "ref_end", "channel_axis"], ["reference"]),
        helper.make_node("ReduceMean", ["mel"], ["energy"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Add", ["energy", "four"], ["shifted"]),
        helper.make_node("Mul", ["shifted", "scale"], ["amount"]),
        helper.make_node("Mul", ["amount", "mouth_mask"], ["dark"]),
        helper.make_node("Sub", ["one", "dark"], ["keep"]),
        helper.make_node("Mul", ["reference", "keep"], ["unclipped"]),
        helper.make_node("Clip", ["unclipped", "zero", "one"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_lipsync",
        [
            helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["B", 1, 80, 16]),
            helper.make_tensor_value_info("face", TensorProto.FLOAT, ["B", 6, SIDE, SIDE]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", 3, SIDE, SIDE])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    return model


def main(dst):
    import onnxruntime as ort

    tmp = dst + ".tmp"
    onnx.save(build(), tmp)
    try:
        session = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
        face = np.full((2, 6, SIDE, SIDE), 0.8, dtype=np.float32)
        mel = np.stack([np.full((1, 80, 16), -4.0), np.full((1, 80, 16), 2.0)]).astype(np.float32)
        (out,) = session.run(None, {"mel": mel, "face": face})
        assert out.shape == (2, 3, SIDE, SIDE), out.shape
        silent, loud = out[0, :, 68, 48], out[1, :, 68, 48]
        assert np.allclose(silent, 0.8), silent
        assert (loud < 0.6).all(), loud
    except BaseException:
        os.remove(tmp)
        raise
    os.replace(tmp, dst)
    print(f"setup: ok: wrote {dst} (a test model with the Wav2Lip signature)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
