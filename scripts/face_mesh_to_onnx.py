"""Converts mediapipe's face landmark model (the 468-point face mesh) from TFLite to ONNX, and proves it.

Usage:
  face_mesh_to_onnx.py TFLITE OUT.onnx [--reference JSON] [--draw PNG]
      Converts TFLITE, runs the result with onnxruntime on the reference input and compares it with
      the stored reference output (default: face_mesh_reference.json beside this script). OUT.onnx is
      written only when every value is within the reference's tolerance; otherwise the exit status is
      1 and nothing is written. --draw also saves the reference crop with the 468 points on it.
  face_mesh_to_onnx.py --make-reference TFLITE JSON
      Computes the reference with the real TFLite runtime (needs `pip install ai-edge-litert`, which
      the set-up venv does not have: this was run once, by hand, and JSON is committed).

Why a converter of its own: ort reads no TFLite, and the ready-made converter tflite2onnx 0.4.1
crashes on this model (its weights are fp16 constants behind DEQUANTIZE ops, and its layout
propagation fails on them). The model uses only seven ops, so this script reads the .tflite with the
`tflite` package (a pure-Python reader of the flatbuffer schema) and writes the ONNX graph itself with
onnx.helper. Any other op stops it with a clear message.

The model (mediapipe 0.10.14, mediapipe/modules/face_landmark/face_landmark.tflite):
  input   `input_1`    [1,192,192,3] float32, NHWC, RGB scaled to [0,1] (mediapipe's face_landmark_cpu
                       graph: ImageToTensorCalculator with output_tensor_float_range 0..1)
  outputs `conv2d_21`  [1,1,1,1404]  468 x (x, y, z), x and y in pixels of the 192x192 input
          `conv2d_31`  [1,1,1,1]     face presence logit (mediapipe applies a sigmoid, threshold 0.5)
The ONNX model keeps the NHWC input and flattens the outputs:
  input   `input`      [1,192,192,3] float32 NHWC, RGB in [0,1]
  outputs `landmarks`  [1,1404] float32
          `face_flag`  [1,1] float32 (a logit)

How the ops map (ONNX works in NCHW, TFLite in NHWC; the input is transposed once at the start, the
outputs back at the end):
  DEQUANTIZE          fp16 constant -> fp32 initializer (no node)
  CONV_2D             Conv, weights OHWI -> OIHW
  DEPTHWISE_CONV_2D   Conv with group = input channels, weights [1,H,W,C*M] -> [C*M,1,H,W]
  PRELU               PRelu, alpha [..,C] -> [1,C,1,1]
  ADD                 Add
  MAX_POOL_2D         MaxPool
  PAD                 Pad, NHWC paddings -> ONNX pads in NCHW
TF's SAME padding puts the odd pixel at the bottom/right; it is written as explicit pads computed
from the static shapes. Fused activations NONE, RELU and RELU6 become a node after the op.
"""
import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 8  # the IR version that goes with opset 13; read by every onnxruntime since 1.10
INPUT_SIZE = 192
DEFAULT_REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "face_mesh_reference.json")
# tflite output tensor name -> ONNX output name
OUTPUTS = {"conv2d_21": "landmarks", "conv2d_31": "face_flag"}


def fail(message):
    sys.exit(f"face_mesh_to_onnx: error: {message}")


# ---------------------------------------------------------------------------------------------
# The reference input: a fixed crop of scikit-image's astronaut photo, resized in plain numpy so
# that every run (the reference's, set-up's) feeds the model the same float32 values.

def bilinear_resize(image, height, width):
    """Bilinear resize of an HxWxC array with half-pixel centres and edge clamping, in float64
    (the same sampling as OpenCV's INTER_LINEAR when enlarging). Returns float64."""
    src = image.astype(np.float64)
    in_h, in_w = src.shape[:2]

    def axis(out_size, in_size):
        pos = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
        pos = np.clip(pos, 0.0, in_size - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, in_size - 1)
        return lo, hi, pos - lo

    y0, y1, fy = axis(height, in_h)
    x0, x1, fx = axis(width, in_w)
    fy = fy[:, None, None]
    fx = fx[None, :, None]
    top = src[y0][:, x0] * (1.0 - fx) + src[y0][:, x1] * fx
    bottom = src[y1][:, x0] * (1.0 - fx) + src[y1][:, x1] * fx
    return top * (1.0 - fy) + bottom * fy


def reference_input(reference):
    """Returns (the uint8 crop, the model input [1,192,192,3] float32 RGB in [0,1])."""
    import skimage.data

    image = skimage.data.astronaut()
    if image.shape != (512, 512, 3) or image.dtype != np.uint8:
        fail(f"skimage.data.astronaut() is {image.shape} {image.dtype}, expected (512, 512, 3) uint8")
    box = reference["crop"]
    crop = image[box["y0"]:box["y1"], box["x0"]:box["x1"]]
    resized = bilinear_resize(crop, INPUT_SIZE, INPUT_SIZE)
    tensor = (resized / 255.0).astype(np.float32)[None]
    return crop, tensor


# ---------------------------------------------------------------------------------------------
# Reading the .tflite

class TfliteGraph:
    """The first subgraph of a .tflite file: tensor names, shapes, constants, and the operators."""

    def __init__(self, data):
        import tflite

        self.tflite = tflite
        model = tflite.Model.GetRootAsModel(data, 0)
        if model.SubgraphsLength() != 1:
            fail(f"expected 1 subgraph, found {model.SubgraphsLength()}")
        graph = model.Subgraphs(0)
        dtypes = {tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.FLOAT16: np.float16,
                  tflite.TensorType.INT32: np.int32, tflite.TensorType.INT64: np.int64}
        self.names, self.shapes, self.types, self.consts = [], [], [], {}
        for i in range(graph.TensorsLength()):
            tensor = graph.Tensors(i)
            name = tensor.Name().decode()
            self.names.append(name if name not in self.names else f"{name}#{i}")
            shape = tensor.ShapeAsNumpy().tolist() if tensor.ShapeLength() else []
            self.shapes.append(shape)
            self.types.append(tensor.Type())
            buffer = model.Buffers(tensor.Buffer())
            if buffer.Offset() > 1:
                fail(f"tensor {name}: weights stored outside the flatbuffer are not supported")
            if buffer.DataLength() > 0:
                if tensor.Type() not in dtypes:
                    fail(f"constant {name} has unsupported tensor type {tensor.Type()}")
                raw = buffer.DataAsNumpy().tobytes()
                self.consts[i] = np.frombuffer(raw, dtype=np.dtype(dtypes[tensor.Type()]).newbyteorder("<")) \
                    .astype(dtypes[tensor.Type()]).reshape(shape)
        self.inputs = [graph.Inputs(i) for i in range(graph.InputsLength())]
        self.outputs = [graph.Outputs(i) for i in range(graph.OutputsLength())]
        names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
        self.ops = []
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            opcode = model.OperatorCodes(op.OpcodeIndex())
            # Files of schema version >= 3 keep small op codes in both fields, newer ones in BuiltinCode.
            code = max(opcode.BuiltinCode(), opcode.DeprecatedBuiltinCode())
            self.ops.append({
                "index": i,
                "type": names.get(code, f"builtin op {code}"),
                "inputs": [op.Inputs(j) for j in range(op.InputsLength())],
                "outputs": [op.Outputs(j) for j in range(op.OutputsLength())],
                "options": op.BuiltinOptions(),
            })

    def options(self, op, cls):
        """The op's builtin options table read as tflite.<cls>."""
        table = op["options"]
        if table is None:
            fail(f"op {op['index']} ({op['type']}) has no options")
        options = getattr(self.tflite, cls)()
        options.Init(table.Bytes, table.Pos)
        return options


# ---------------------------------------------------------------------------------------------
# Conversion

def same_pads(in_size, kernel, stride, dilation):
    """TF's SAME padding along one axis: (before, after), the larger half after."""
    out_size = -(-in_size // stride)
    effective = (kernel - 1) * dilation + 1
    total = max((out_size - 1) * stride + effective - in_size, 0)
    return total // 2, total - total // 2


class Converter:
    SUPPORTED = ("DEQUANTIZE", "CONV_2D", "DEPTHWISE_CONV_2D", "PRELU", "ADD", "MAX_POOL_2D", "PAD")

    def __init__(self, tfl):
        self.tfl = tfl
        self.consts = dict(tfl.consts)  # tensor index -> numpy array (fp32 after DEQUANTIZE)
        self.nodes = []
        self.initializers = []
        self.act = tfl.tflite.ActivationFunctionType

    # helpers ------------------------------------------------------------------------------
    def name(self, index):
        return self.tfl.names[index]

    def const(self, op, index, what):
        if index < 0 or index not in self.consts:
            fail(f"op {op['index']} ({op['type']}): its {what} ({self.name(index) if index >= 0 else 'none'}) "
                 "is not a constant")
        return self.consts[index]

    def initializer(self, name, array):
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def activation_input(self, op, index):
        """The ONNX name of an activation (NCHW) input, or an initializer for a constant one."""
        if index not in self.consts:
            return self.name(index)
        value = self.consts[index].astype(np.float32)
        if value.ndim == 4:
            value = value.transpose(0, 3, 1, 2)
        elif value.ndim == 1 and value.size > 1:  # per-channel
            value = value.reshape(1, -1, 1, 1)
        elif value.ndim > 1:
            fail(f"op {op['index']} ({op['type']}): constant operand of shape {list(value.shape)} not supported")
        return self.initializer(f"{self.name(index)}/nchw", value)

    def emit(self, op, onnx_op, inputs, activation=0, **attrs):
        """Adds the node for `op` (output named as the tflite tensor) and its fused activation."""
        out = self.name(op["outputs"][0])
        act = self.act
        if activation == act.NONE:
            self.nodes.append(helper.make_node(onnx_op, inputs, [out], name=out, **attrs))
            return
        pre = f"{out}/pre_activation"
        self.nodes.append(helper.make_node(onnx_op, inputs, [pre], name=pre, **attrs))
        if activation == act.RELU:
            self.nodes.append(helper.make_node("Relu", [pre], [out], name=f"{out}/relu"))
        elif activation == act.RELU6:
            lo = self.initializer(f"{out}/relu6_min", np.array(0.0, np.float32))
            hi = self.initializer(f"{out}/relu6_max", np.array(6.0, np.float32))
            self.nodes.append(helper.make_node("Clip", [pre, lo, hi], [out], name=f"{out}/relu6"))
        else:
            fail(f"op {op['index']} ({op['type']}): fused activation {activation} is not supported")

    def spatial(self, op, kernel_h, kernel_w, padding, stride_h, stride_w, dil_h=1, dil_w=1):
        """Conv/pool attributes with TF's padding made explicit (ONNX pads: top, left, bottom, right)."""
        shape = self.tfl.shapes[op["inputs"][0]]
        if len(shape) != 4:
            fail(f"op {op['index']} ({op['type']}): input rank {len(shape)}, expected 4 (NHWC)")
        if padding == self.tfl.tflite.Padding.SAME:
            top, bottom = same_pads(shape[1], kernel_h, stride_h, dil_h)
            left, right = same_pads(shape[2], kernel_w, stride_w, dil_w)
        elif padding == self.tfl.tflite.Padding.VALID:
            top = bottom = left = right = 0
        else:
            fail(f"op {op['index']} ({op['type']}): padding {padding} is not supported")
        return {"kernel_shape": [kernel_h, kernel_w], "strides": [stride_h, stride_w],
                "pads": [top, left, bottom, right]}

    # the ops ------------------------------------------------------------------------------
    def op_DEQUANTIZE(self, op):
        value = self.const(op, op["inputs"][0], "input")
        if value.dtype != np.float16:
            fail(f"op {op['index']} (DEQUANTIZE): only fp16 constants are supported, found {value.dtype}")
        self.consts[op["outputs"][0]] = value.astype(np.float32)

    def conv_bias(self, op, channels):
        if len(op["inputs"]) < 3 or op["inputs"][2] < 0:
            return []
        bias = self.const(op, op["inputs"][2], "bias").astype(np.float32).reshape(channels)
        return [self.initializer(f"{self.name(op['inputs'][2])}/bias", bias)]

    def op_CONV_2D(self, op):
        o = self.tfl.options(op, "Conv2DOptions")
        weights = self.const(op, op["inputs"][1], "weights").astype(np.float32)  # OHWI
        out_c, kh, kw, _ = weights.shape
        attrs = self.spatial(op, kh, kw, o.Padding(), o.StrideH(), o.StrideW(), o.DilationHFactor(), o.DilationWFactor())
        w = self.initializer(f"{self.name(op['inputs'][1])}/oihw", weights.transpose(0, 3, 1, 2))
        inputs = [self.activation_input(op, op["inputs"][0]), w] + self.conv_bias(op, out_c)
        self.emit(op, "Conv", inputs, o.FusedActivationFunction(),
                  dilations=[o.DilationHFactor(), o.DilationWFactor()], **attrs)

    def op_DEPTHWISE_CONV_2D(self, op):
        o = self.tfl.options(op, "DepthwiseConv2DOptions")
        weights = self.const(op, op["inputs"][1], "weights").astype(np.float32)  # [1, H, W, C*M]
        _, kh, kw, out_c = weights.shape
        in_c = self.tfl.shapes[op["inputs"][0]][3]
        if out_c % in_c:
            fail(f"op {op['index']} (DEPTHWISE_CONV_2D): {out_c} output channels for {in_c} input channels")
        attrs = self.spatial(op, kh, kw, o.Padding(), o.StrideH(), o.StrideW(), o.DilationHFactor(), o.DilationWFactor())
        w = self.initializer(f"{self.name(op['inputs'][1])}/m1hw", weights.transpose(3, 0, 1, 2))
        inputs = [self.activation_input(op, op["inputs"][0]), w] + self.conv_bias(op, out_c)
        self.emit(op, "Conv", inputs, o.FusedActivationFunction(), group=in_c,
                  dilations=[o.DilationHFactor(), o.DilationWFactor()], **attrs)

    def op_PRELU(self, op):
        alpha = self.const(op, op["inputs"][1], "alpha").astype(np.float32)
        if alpha.ndim > 4:
            fail(f"op {op['index']} (PRELU): alpha of rank {alpha.ndim}")
        alpha = alpha.reshape((1,) * (4 - alpha.ndim) + alpha.shape).transpose(0, 3, 1, 2)  # NHWC -> NCHW
        slope = self.initializer(f"{self.name(op['inputs'][1])}/nchw", alpha)
        self.emit(op, "PRelu", [self.activation_input(op, op["inputs"][0]), slope])

    def op_ADD(self, op):
        o = self.tfl.options(op, "AddOptions")
        inputs = [self.activation_input(op, i) for i in op["inputs"]]
        self.emit(op, "Add", inputs, o.FusedActivationFunction())

    def op_MAX_POOL_2D(self, op):
        o = self.tfl.options(op, "Pool2DOptions")
        attrs = self.spatial(op, o.FilterHeight(), o.FilterWidth(), o.Padding(), o.StrideH(), o.StrideW())
        self.emit(op, "MaxPool", [self.activation_input(op, op["inputs"][0])], o.FusedActivationFunction(), **attrs)

    def op_PAD(self, op):
        paddings = self.const(op, op["inputs"][1], "paddings").astype(np.int64)  # [[before, after]] x NHWC
        if paddings.shape != (4, 2):
            fail(f"op {op['index']} (PAD): paddings of shape {list(paddings.shape)}, expected [4, 2]")
        nchw = paddings[[0, 3, 1, 2]]
        pads = self.initializer(f"{self.name(op['inputs'][1])}/onnx_pads", np.concatenate([nchw[:, 0], nchw[:, 1]]))
        self.emit(op, "Pad", [self.activation_input(op, op["inputs"][0]), pads], mode="constant")

    # the graph ----------------------------------------------------------------------------
    def convert(self):
        tfl = self.tfl
        unsupported = sorted({op["type"] for op in tfl.ops if op["type"] not in self.SUPPORTED})
        if unsupported:
            fail(f"the model uses ops this converter does not handle: {', '.join(unsupported)} "
                 f"(it handles {', '.join(self.SUPPORTED)})")
        if len(tfl.inputs) != 1:
            fail(f"expected 1 input, found {len(tfl.inputs)}")
        src = tfl.inputs[0]
        in_shape = tfl.shapes[src]
        if len(in_shape) != 4:
            fail(f"input {tfl.names[src]} has shape {in_shape}, expected NHWC")
        self.nodes.append(helper.make_node("Transpose", ["input"], [tfl.names[src]], name="input/nchw", perm=[0, 3, 1, 2]))
        for op in tfl.ops:
            getattr(self, f"op_{op['type']}")(op)

        outputs = []
        for index in tfl.outputs:
            tname = tfl.names[index]
            if tname not in OUTPUTS:
                fail(f"unexpected output {tname} (expected {', '.join(OUTPUTS)})")
            shape = tfl.shapes[index]
            size = int(np.prod(shape[1:]))
            # Back to NHWC before flattening, so the values come out in the tflite tensor's order.
            nhwc = f"{tname}/nhwc"
            self.nodes.append(helper.make_node("Transpose", [tname], [nhwc], name=nhwc, perm=[0, 2, 3, 1]))
            flat = self.initializer(f"{tname}/flat_shape", np.array([shape[0], size], np.int64))
            self.nodes.append(helper.make_node("Reshape", [nhwc, flat], [OUTPUTS[tname]], name=OUTPUTS[tname]))
            outputs.append(helper.make_tensor_value_info(OUTPUTS[tname], TensorProto.FLOAT, [shape[0], size]))

        graph = helper.make_graph(
            self.nodes, "face_landmark",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
            outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="avatar-supervisor scripts/face_mesh_to_onnx.py")
        model.ir_version = IR_VERSION
        model.doc_string = ("mediapipe 0.10.14 face_landmark.tflite (468-point face mesh). input: [1,192,192,3] "
                            "float32 NHWC RGB in [0,1]; landmarks: [1,1404] = 468 x (x, y, z) in pixels of the "
                            "192x192 input; face_flag: [1,1] face presence logit (sigmoid > 0.5: a face)")
        onnx.checker.check_model(model, full_check=True)
        return model


# ---------------------------------------------------------------------------------------------
# Verification against the stored reference

def run_onnx(model_bytes, tensor):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    landmarks, flag = session.run(["landmarks", "face_flag"], {"input": tensor})
    return landmarks.reshape(-1), float(flag.reshape(-1)[0])


def draw(path, crop, landmarks):
    """Saves the crop, scaled up 3x, with each landmark as a small dot (labelled indices in red)."""
    import skimage.io

    scale = 3
    canvas = np.repeat(np.repeat(crop, scale, axis=0), scale, axis=1).copy()
    h, w = canvas.shape[:2]
    points = landmarks.reshape(-1, 3)[:, :2] * (crop.shape[1] / INPUT_SIZE) * scale
    marked = {13, 14, 61, 291, 0, 17, 33, 133, 362, 263, 159, 145, 386, 374}
    for index, (x, y) in enumerate(points):
        colour, r = ((255, 0, 0), 3) if index in marked else ((0, 255, 0), 1)
        xi, yi = int(round(x)), int(round(y))
        canvas[max(yi - r, 0):min(yi + r + 1, h), max(xi - r, 0):min(xi + r + 1, w)] = colour
    skimage.io.imsave(path, canvas, check_contrast=False)


def convert_and_verify(tflite_path, out_path, reference_path, draw_path=None):
    started = time.monotonic()
    with open(reference_path) as f:
        reference = json.load(f)
    with open(tflite_path, "rb") as f:
        data = f.read()
    model = Converter(TfliteGraph(data)).convert()
    model_bytes = model.SerializeToString()

    crop, tensor = reference_input(reference)
    landmarks, flag = run_onnx(model_bytes, tensor)
    if draw_path:
        draw(draw_path, crop, landmarks)
    expected = np.array(reference["landmarks"], dtype=np.float64)
    if landmarks.shape != expected.shape:
        fail(f"the ONNX model gives {landmarks.size} landmark values, the reference has {expected.size}; "
             f"{out_path} not written")
    error = np.abs(landmarks.astype(np.float64) - expected)
    worst = int(np.argmax(error))
    flag_error = abs(flag - reference["face_flag_logit"])
    tolerance = reference["tolerance_px"]
    if error[worst] > tolerance or flag_error > reference["tolerance_flag"]:
        fail(f"the converted model disagrees with the reference {os.path.basename(reference_path)}: "
             f"max landmark error {error[worst]:.4f} px at value {worst} (landmark {worst // 3}, "
             f"{'xyz'[worst % 3]}: {landmarks[worst]:.3f}, expected {expected[worst]:.3f}; tolerance "
             f"{tolerance} px), face flag logit {flag:.4f} against {reference['face_flag_logit']:.4f}; "
             f"{out_path} not written")
    tmp = f"{out_path}.tmp"
    with open(tmp, "wb") as f:
        f.write(model_bytes)
    os.replace(tmp, out_path)
    print(f"setup: ok: face mesh converted and verified in {time.monotonic() - started:.1f} s: "
          f"max landmark error {error[worst]:.4f} px (tolerance {tolerance}), face flag "
          f"logit {flag:.2f} (sigmoid {1 / (1 + np.exp(-flag)):.4f}) -> {out_path}")


def make_reference(tflite_path, json_path):
    """Runs the .tflite with the real TFLite runtime (ai-edge-litert) on the reference input."""
    from ai_edge_litert.interpreter import Interpreter

    crop_box = {"x0": 135, "y0": 35, "x1": 315, "y1": 215}
    reference = {"crop": crop_box}
    crop, tensor = reference_input(reference)
    interpreter = Interpreter(model_path=tflite_path)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor)
    interpreter.invoke()
    out = {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}
    landmarks = out["conv2d_21"].reshape(-1)
    flag = float(out["conv2d_31"].reshape(-1)[0])
    import importlib.metadata as md

    with open(tflite_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    document = {
        "about": "Output of mediapipe 0.10.14's face_landmark.tflite under the real TFLite runtime, the "
                 "reference that scripts/face_mesh_to_onnx.py checks its ONNX conversion against. "
                 "Made with: face_mesh_to_onnx.py --make-reference TFLITE JSON",
        "tflite_sha256": digest,
        "runtime": f"ai-edge-litert {md.version('ai-edge-litert')}, numpy {np.__version__}",
        "image": "skimage.data.astronaut() (512x512 RGB uint8), cropped to rows y0..y1-1, columns x0..x1-1",
        "crop": crop_box,
        "resize": "to 192x192: bilinear, half-pixel centres, edge-clamped, in float64 (bilinear_resize)",
        "normalisation": "float32(resized / 255): RGB in [0,1], NHWC [1,192,192,3]",
        "tolerance_px": 0.05,
        "tolerance_flag": 0.05,
        "face_flag_logit": round(flag, 4),
        "landmarks_layout": "468 x (x, y, z), x and y in pixels of the 192x192 input, rounded to 3 decimals",
        "landmarks": [round(float(v), 3) for v in landmarks],
    }
    text = json.dumps(document, indent=1)
    # One landmark (x, y, z) a line keeps the file readable.
    values = ",\n".join("  " + ", ".join(json.dumps(v) for v in document["landmarks"][i:i + 3])
                        for i in range(0, len(landmarks), 3))
    head = text[:text.index('"landmarks": [')]
    with open(json_path, "w") as f:
        f.write(f'{head}"landmarks": [\n{values}\n ]\n}}\n')
    print(f"reference written to {json_path}: face flag logit {flag:.4f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tflite")
    parser.add_argument("out", help="the ONNX file to write (or, with --make-reference, the JSON)")
    parser.add_argument("--reference", default=DEFAULT_REFERENCE)
    parser.add_argument("--draw", help="save the reference crop with the converted model's points to this PNG")
    parser.add_argument("--make-reference", action="store_true")
    args = parser.parse_args()
    if args.make_reference:
        make_reference(args.tflite, args.out)
    else:
        convert_and_verify(args.tflite, args.out, args.reference, args.draw)


if __name__ == "__main__":
    main()
