"""Random valid ONNX graphs for property tests (hypothesis), and the checks the cleanup
tests share.

``random_models()`` builds a random DAG (opset 17, float32, static shapes) from ops the
cleanup passes care about: Identity / inference Dropout / no-op Cast, Reshape, Transpose,
Slice, Pad, Expand, ``x*1``-style arithmetic, Conv/ConvTranspose/Gemm/MatMul followed by
BatchNormalization, constant subexpressions, static Shape chains, duplicated nodes and
dead nodes, with 1-3 graph outputs (intermediate values included). Every generated model
passes ``onnx.checker`` (full check) and runs in ONNX Runtime; weights come from a numpy
Generator seeded by a drawn integer, so failures reproduce.
"""


import numpy as np
import onnx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
INPUT_SHAPE = (2, 3, 4, 4)
MAX_ELEMENTS = 1024
MAX_RANK = 5
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

LOSSLESS = ("dce", "eliminate-identity", "fold-constants", "cse", "fuse-shape-ops")
APPROXIMATE = ("fold-batchnorm", "cleanup")
REL_TOL = 1e-5
ABS_TOL = 1e-6

PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --------------------------------------------------------------------------- generator


def _numel(shape) -> int:
    return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1


def _slice_len(dim: int, start: int, end: int, step: int) -> int:
    """ONNX Slice's output length on one axis."""
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return len(range(start, end, step))


def _prime_factors(n: int) -> list[int]:
    out, p = [], 2
    while n > 1 and p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    if n > 1:
        out.append(n)
    return out


class _GraphGen:
    """Builds one random model; structural choices are drawn (so they shrink), weights
    come from ``rng``."""

    def __init__(self, draw, seed: int) -> None:
        self.draw = draw
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.pool: list[tuple[str, tuple[int, ...]]] = []  # float32 values and shapes
        self.dupable: list[tuple[onnx.NodeProto, tuple[int, ...]]] = []
        self.counter = 0
        self.with_value_info = True

    # -- plumbing -----------------------------------------------------------------
    def fresh(self, prefix: str = "v") -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def flag(self, p_true: float = 0.5) -> bool:
        # integers shrink to 0 -> False: keep the "plain" variant the simple one
        return self.draw(st.integers(0, 99)) < int(p_true * 100)

    def choice(self, options):
        return self.draw(st.sampled_from(list(options)))

    def const(self, array: np.ndarray, as_node: bool | None = None) -> str:
        array = np.asarray(array)
        if as_node is None:
            as_node = self.flag(0.3)
        if as_node:
            name = self.fresh("k")
            self.nodes.append(
                helper.make_node("Constant", [], [name], name=f"n_{name}",
                                 value=numpy_helper.from_array(array, name))
            )
        else:
            name = self.fresh("c")
            self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def ints(self, values) -> str:
        return self.const(np.asarray(values, dtype=np.int64))

    def weights(self, shape, scale: float = 1.0) -> np.ndarray:
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def node(self, op: str, inputs, n_outputs: int = 1, dupable_shape=None, **attrs):
        outputs = [self.fresh() for _ in range(n_outputs)]
        node = helper.make_node(op, list(inputs), outputs, name=f"n_{outputs[0]}", **attrs)
        self.nodes.append(node)
        if dupable_shape is not None and n_outputs == 1:
            self.dupable.append((node, tuple(dupable_shape)))
        return outputs[0] if n_outputs == 1 else outputs

    def emit(self, op: str, inputs, shape, **attrs) -> str:
        """A single-output float node whose result joins the pool."""
        out = self.node(op, inputs, dupable_shape=shape, **attrs)
        self.pool.append((out, tuple(shape)))
        return out

    def pick(self, accept=lambda shape: True):
        """A pool value; shrinks toward the most recent one, so chains form."""
        candidates = [v for v in reversed(self.pool) if accept(v[1])]
        if not candidates:
            return None
        return candidates[self.draw(st.integers(0, len(candidates) - 1))]

    # -- ops ------------------------------------------------------------------------
    def op_unary(self):
        x, s = self.pick()
        op = self.choice(["Relu", "Identity", "Neg", "Abs", "Tanh"])
        self.emit(op, [x], s)

    def op_dropout(self):
        x, s = self.pick()
        variant = self.choice(["plain", "ratio", "training_false", "mask_unused", "mask_used"])
        inputs = [x]
        if variant in ("ratio", "training_false"):
            inputs.append(self.const(np.array(self.choice([0.0, 0.3, 0.5]), np.float32)))
        if variant == "training_false":
            inputs.append(self.const(np.array(False)))
        if variant in ("mask_unused", "mask_used"):
            out, mask = self.node("Dropout", inputs, n_outputs=2)
            if variant == "mask_used":
                maskf = self.node("Cast", [mask], to=TensorProto.FLOAT)
                out = self.node("Mul", [out, maskf])
            self.pool.append((out, s))
        else:
            self.emit("Dropout", inputs, s)

    def op_cast(self):
        x, s = self.pick()
        chain = self.choice([
            [TensorProto.FLOAT],
            [TensorProto.DOUBLE, TensorProto.FLOAT],
            [TensorProto.FLOAT16, TensorProto.FLOAT],
            [TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.FLOAT],
            [TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.FLOAT],
        ])
        for to in chain[:-1]:
            x = self.node("Cast", [x], to=to)
        self.emit("Cast", [x], s, to=chain[-1])

    def op_const_binary(self):
        x, s = self.pick()
        op = self.choice(["Add", "Sub", "Mul", "Div"])
        kind = self.choice(["scalar", "channel", "full", "rank1"])
        if kind == "scalar":
            if op in ("Add", "Sub"):
                value = self.choice([0.0, -0.0, 0.5, -1.5, 5e-9])
            else:
                value = self.choice([1.0, 2.0, 0.5, -1.0, 1.0000005])
            c = np.array(value, dtype=np.float32)
        elif kind == "channel":
            shape = [1] * len(s)
            axis = self.draw(st.integers(0, len(s) - 1))
            shape[axis] = s[axis]
            c = self.weights(shape)
        elif kind == "rank1":
            c = self.weights([s[-1]])
        else:
            c = self.weights(s)
        if op == "Div" and kind != "scalar":
            c = np.where(np.abs(c) < 0.25, np.float32(0.5), c).astype(np.float32)
        name = self.const(c)
        inputs = [name, x] if op in ("Add", "Mul") and self.flag(0.3) else [x, name]
        self.emit(op, inputs, s)

    def op_binary(self):
        x, s = self.pick()
        y, _ = self.pick(lambda shape: shape == s)
        self.emit(self.choice(["Add", "Sub", "Mul", "Max"]), [x, y], s)

    def op_transpose(self):
        x, s = self.pick(lambda shape: len(shape) >= 2)
        r = len(s)
        perm = list(self.draw(st.permutations(range(r))))
        if self.flag(0.2):
            perm = list(range(r))
        t_shape = tuple(s[p] for p in perm)
        out = self.emit("Transpose", [x], t_shape, perm=perm)
        if self.flag(0.5):  # a pair: the inverse, or another permutation
            second = list(np.argsort(perm)) if self.flag(0.5) else list(
                self.draw(st.permutations(range(r))))
            second = [int(p) for p in second]
            self.emit("Transpose", [out], tuple(t_shape[p] for p in second), perm=second)

    def _reshape_target(self, s):
        n = _numel(s)
        if self.flag(0.3):
            target = list(s)
        else:
            factors = list(self.draw(st.permutations(_prime_factors(n)))) or [1]
            rank = self.draw(st.integers(1, min(4, len(factors))))
            cuts = sorted(self.draw(st.lists(st.integers(1, max(1, len(factors) - 1)),
                                             min_size=rank - 1, max_size=rank - 1,
                                             unique=True))) if rank > 1 else []
            bounds = [0, *cuts, len(factors)]
            target = [int(np.prod(factors[a:b])) for a, b in zip(bounds, bounds[1:])]
            target = [t for t in target if t] or [n]
        encoded = list(target)
        for i, t in enumerate(target):
            if i < len(s) and s[i] == t and self.flag(0.2):
                encoded[i] = 0
        if self.flag(0.4):
            encoded[self.draw(st.integers(0, len(encoded) - 1))] = -1
        if encoded.count(-1) and encoded.count(0) and self.flag(0.5):
            encoded = [t if e == 0 else e for t, e in zip(target, encoded)]
        return tuple(target), encoded

    def op_reshape(self):
        x, s = self.pick()
        for _ in range(self.draw(st.integers(1, 3))):
            target, encoded = self._reshape_target(s)
            x = self.emit("Reshape", [x, self.ints(encoded)], target)
            s = target

    def op_flatten(self):
        x, s = self.pick()
        axis = self.draw(st.integers(-len(s), len(s)))
        a = axis + len(s) if axis < 0 else axis
        self.emit("Flatten", [x], (_numel(s[:a]), _numel(s[a:])), axis=axis)

    def op_slice(self):
        x, s = self.pick()
        r = len(s)
        axes = list(self.draw(st.lists(st.integers(0, r - 1), min_size=1, max_size=r,
                                       unique=True)))
        starts, ends, steps, out = [], [], [], list(s)
        for axis in axes:
            dim = s[axis]
            kind = self.choice(["full", "full_max", "full_neg", "partial", "reverse", "step2"])
            step = 1
            if kind == "full":
                start, end = 0, dim
            elif kind == "full_max":
                start, end = 0, INT64_MAX
            elif kind == "full_neg":
                start, end = -dim - self.draw(st.integers(0, 3)), 1000
            elif kind == "partial":
                start = self.draw(st.integers(0, dim - 1))
                end = self.draw(st.integers(start + 1, dim))
                if self.flag(0.3):
                    start -= dim
            elif kind == "reverse":
                start, end, step = -1, INT64_MIN, -1
            else:
                start, end, step = 0, dim, 2
            starts.append(start)
            ends.append(end)
            steps.append(step)
            out[axis] = _slice_len(dim, start, end, step)
        inputs = [x, self.ints(starts), self.ints(ends)]
        use_steps = any(t != 1 for t in steps) or self.flag(0.3)
        if axes != list(range(len(axes))) or use_steps or self.flag(0.5):
            written = [a - r if self.flag(0.3) else a for a in axes]
            inputs.append(self.ints(written))
        if use_steps:
            inputs.append(self.ints(steps))
        self.emit("Slice", inputs, out)

    def op_split_slices(self):
        """Two Slices cutting the last axis in two halves (the SlicesSplit pattern)."""
        x, s = self.pick(lambda shape: shape[-1] >= 2)
        d, r = s[-1], len(s)
        half = d // 2
        axis = -1 if self.flag(0.5) else r - 1
        first = self.emit("Slice", [x, self.ints([0]), self.ints([half]), self.ints([axis])],
                          (*s[:-1], half))
        second = self.emit("Slice", [x, self.ints([half]), self.ints([d]), self.ints([axis])],
                           (*s[:-1], d - half))
        if self.flag(0.5):
            self.emit("Concat", [first, second], s, axis=axis)

    def op_pad(self):
        x, s = self.pick()
        r = len(s)
        if self.flag(0.7):
            pads = [0] * (2 * r)
            mode = self.choice(["constant", "reflect", "edge"])
        else:
            pads = [self.draw(st.integers(0, 1)) for _ in range(2 * r)]
            mode = "constant"
        out = [d + pads[i] + pads[i + r] for i, d in enumerate(s)]
        if _numel(out) > MAX_ELEMENTS:
            return
        inputs = [x, self.ints(pads)]
        if mode == "constant" and self.flag(0.3):
            inputs.append(self.const(np.array(self.choice([0.0, 1.5]), np.float32)))
        self.emit("Pad", inputs, out, mode=mode)

    def op_unsqueeze(self):
        x, s = self.pick(lambda shape: len(shape) < MAX_RANK)
        x_shape = list(s)
        for _ in range(self.draw(st.integers(1, 2))):
            if len(x_shape) >= MAX_RANK:
                break
            r = len(x_shape) + 1
            axis = self.draw(st.integers(-r, r - 1))
            x_shape.insert(axis + r if axis < 0 else axis, 1)
            x = self.emit("Unsqueeze", [x, self.ints([axis])], x_shape)

    def op_squeeze(self):
        x, s = self.pick(lambda shape: 1 in shape)
        ones = [i for i, d in enumerate(s) if d == 1]
        if self.flag(0.3) and len(ones) < len(s):
            self.emit("Squeeze", [x], [d for d in s if d != 1])
            return
        axes = list(self.draw(st.lists(st.sampled_from(ones), min_size=1, unique=True)))
        out = [d for i, d in enumerate(s) if i not in axes]
        if not out:  # keep every pool value at rank >= 1
            return
        self.emit("Squeeze", [x, self.ints([a - len(s) if self.flag(0.3) else a
                                            for a in axes])], out)

    def op_concat(self):
        x, s = self.pick()
        axis = self.draw(st.integers(0, len(s) - 1))

        def fits(shape):
            return len(shape) == len(s) and all(
                a == b for i, (a, b) in enumerate(zip(shape, s)) if i != axis)

        y, t = self.pick(fits)
        out = list(s)
        out[axis] += t[axis]
        if _numel(out) > MAX_ELEMENTS:
            return
        self.emit("Concat", [x, y], out, axis=axis - len(s) if self.flag(0.3) else axis)

    def _batchnorm(self, x, shape, channels):
        scale = self.rng.uniform(0.5, 1.5, channels).astype(np.float32)
        bias = self.weights([channels])
        mean = self.weights([channels], 0.5)
        var = self.rng.uniform(0.2, 2.0, channels).astype(np.float32)
        eps = self.choice([1e-5, 1e-3])
        return self.emit(
            "BatchNormalization",
            [x, self.const(scale), self.const(bias), self.const(mean), self.const(var)],
            shape, epsilon=eps,
        )

    def op_conv_bn(self):
        x, s = self.pick(lambda shape: len(shape) in (3, 4) and min(shape[2:]) >= 3)
        c, spatial = s[1], list(s[2:])
        transpose = self.flag(0.25)
        cout = self.choice([2, 3, 4])
        k = self.choice([1, 3])
        pad = 1 if k == 3 and self.flag(0.7) else 0
        group = c if not transpose and cout % c == 0 and self.flag(0.3) else 1
        kernel = [k] * len(spatial)
        if transpose:
            weight = self.weights([c, cout, *kernel], 0.3)
            out_spatial = [d - 1 + k - 2 * pad for d in spatial]
        else:
            weight = self.weights([cout, c // group, *kernel], 0.3)
            out_spatial = [d + 2 * pad - k + 1 for d in spatial]
        out = (s[0], cout, *out_spatial)
        if _numel(out) > MAX_ELEMENTS:
            return
        inputs = [x, self.const(weight, as_node=False)]
        if self.flag(0.2):
            inputs[1] = self.node("Mul", [inputs[1], self.const(np.float32(0.5))])
        if self.flag(0.6):
            inputs.append(self.const(self.weights([cout]), as_node=False))
        attrs = {"kernel_shape": kernel, "pads": [pad] * (2 * len(spatial))}
        if group > 1:
            attrs["group"] = group
        y = self.emit("ConvTranspose" if transpose else "Conv", inputs, out, **attrs)
        if self.flag(0.8):
            self._batchnorm(y, out, cout)

    def op_batchnorm(self):
        x, s = self.pick(lambda shape: len(shape) >= 2)
        self._batchnorm(x, s, s[1])

    def _as_matrix(self):
        x, s = self.pick()
        if len(s) != 2:
            rows = s[0] if s else 1
            s = (rows, _numel(s) // rows)
            x = self.emit("Reshape", [x, self.ints([rows, -1])], s)
        return x, s

    def op_gemm(self):
        x, s = self._as_matrix()
        trans_a = self.flag(0.2)
        m, k = (s[1], s[0]) if trans_a else s
        n = self.choice([2, 3, 5])
        trans_b = self.flag(0.3)
        inputs = [x, self.const(self.weights([n, k] if trans_b else [k, n], 0.3))]
        bias = self.choice(["none", "vector", "row", "full", "scalar"])
        if bias != "none":
            shape = {"vector": [n], "row": [1, n], "full": [m, n], "scalar": []}[bias]
            inputs.append(self.const(self.weights(shape)))
        attrs = {}
        if trans_a:
            attrs["transA"] = 1
        if trans_b:
            attrs["transB"] = 1
        if self.flag(0.3):
            attrs["alpha"] = 0.5
        if self.flag(0.3):
            attrs["beta"] = 2.0
        y = self.emit("Gemm", inputs, (m, n), **attrs)
        if self.flag(0.7):
            self._batchnorm(y, (m, n), n)

    def op_matmul(self):
        x, s = self._as_matrix() if self.flag(0.5) else self.pick(lambda shape: len(shape) >= 2)
        n = self.choice([2, 3, 5])
        out = (*s[:-1], n)
        y = self.emit("MatMul", [x, self.const(self.weights([s[-1], n], 0.3))], out)
        if self.flag(0.7):  # rank > 2: BN's channel axis is not MatMul's, must stay
            self._batchnorm(y, out, out[1])

    def op_const_expr(self):
        """A constant subexpression combined with a pool value."""
        x, s = self.pick()
        shape = list(s) if self.flag(0.5) else [d if self.flag(0.5) else 1 for d in s]
        a = self.const(self.weights(shape))
        b = self.const(self.weights(shape))
        c = self.node(self.choice(["Add", "Sub", "Mul"]), [a, b])
        if self.flag(0.5):
            c = self.node(self.choice(["Relu", "Neg", "Abs"]), [c])
        if self.flag(0.3):
            c = self.node("Add", [c, self.const(np.array(1.0, np.float32))])
        self.emit(self.choice(["Add", "Mul", "Sub"]), [x, c], s)

    def op_shape_reshape(self):
        """Reshape(x, Concat(Gather(Shape(x), idx), [-1]))."""
        x, s = self.pick(lambda shape: len(shape) >= 2)
        keep = self.draw(st.integers(1, len(s) - 1))
        shape = self.node("Shape", [x])
        if self.flag(0.5):
            head = self.node("Gather", [shape, self.ints(list(range(keep)))], axis=0)
        else:
            head = self.node("Slice", [shape, self.ints([0]), self.ints([keep])])
        target = self.node("Concat", [head, self.ints([-1])], axis=0)
        self.emit("Reshape", [x, target], (*s[:keep], _numel(s[keep:])))

    def op_shape_scalar(self):
        """y + ReduceSum(Cast(Shape(x))) or Expand(y, Shape(y)): shapes of static values."""
        x, s = self.pick()
        if self.flag(0.5):
            self.emit("Expand", [x, self.node("Shape", [x])], s)
            return
        y, t = self.pick()
        size = self.node("Cast", [self.node(self.choice(["Shape", "Size"]), [y])],
                         to=TensorProto.FLOAT)
        total = self.node("ReduceSum", [size], keepdims=0)
        self.emit(self.choice(["Add", "Mul"]), [x, total], s)

    def op_expand(self):
        x, s = self.pick()
        if self.flag(0.6) or len(s) >= MAX_RANK or 2 * _numel(s) > MAX_ELEMENTS:
            self.emit("Expand", [x, self.ints(list(s))], s)
        else:
            self.emit("Expand", [x, self.ints([2, *s])], (2, *s))

    def op_duplicate(self):
        if not self.dupable:
            return
        node, shape = self.dupable[self.draw(st.integers(0, len(self.dupable) - 1))]
        out = self.fresh()
        copy = helper.make_node(node.op_type, list(node.input), [out], name=f"n_{out}")
        copy.attribute.extend(node.attribute)
        self.nodes.append(copy)
        self.pool.append((out, shape))
        if self.flag(0.5):
            self.emit("Add", [node.output[0], out], shape)

    OPS = (
        "unary", "dropout", "cast", "const_binary", "binary", "transpose", "reshape",
        "flatten", "slice", "split_slices", "pad", "unsqueeze", "squeeze", "concat",
        "conv_bn", "batchnorm", "gemm", "matmul", "const_expr", "shape_reshape",
        "shape_scalar", "expand", "duplicate",
    )
    #: which pool shapes each op needs
    NEEDS = {
        "transpose": lambda s: len(s) >= 2,
        "flatten": lambda s: True,
        "split_slices": lambda s: s[-1] >= 2,
        "unsqueeze": lambda s: len(s) < MAX_RANK,
        "squeeze": lambda s: 1 in s,
        "conv_bn": lambda s: len(s) in (3, 4) and min(s[2:]) >= 3,
        "batchnorm": lambda s: len(s) >= 2,
        "matmul": lambda s: len(s) >= 2,
        "shape_reshape": lambda s: len(s) >= 2,
    }

    def build(self, excluded=()) -> onnx.ModelProto:
        self.with_value_info = self.draw(st.booleans())
        n_inputs = self.draw(st.integers(1, 2))
        inputs = []
        for i in range(n_inputs):
            name = f"in{i}"
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, INPUT_SHAPE))
            self.pool.append((name, INPUT_SHAPE))
        for _ in range(self.draw(st.integers(3, 15))):
            ops = [op for op in self.OPS if op not in excluded and (
                op not in self.NEEDS or any(self.NEEDS[op](s) for _, s in self.pool))]
            getattr(self, f"op_{self.choice(ops)}")()
        produced = [v for v in self.pool if not v[0].startswith("in")]
        if not produced:
            self.op_unary()
            produced = [self.pool[-1]]
        outputs = [produced[-1]]
        consumed = {name for node in self.nodes for name in node.input}
        leaves = [v for v in produced if v[0] not in consumed]  # mostly live: dead branches
        for _ in range(self.draw(st.integers(0, 2))):  # intermediate values as outputs too
            options = leaves if leaves and self.flag(0.7) else produced
            value = options[self.draw(st.integers(0, len(options) - 1))]
            if value not in outputs:
                outputs.append(value)
        graph = helper.make_graph(
            self.nodes, "random", inputs,
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
            initializer=self.initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  ir_version=IR_VERSION, producer_name="hypothesis")
        onnx.checker.check_model(model, full_check=True)  # a failure is a generator bug
        if self.with_value_info:
            model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        return model


@st.composite
def random_models(draw, excluded=()):
    """(ModelProto, seed) for a random valid model; the seed also draws the inputs."""
    seed = draw(st.integers(0, 2**32 - 1))
    return _GraphGen(draw, seed).build(excluded), seed

