"""An ONNX ResNet that looks like another exporter's (tf2onnx / Keras style), built with onnx.helper.

What such files bring and deployres' cleanup has to take apart:

- an NHWC input (dynamic batch) with a ``Transpose`` to NCHW, and the same
  Transpose repeated for each reader (duplicate nodes);
- BatchNorm as ``Sub(mean) -> Mul(scale) -> Add(shift)`` with per-channel
  constants after a bias-less Conv;
- no-op Casts (float -> float, int64 -> int64) all over the graph;
- "SAME" padding computed at run time from the input's shape:
  ``Shape -> Gather -> Sub/Div/Max... -> Concat -> Pad`` before a Conv;
- back-to-back Transposes that cancel (NCHW -> NHWC -> NCHW) or compose;
- a flatten whose target shape is ``Concat(Shape(x)[0], Shape(x)[1])``.

:func:`foreign_resnet` builds it at any size (tests use a small one, the
benchmark a 224x224 one).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64


class _Builder:
    def __init__(self, seed: int) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(seed)
        self._count = 0

    def name(self, base: str) -> str:
        self._count += 1
        return f"{base}_{self._count}"

    def const(self, base: str, values) -> str:
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.asarray(values), name))
        return name

    def node(self, op: str, inputs: list[str], base: Optional[str] = None, **attrs) -> str:
        out = self.name(base or op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], self.name(op), **attrs))
        return out

    def cast(self, x: str, to: int) -> str:
        return self.node("Cast", [x], "cast", to=to)

    def same_pads(self, x: str, kernel: int, stride: int) -> str:
        """The 8 Pad amounts of TF's "SAME" padding, computed at run time from ``Shape(x)`` (int64 arithmetic)."""
        shape = self.cast(self.node("Shape", [x], "shape"), INT64)  # a no-op Cast on the shape
        pads = []
        for axis in (2, 3):
            size = self.node("Gather", [shape, self.const("axis", np.array([axis], np.int64))], "size", axis=0)
            out = self.node("Div", [self.node("Add", [size, self.const("s_1", np.array([stride - 1], np.int64))]), self.const("s", np.array([stride], np.int64))], "out")
            need = self.node("Add", [self.node("Mul", [self.node("Sub", [out, self.const("one", np.array([1], np.int64))]), self.const("s", np.array([stride], np.int64))]), self.const("k", np.array([kernel], np.int64))])
            total = self.node("Max", [self.node("Sub", [need, size]), self.const("zero", np.array([0], np.int64))], "total")
            before = self.node("Div", [total, self.const("two", np.array([2], np.int64))], "before")
            pads.append((before, self.node("Sub", [total, before], "after")))
        zeros = self.const("zeros", np.zeros(2, np.int64))
        return self.node("Concat", [zeros, pads[0][0], pads[1][0], zeros, pads[0][1], pads[1][1]], "pads", axis=0)

    def conv_bn(
        self, x: str, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, runtime_pad: bool = False, relu: bool = True, shape_of: Optional[str] = None
    ) -> str:
        """Conv (no bias) -> Sub/Mul/Add BatchNorm -> no-op Cast [-> Relu]; ``runtime_pad``: a Pad before it sized from ``Shape(shape_of or x)``."""
        w = (self.rng.standard_normal((c_out, c_in // groups, kernel, kernel)) * (1.0 / np.sqrt(c_in // groups * kernel * kernel))).astype(np.float32)
        if runtime_pad:
            x = self.node("Pad", [x, self.same_pads(shape_of or x, kernel, stride)], "padded", mode="constant")
            y = self.node("Conv", [x, self.const("W", w)], "conv", kernel_shape=[kernel, kernel], strides=[stride, stride], group=groups)
        else:
            p = kernel // 2
            y = self.node("Conv", [x, self.const("W", w)], "conv", kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[p, p, p, p], group=groups)
        channel = (c_out, 1, 1)
        mean = self.rng.uniform(-0.3, 0.3, channel).astype(np.float32)
        scale = self.rng.uniform(0.6, 1.4, channel).astype(np.float32)
        shift = self.rng.uniform(-0.2, 0.2, channel).astype(np.float32)
        y = self.node("Sub", [y, self.const("bn_mean", mean)], "bn_sub")
        y = self.node("Mul", [y, self.const("bn_scale", scale)], "bn_mul")
        y = self.node("Add", [y, self.const("bn_shift", shift)], "bn_add")
        y = self.cast(y, FLOAT)
        return self.node("Relu", [y], "relu") if relu else y

    def nhwc_round_trip(self, x: str) -> str:
        """NCHW -> NHWC -> NCHW: two Transposes that cancel (what a converter leaves between layout-sensitive ops)."""
        nhwc = self.node("Transpose", [x], "nhwc", perm=[0, 2, 3, 1])
        return self.node("Transpose", [nhwc], "nchw", perm=[0, 3, 1, 2])


def foreign_resnet(size: int = 32, width: int = 8, blocks: int = 2, classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    """A tf2onnx-looking ResNet: input ``input_1`` [batch, size, size, 3] (NHWC), output ``logits`` [batch, classes].

    ``blocks`` basic blocks; every second one downsamples with a projection
    shortcut. Opset 17, dynamic batch axis ``unk__batch``.
    """
    b = _Builder(seed)
    nhwc_in = "input_1"
    # Each reader gets its own Transpose to NCHW (duplicates): the padding arithmetic reads one, the Pad another.
    x = b.cast(b.node("Transpose", [nhwc_in], "to_nchw", perm=[0, 3, 1, 2]), FLOAT)
    x_dup = b.node("Transpose", [nhwc_in], "to_nchw", perm=[0, 3, 1, 2])
    x = b.conv_bn(x, 3, width, 3, stride=2, runtime_pad=True, shape_of=x_dup)
    c = width
    for index in range(blocks):
        down = index % 2 == 1
        c_out = c * 2 if down else c
        stride = 2 if down else 1
        # The block's input read through two identical Transposes to NHWC and back (duplicates + cancelling pairs).
        branch_in = b.node("Transpose", [b.node("Transpose", [x], "nhwc", perm=[0, 2, 3, 1])], "nchw", perm=[0, 3, 1, 2])
        skip_in = b.node("Transpose", [b.node("Transpose", [x], "nhwc", perm=[0, 2, 3, 1])], "nchw", perm=[0, 3, 1, 2])
        y = b.conv_bn(branch_in, c, c_out, 3, stride=stride, runtime_pad=down)
        y = b.conv_bn(b.nhwc_round_trip(y), c_out, c_out, 3, groups=2 if index % 2 == 0 else 1, relu=False)
        shortcut = b.conv_bn(skip_in, c, c_out, 1, stride=stride, relu=False) if down else b.cast(skip_in, FLOAT)
        x = b.node("Relu", [b.node("Add", [y, shortcut], "residual")], "block_out")
        c = c_out
    # Two Transposes that compose into one (NCHW -> NHWC -> NWHC), then back to NCHW: the three merge and cancel.
    x = b.node("Transpose", [b.node("Transpose", [x], "nhwc", perm=[0, 2, 3, 1])], "nwhc", perm=[0, 2, 1, 3])
    x = b.node("Transpose", [x], "nchw", perm=[0, 3, 2, 1])
    pooled = b.node("GlobalAveragePool", [x], "pool")
    shape = b.node("Shape", [pooled], "pool_shape")
    batch = b.node("Gather", [shape, b.const("i0", np.array([0], np.int64))], "batch_dim", axis=0)
    channels = b.node("Gather", [b.cast(shape, INT64), b.const("i1", np.array([1], np.int64))], "channel_dim", axis=0)
    flat = b.node("Reshape", [pooled, b.node("Concat", [batch, channels], "flat_shape", axis=0)], "flat")
    weights = (b.rng.standard_normal((c, classes)) / np.sqrt(c)).astype(np.float32)
    logits = b.node("MatMul", [b.cast(flat, FLOAT), b.const("fc_W", weights)], "fc")
    logits = b.node("Add", [logits, b.const("fc_b", b.rng.uniform(-0.1, 0.1, classes).astype(np.float32))], "fc_add")
    b.nodes.append(helper.make_node("Identity", [logits], ["logits"], "output_identity"))

    graph = helper.make_graph(
        b.nodes,
        "tf2onnx_like",
        [helper.make_tensor_value_info(nhwc_in, FLOAT, ["unk__batch", size, size, 3])],
        [helper.make_tensor_value_info("logits", FLOAT, ["unk__batch", classes])],
        b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tf2onnx", producer_version="1.16.1")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
