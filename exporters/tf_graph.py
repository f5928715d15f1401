"""Build a TensorFlow graph directly from a (deploy) PyTorch model: the "tf-direct" route.

torch.fx traces the model; each node maps onto one TensorFlow op in NHWC layout, with the
weights copied from torch. Explicit ``tf.pad`` is inserted wherever torch's symmetric padding
differs from TF's SAME (stride-2 convs, ResNet's max-pool), dilated convs stay one
``tf.nn.conv2d`` (one CONV_2D, no SpaceToBatchND), grouped convs become split + convs +
concat (ops the GPU delegate takes). It needs no ONNX detour, so it converts the 138M-parameter
VGG classifiers in seconds where onnx2tf runs out of memory.

Unsupported modules raise ``UnsupportedOp`` naming the node, and the exporter falls back to
onnx2tf.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F


class UnsupportedOp(Exception):
    pass


@dataclass
class Value:
    """A traced value: a TF tensor whose 4-D ones are stored NHWC (``nhwc``), or a Python value."""

    t: object
    shape: tuple[int, ...] | None = None  # logical (torch) shape
    nhwc: bool = False


def _is_custom(m: nn.Module) -> bool:
    """A module that maps itself (the model side defines it; exporters import no model code):
    ``tf_params() -> {name: ndarray}`` and ``tf_call(tf, x_nhwc, params) -> tensor``."""
    return callable(getattr(m, "tf_call", None)) and callable(getattr(m, "tf_params", None))


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return _is_custom(m) or super().is_leaf_module(m, qualname)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy()


def _pad_amounts(size: int, k: int, s: int, p: int, d: int = 1, ceil: bool = False) -> tuple[int, int, int]:
    """torch output size and the (top, bottom) padding that reproduces it with VALID."""
    eff = d * (k - 1) + 1
    if ceil:
        out = -(-(size + 2 * p - eff) // s) + 1
        if (out - 1) * s >= size + p:  # torch: the last window must start inside the input
            out -= 1
    else:
        out = (size + 2 * p - eff) // s + 1
    bottom = max((out - 1) * s + eff - size - p, 0)
    return out, p, bottom


def _same_matches(size: int, k: int, s: int, out: int, top: int, d: int = 1) -> bool:
    eff = d * (k - 1) + 1
    same_out = -(-size // s)
    total = max((same_out - 1) * s + eff - size, 0)
    return same_out == out and total // 2 == top


def _batch1(shape) -> tuple[int, ...]:
    return tuple(int(v) for v in shape)


class GraphBuilder:
    """Turns a torch model into a ``tf.Module`` with a ``__call__`` tf.function."""

    def __init__(self, model: nn.Module, input_size: int, nchw_input: bool = False):
        import tensorflow as tf

        self.tf = tf
        self.model = model.eval()
        self.size = input_size
        self.nchw_input = nchw_input
        self.graph = _Tracer().trace(self.model)
        self.modules = dict(self.model.named_modules())
        self.holder = tf.Module()
        self._vars: dict[str, object] = {}
        self._prepare_weights()
        self.op_counts: dict[str, int] = {}

    # -- weights become tf.Variables owned by one tf.Module (the converter freezes them) ------
    def _var(self, name: str, array: np.ndarray):
        v = self.tf.Variable(array, trainable=False, name=name.replace(".", "_"))
        self._vars[name] = v
        setattr(self.holder, "w_" + name.replace(".", "_"), v)
        return v

    def _prepare_weights(self) -> None:
        for node in self.graph.nodes:
            if node.op != "call_module":
                continue
            m = self.modules[node.target]
            key = node.target
            if isinstance(m, nn.Conv2d):
                w = _np(m.weight)  # (O, I/g, kh, kw)
                if m.groups == 1:
                    self._var(key + ".w", w.transpose(2, 3, 1, 0))
                elif m.groups == m.in_channels == m.out_channels:
                    self._var(key + ".w", w.transpose(2, 3, 0, 1))  # (kh, kw, C, 1)
                else:
                    og = m.out_channels // m.groups
                    for g in range(m.groups):
                        self._var(f"{key}.w{g}", w[g * og:(g + 1) * og].transpose(2, 3, 1, 0))
                if m.bias is not None:
                    self._var(key + ".b", _np(m.bias))
            elif isinstance(m, nn.Linear):
                self._var(key + ".w", _np(m.weight).T.copy())
                if m.bias is not None:
                    self._var(key + ".b", _np(m.bias))
            elif isinstance(m, nn.BatchNorm2d):
                std = np.sqrt(_np(m.running_var) + m.eps)
                scale = _np(m.weight) / std
                self._var(key + ".scale", scale)
                self._var(key + ".shift", _np(m.bias) - _np(m.running_mean) * scale)
            elif _is_custom(m):
                for pname, arr in m.tf_params().items():
                    self._var(f"{key}.{pname}", np.asarray(arr, np.float32))

    # -- graph walk -----------------------------------------------------------------------
    def build(self):
        tf = self.tf
        s = self.size
        spec_shape = [1, 3, s, s] if self.nchw_input else [1, s, s, 3]
        builder = self

        @tf.function(input_signature=[tf.TensorSpec(spec_shape, tf.float32, name="input")], autograph=False)
        def serve(x):
            return builder._run(x)

        self.holder.serve = serve
        return self.holder, serve.get_concrete_function()

    def _count(self, op: str) -> None:
        self.op_counts[op] = self.op_counts.get(op, 0) + 1

    def _run(self, x):
        tf = self.tf
        self.op_counts = {}  # the function may be traced more than once; count the last trace
        if self.nchw_input:
            x = tf.transpose(x, [0, 2, 3, 1])
        env: dict[fx.Node, Value] = {}
        out = None
        for node in self.graph.nodes:
            if node.op == "placeholder":
                env[node] = Value(x, (1, 3, self.size, self.size), True)
            elif node.op == "get_attr":
                raise UnsupportedOp(f"parameter used outside a module ({node.target})")
            elif node.op == "output":
                out = self._outputs(node.args[0], env)
            else:
                env[node] = self._node(node, env)
        return out

    def _outputs(self, arg, env):
        if isinstance(arg, dict):
            arg = arg.get("main", next(iter(arg.values())))
        items = arg if isinstance(arg, (tuple, list)) else [arg]
        return {f"output_{i}": self._plain(env[a]).t for i, a in enumerate(items)}

    def _arg(self, a, env):
        if isinstance(a, fx.Node):
            return env[a]
        if isinstance(a, (list, tuple)):
            return type(a)(self._arg(v, env) for v in a)
        return a

    def _plain(self, v: Value) -> Value:
        """Return the value in torch's (NCHW) axis order."""
        if v.nhwc and len(v.shape) == 4:
            if v.shape[2] == 1 and v.shape[3] == 1:  # data order is the same; only the shape differs
                return Value(self.tf.reshape(v.t, v.shape), v.shape, False)
            self._count("TRANSPOSE")
            return Value(self.tf.transpose(v.t, [0, 3, 1, 2]), v.shape, False)
        return v

    def _node(self, node: fx.Node, env) -> Value:
        tf = self.tf
        args = [self._arg(a, env) for a in node.args]
        kwargs = {k: self._arg(v, env) for k, v in node.kwargs.items()}
        if node.op == "call_module":
            m = self.modules[node.target]
            if isinstance(m, (nn.Conv2d, nn.Linear)):  # named, so a layer can be found in the .tflite (keep_float)
                with tf.name_scope("wb__" + node.target.replace(".", "__")):
                    return self._module(node.target, m, args[0], node)
            return self._module(node.target, m, args[0], node)
        target = node.target
        if node.op == "call_function":
            if target in (F.relu, torch.relu):
                return Value(tf.nn.relu(args[0].t), args[0].shape, args[0].nhwc)
            if target in (torch.sigmoid, F.sigmoid):
                return Value(tf.sigmoid(args[0].t), args[0].shape, args[0].nhwc)
            if target in (operator.add, torch.add, operator.mul, torch.mul):
                return self._binary(target, args[0], args[1])
            if target is torch.flatten:
                start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
                return self._flatten(args[0], start)
            if target is F.adaptive_avg_pool2d:
                return self._adaptive_pool(args[0], args[1] if len(args) > 1 else kwargs["output_size"])
            if target is torch.cat:
                dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
                return self._cat(args[0], dim)
            if target is getattr:
                if args[1] == "shape":
                    return Value(tuple(args[0].shape))
            if target is operator.getitem:
                base = args[0].t if isinstance(args[0], Value) else args[0]
                return Value(base[args[1]])
        if node.op == "call_method":
            x = args[0]
            if target in ("permute",):
                perm = args[1:] if not isinstance(args[1], (list, tuple)) else args[1]
                return self._permute(x, [int(p.t if isinstance(p, Value) else p) for p in perm])
            if target in ("reshape", "view"):
                dims = args[1:] if not isinstance(args[1], (list, tuple)) else args[1]
                return self._reshape(x, [int(d.t if isinstance(d, Value) else d) for d in dims])
            if target == "size":
                return Value(tuple(x.shape) if len(args) == 1 else x.shape[args[1]])
            if target == "flatten":
                return self._flatten(x, args[1] if len(args) > 1 else 0)
        raise UnsupportedOp(f"{node.op} {getattr(target, '__name__', target)} at {node.name}")

    def _binary(self, target, a, b) -> Value:
        tf = self.tf
        if isinstance(a, Value) and isinstance(b, Value) and a.nhwc != b.nhwc:
            a, b = self._plain(a), self._plain(b)
        ta = a.t if isinstance(a, Value) else a
        tb = b.t if isinstance(b, Value) else b
        ref = a if isinstance(a, Value) else b
        is_add = target in (operator.add, torch.add)
        self._count("ADD" if is_add else "MUL")
        shape = ref.shape
        if isinstance(a, Value) and isinstance(b, Value):
            shape = tuple(max(p, q) for p, q in zip(a.shape, b.shape))
        return Value(tf.add(ta, tb) if is_add else tf.multiply(ta, tb), shape, ref.nhwc)

    def _module(self, key: str, m: nn.Module, x: Value, node: fx.Node) -> Value:
        tf = self.tf
        if isinstance(m, (nn.Identity, nn.Dropout)):
            return x
        if isinstance(m, nn.ReLU):
            return Value(tf.nn.relu(x.t), x.shape, x.nhwc)
        if isinstance(m, nn.ReLU6):
            return Value(tf.nn.relu6(x.t), x.shape, x.nhwc)
        if isinstance(m, nn.Sigmoid):
            return Value(tf.sigmoid(x.t), x.shape, x.nhwc)
        if isinstance(m, nn.Conv2d):
            return self._conv(key, m, x)
        if isinstance(m, nn.BatchNorm2d):
            self._count("BATCH_NORM")
            return Value(x.t * self._vars[key + ".scale"] + self._vars[key + ".shift"], x.shape, True)
        if isinstance(m, nn.MaxPool2d):
            return self._maxpool(m, x, node)
        if isinstance(m, nn.AdaptiveAvgPool2d):
            return self._adaptive_pool(x, m.output_size)
        if isinstance(m, nn.Linear):
            v = self._plain(x)
            self._count("FULLY_CONNECTED")
            y = tf.matmul(v.t, self._vars[key + ".w"])
            if m.bias is not None:
                y = y + self._vars[key + ".b"]
            return Value(y, (*v.shape[:-1], m.out_features), False)
        if isinstance(m, nn.Flatten):
            return self._flatten(x, m.start_dim)
        if isinstance(m, nn.LocalResponseNorm):
            if m.size % 2 == 0:
                raise UnsupportedOp("LocalResponseNorm with an even size")
            self._count("LOCAL_RESPONSE_NORMALIZATION")
            y = tf.nn.local_response_normalization(x.t, depth_radius=m.size // 2, bias=m.k,
                                                   alpha=m.alpha / m.size, beta=m.beta)
            return Value(y, x.shape, True)
        if _is_custom(m):  # e.g. SSD's L2Norm over channels, mapped by the model's own tf_call
            params = {n: self._vars[f"{key}.{n}"] for n in m.tf_params()}
            return Value(m.tf_call(tf, x.t, params), x.shape, True)
        raise UnsupportedOp(f"module {type(m).__name__} at {key}")

    def _conv(self, key: str, m: nn.Conv2d, x: Value) -> Value:
        tf = self.tf
        if not x.nhwc:
            raise UnsupportedOp(f"conv on a non-spatial tensor at {key}")
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise UnsupportedOp(f"conv padding {m.padding!r}/{m.padding_mode} at {key}")
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = m.kernel_size, m.stride, m.padding, m.dilation
        _, _, h, w = x.shape
        oh, pt, pb = _pad_amounts(h, kh, sh, ph, dh)
        ow, pl, pr = _pad_amounts(w, kw, sw, pw, dw)
        t = x.t
        if ph == 0 and pw == 0:
            padding = "VALID"
        elif sh == sw == 1 and 2 * ph == dh * (kh - 1) and 2 * pw == dw * (kw - 1):
            padding = "SAME"  # symmetric padding: TF SAME is identical
        else:
            self._count("PAD")
            t = tf.pad(t, [[0, 0], [pt, pb], [pl, pr], [0, 0]])
            padding = "VALID"
        if m.groups == 1:
            self._count("CONV_2D")
            y = tf.nn.conv2d(t, self._vars[key + ".w"], [1, sh, sw, 1], padding, dilations=[1, dh, dw, 1])
        elif m.groups == m.in_channels == m.out_channels:
            self._count("DEPTHWISE_CONV_2D")
            y = tf.nn.depthwise_conv2d(t, self._vars[key + ".w"], [1, sh, sw, 1], padding,
                                       dilations=[dh, dw])
        else:
            parts = tf.split(t, m.groups, axis=3)
            self._count("SPLIT")
            outs = []
            for g, part in enumerate(parts):
                self._count("CONV_2D")
                outs.append(tf.nn.conv2d(part, self._vars[f"{key}.w{g}"], [1, sh, sw, 1], padding,
                                         dilations=[1, dh, dw, 1]))
            self._count("CONCATENATION")
            y = tf.concat(outs, axis=3)
        if m.bias is not None:
            y = tf.nn.bias_add(y, self._vars[key + ".b"])
        return Value(y, (x.shape[0], m.out_channels, oh, ow), True)

    def _maxpool(self, m: nn.MaxPool2d, x: Value, node: fx.Node) -> Value:
        tf = self.tf
        k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
        s = m.stride if isinstance(m.stride, int) else m.stride[0]
        p = m.padding if isinstance(m.padding, int) else m.padding[0]
        d = m.dilation if isinstance(m.dilation, int) else m.dilation[0]
        if d != 1:
            raise UnsupportedOp("dilated max-pool")
        _, _, h, w = x.shape
        oh, pt, pb = _pad_amounts(h, k, s, p, 1, m.ceil_mode)
        ow, pl, pr = _pad_amounts(w, k, s, p, 1, m.ceil_mode)
        t = x.t
        self._count("MAX_POOL_2D")
        if pt == pb == pl == pr == 0:
            padding = "VALID"
        elif _same_matches(h, k, s, oh, pt) and _same_matches(w, k, s, ow, pl):
            padding = "SAME"  # TF's SAME max-pool ignores the padded cells, like torch's -inf
        else:
            # every max-pool in the zoo follows a ReLU, where 0 padding equals -inf padding and
            # stays exact under INT8; elsewhere pad with the lowest float
            prev = node.args[0]
            after_relu = isinstance(prev, fx.Node) and (
                (prev.op == "call_module" and isinstance(self.modules[prev.target], (nn.ReLU, nn.ReLU6)))
                or (prev.op == "call_function" and prev.target in (F.relu, torch.relu)))
            value = 0.0 if after_relu else float(np.finfo(np.float32).min)
            self._count("PAD")
            t = tf.pad(t, [[0, 0], [pt, pb], [pl, pr], [0, 0]], constant_values=value)
            padding = "VALID"
        y = tf.nn.max_pool2d(t, k, s, padding)
        return Value(y, (x.shape[0], x.shape[1], oh, ow), True)

    def _adaptive_pool(self, x: Value, out) -> Value:
        tf = self.tf
        o = out if isinstance(out, int) else out[0]
        if not isinstance(out, int) and out[0] != out[1]:
            raise UnsupportedOp("non-square adaptive pooling")
        _, c, h, w = x.shape
        if o == 1:
            self._count("MEAN")
            return Value(tf.reduce_mean(x.t, axis=[1, 2], keepdims=True), (x.shape[0], c, 1, 1), True)
        if h == o and w == o:
            return x
        if h % o == 0 and w % o == 0:
            self._count("AVERAGE_POOL_2D")
            y = tf.nn.avg_pool2d(x.t, [h // o, w // o], [h // o, w // o], "VALID")
            return Value(y, (x.shape[0], c, o, o), True)
        raise UnsupportedOp(f"adaptive average pooling from {h}x{w} to {o}x{o} (not a whole factor)")

    def _flatten(self, x: Value, start: int) -> Value:
        if start != 1:
            raise UnsupportedOp(f"flatten from dim {start}")
        v = self._plain(x)
        n = int(np.prod(v.shape[1:]))
        self._count("RESHAPE")
        return Value(self.tf.reshape(v.t, [v.shape[0], n]), (v.shape[0], n), False)

    def _permute(self, x: Value, perm: list[int]) -> Value:
        tf = self.tf
        shape = tuple(x.shape[p] for p in perm)
        if x.nhwc:
            order = [0, 2, 3, 1]  # tf axis i holds torch axis order[i]
            tf_perm = [order.index(p) for p in perm]
        else:
            tf_perm = perm
        if tf_perm == list(range(len(perm))):
            return Value(x.t, shape, False)
        self._count("TRANSPOSE")
        return Value(tf.transpose(x.t, tf_perm), shape, False)

    def _reshape(self, x: Value, dims: list[int]) -> Value:
        v = self._plain(x)
        total = int(np.prod(v.shape))
        if -1 in dims:
            known = int(np.prod([d for d in dims if d != -1]))
            dims = [total // known if d == -1 else d for d in dims]
        self._count("RESHAPE")
        return Value(self.tf.reshape(v.t, dims), tuple(dims), False)

    def _cat(self, items, dim: int) -> Value:
        tf = self.tf
        if all(v.nhwc for v in items) and dim == 1:
            axis, nhwc = 3, True
        else:
            items = [self._plain(v) for v in items]
            axis, nhwc = dim, False
        shape = list(items[0].shape)
        shape[dim] = sum(v.shape[dim] for v in items)
        self._count("CONCATENATION")
        return Value(tf.concat([v.t for v in items], axis=axis), tuple(shape), nhwc)
