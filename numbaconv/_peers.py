"""``bench --peers``: numbaconv against the CPU libraries a user could pick instead.

Each library runs alone in a worker process of its own (``python -m numbaconv._peers
LIBRARY ENTRY CASES``): two libraries' thread pools in one process spin on the cores
between calls and slow whichever runs next by 2-4x. Every worker sets the same
allocator (:func:`numbaconv.bench.steady_allocator`) and the same thread count (Numba's),
builds its calls, and warms them up when told to; then, round after round, the parent
tells the workers in turn to time every case (a median after warm-up, as
:func:`numbaconv.bench.median_time`), in an order that rotates from round to round.
A case's ratio to a peer is the median over rounds of the two libraries' times in the
same round.

Libraries: ``numbaconv``, ``numbaconv_cl`` (``layout="channels_last"``, the input
converted beforehand), ``torch`` (PyTorch NCHW), ``torch_cl`` (PyTorch channels_last:
input and weight converted beforehand, PyTorch's best case; 2D and 3D only) and
``onnxruntime`` (a one-node ``Conv``/``ConvTranspose`` model, the weight and bias as
initializers, ``intra_op_num_threads`` = the thread count, ``ORT_ENABLE_ALL``).
Entry points: ``forward`` (``conv``), ``backward`` (``conv_backward``, both gradients,
against ``aten.convolution_backward``), ``transpose`` (``conv_transpose*d``) and
``layout`` (the forward suite channels-last, against numbaconv channels-first and
PyTorch channels_last).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from .bench import geomean


@dataclass(frozen=True)
class PeerCase:
    """One layer: its kind (a row group of the table) and its arguments.

    For the ``transpose`` entry the weight is ``(C_in, C_out // groups, *kernel)``, as
    ``conv_transpose*d`` takes it, and ``output_padding`` applies.
    """

    name: str
    kind: str
    input_shape: tuple
    weight_shape: tuple
    stride: object = 1
    padding: object = 0
    dilation: object = 1
    groups: int = 1
    output_padding: object = 0

    @property
    def d(self) -> int:
        return len(self.weight_shape) - 2

    def per_axis(self, value) -> list:
        return list(value) if isinstance(value, (tuple, list)) else [value] * self.d

    def arrays(self, entry: str):
        """Seeded float32 input, weight and bias; for ``backward`` also the output
        gradient (in place of the bias)."""
        rng = np.random.default_rng(0)
        x = rng.standard_normal(self.input_shape, dtype=np.float32)
        w = rng.standard_normal(self.weight_shape, dtype=np.float32)
        channels = self.weight_shape[1] * self.groups if entry == "transpose" \
            else self.weight_shape[0]
        b = rng.standard_normal(channels, dtype=np.float32)
        if entry == "backward":
            from .functional import output_shape

            shape = output_shape(self.input_shape, self.weight_shape,
                                 tuple(self.per_axis(self.stride)),
                                 self.padding, tuple(self.per_axis(self.dilation)))
            b = rng.standard_normal(shape, dtype=np.float32)
        return x, w, b


def _c(name, kind, x, w, **kw):
    return PeerCase(name, kind, tuple(x), tuple(w), **kw)


# The forward suite: bench.SUITE (the layers numbaconv was tuned on) and layers of the
# kinds it was not: grouped with 4-8 channels per group, 1x7/7x1, stems with 3 input
# channels, stride 2 of every kind, depthwise 5x5 and strided depthwise.
FORWARD = (
    _c("resnet_conv1", "stem", (1, 3, 224, 224), (64, 3, 7, 7), stride=2, padding=3),
    _c("mbnet_stem", "stem", (1, 3, 224, 224), (32, 3, 3, 3), stride=2, padding=1),
    _c("stem_1d", "stem", (1, 1, 16000), (64, 1, 80), stride=4, padding=38),
    _c("r2plus1d_stem", "stem", (1, 3, 8, 112, 112), (32, 3, 3, 7, 7), stride=(1, 2, 2),
       padding=(1, 3, 3)),
    _c("r50_3x3_56", "dense", (1, 64, 56, 56), (64, 64, 3, 3), padding=1),
    _c("r50_1x1_56", "dense", (1, 64, 56, 56), (256, 64, 1, 1)),
    _c("r50_3x3_14", "dense", (1, 256, 14, 14), (256, 256, 3, 3), padding=1),
    _c("r50_3x3_7", "dense", (1, 512, 7, 7), (512, 512, 3, 3), padding=1),
    _c("b8_3x3_56", "dense", (8, 64, 56, 56), (64, 64, 3, 3), padding=1),
    _c("deeplab_d2", "dense", (1, 256, 28, 28), (256, 256, 3, 3), padding=2, dilation=2),
    _c("incep_1x7", "dense", (1, 128, 17, 17), (128, 128, 1, 7), padding=(0, 3)),
    _c("incep_7x1", "dense", (1, 128, 17, 17), (128, 128, 7, 1), padding=(3, 0)),
    _c("wavenet_d256", "dense", (1, 64, 16000), (64, 64, 2), dilation=256),
    _c("textcnn", "dense", (32, 300, 100), (100, 300, 5), padding=2),
    _c("c3d", "dense", (1, 64, 16, 56, 56), (128, 64, 3, 3, 3), padding=1),
    _c("med_k5", "dense", (1, 1, 64, 64, 64), (8, 1, 5, 5, 5), padding=2),
    _c("r50_3x3_s2", "strided", (1, 128, 56, 56), (128, 128, 3, 3), stride=2, padding=1),
    _c("r50_1x1_s2", "strided", (1, 256, 56, 56), (512, 256, 1, 1), stride=2),
    _c("conv1d_s2", "strided", (1, 64, 16000), (64, 64, 3), stride=2, padding=1),
    _c("c3d_s2", "strided", (1, 64, 16, 56, 56), (64, 64, 3, 3, 3), stride=2, padding=1),
    _c("resnext_s2", "strided", (1, 128, 56, 56), (128, 4, 3, 3), stride=2, padding=1,
       groups=32),
    _c("resnext_g32", "grouped", (1, 256, 28, 28), (256, 8, 3, 3), padding=1, groups=32),
    _c("resnext_g32_56", "grouped", (1, 128, 56, 56), (128, 4, 3, 3), padding=1,
       groups=32),
    _c("regnet_g8", "grouped", (1, 96, 28, 28), (96, 8, 3, 3), padding=1, groups=12),
    _c("mbv2_dw3", "depthwise", (1, 144, 56, 56), (144, 1, 3, 3), padding=1, groups=144),
    _c("mbv3_dw5", "depthwise", (1, 120, 28, 28), (120, 1, 5, 5), padding=2, groups=120),
    _c("mbv2_dw3_s2", "depthwise", (1, 144, 56, 56), (144, 1, 3, 3), stride=2, padding=1,
       groups=144),
    _c("mbv3_dw5_s2", "depthwise", (1, 72, 56, 56), (72, 1, 5, 5), stride=2, padding=2,
       groups=72),
    _c("replk_dw31", "depthwise", (1, 128, 28, 28), (128, 1, 31, 31), padding=15,
       groups=128),
    _c("img_k63", "large kernel", (1, 1, 1024, 1024), (1, 1, 63, 63), padding=31),
    _c("fir_1025", "large kernel", (1, 1, 1_000_000), (1, 1, 1025), padding=512),
    _c("vol_k15", "large kernel", (1, 1, 128, 128, 128), (1, 1, 15, 15, 15), padding=7),
)

# conv_backward on a layer of each kind (both gradients, as a network's inner layers).
BACKWARD = tuple(c for c in FORWARD if c.name in (
    "resnet_conv1", "mbnet_stem", "r50_3x3_56", "r50_3x3_14", "incep_1x7", "c3d",
    "r50_3x3_s2", "r50_1x1_s2", "conv1d_s2", "resnext_g32", "mbv2_dw3", "mbv2_dw3_s2")) + (
    _c("conv1d_k3", "dense", (1, 64, 16000), (64, 64, 3), padding=1),
)

# Transposed layers (weight (C_in, C_out // groups, *kernel)): stride 1, 2 and 4 in 1D,
# 2D and 3D, as decoders and generators use them.
TRANSPOSE = (
    _c("t2d_3x3_s1", "stride 1", (1, 64, 56, 56), (64, 64, 3, 3), padding=1),
    _c("t1d_k4_s2", "stride 2", (1, 64, 4000), (64, 32, 4), stride=2, padding=1),
    _c("t2d_3x3_s2", "stride 2", (1, 128, 28, 28), (128, 64, 3, 3), stride=2, padding=1,
       output_padding=1),
    _c("unet_2x2_s2", "stride 2", (1, 128, 64, 64), (128, 64, 2, 2), stride=2),
    _c("dcgan_4x4_s2", "stride 2", (1, 256, 16, 16), (256, 128, 4, 4), stride=2,
       padding=1),
    _c("t3d_2x2_s2", "stride 2", (1, 64, 8, 28, 28), (64, 32, 2, 2, 2), stride=2),
    _c("t1d_k8_s4", "stride 4", (1, 64, 2000), (64, 32, 8), stride=4, padding=2),
    _c("t2d_8x8_s4", "stride 4", (1, 64, 32, 32), (64, 32, 8, 8), stride=4, padding=2),
    _c("t3d_4x4_s4", "stride 4", (1, 32, 4, 14, 14), (32, 16, 4, 4, 4), stride=4),
)

SUITES = {"forward": FORWARD, "backward": BACKWARD, "transpose": TRANSPOSE,
          "layout": FORWARD,
          # Not the large kernels: PyTorch's float64 path builds im2col columns (33 GB
          # for img_k63).
          "float64": tuple(c for c in FORWARD if c.kind != "large kernel")}
PEERS = {"forward": ("torch", "torch_cl", "onnxruntime"),
         "backward": ("torch", "torch_cl"),
         "transpose": ("torch", "torch_cl", "onnxruntime"),
         "layout": ("numbaconv", "torch_cl"),
         "float64": ("torch",)}
# The library whose times are divided by the others'.
OWN = {"forward": "numbaconv", "backward": "numbaconv", "transpose": "numbaconv",
       "layout": "numbaconv_cl", "float64": "numbaconv"}
# Column labels: PyTorch NCHW, PyTorch channels_last, ONNX Runtime.
SHORT = {"numbaconv": "nc", "numbaconv_cl": "nc_cl", "torch": "torch",
         "torch_cl": "torch_cl", "onnxruntime": "ort"}
ROUNDS = 5


def available(library: str) -> bool:
    """Whether ``library``'s packages import in this environment (without importing
    them into this process: a peer's thread pool must not share it)."""
    modules = {"numbaconv": [], "numbaconv_cl": [], "torch": ["torch"], "torch_cl": ["torch"],
               "onnxruntime": ["onnx", "onnxruntime"]}[library]
    from importlib.util import find_spec

    return all(find_spec(m) is not None for m in modules)


# --- the calls, built inside a worker ------------------------------------------------

def _numbaconv_call(entry, case, x, w, b, channels_last=False):
    import numbaconv

    kw = dict(stride=case.stride, padding=case.padding, dilation=case.dilation,
              groups=case.groups)
    if channels_last:  # forward only
        xl = np.ascontiguousarray(np.moveaxis(x, 1, -1))
        return lambda: numbaconv.conv(xl, w, b, **kw, layout="channels_last")
    if entry in ("forward", "layout", "float64"):
        return lambda: numbaconv.conv(x, w, b, **kw)
    if entry == "backward":
        return lambda: numbaconv.conv_backward(b, x, w, **kw, bias=False)
    transpose = getattr(numbaconv, f"conv_transpose{case.d}d")
    return lambda: transpose(x, w, b, case.stride, case.padding, case.output_padding,
                             case.groups, case.dilation)


def _torch_call(entry, case, x, w, b, channels_last):
    import torch

    if channels_last and case.d == 1:
        return None  # PyTorch has no channels_last for 3-dimensional tensors
    tx, tw, tb = (torch.from_numpy(a) for a in (x, w, b))
    if channels_last:
        fmt = torch.channels_last if case.d == 2 else torch.channels_last_3d
        tx, tw = tx.contiguous(memory_format=fmt), tw.contiguous(memory_format=fmt)
        if entry == "backward":
            tb = tb.contiguous(memory_format=fmt)
    stride, dilation = case.per_axis(case.stride), case.per_axis(case.dilation)
    padding = case.per_axis(case.padding)
    if entry in ("forward", "layout", "float64"):
        conv = getattr(torch.nn.functional, f"conv{case.d}d")

        def run():
            with torch.no_grad():
                return conv(tx, tw, tb, stride, padding, dilation, case.groups)
    elif entry == "backward":
        def run():
            # grad_input and grad_weight, as autograd's backward of conv{d}d computes
            return torch.ops.aten.convolution_backward(
                tb, tx, tw, None, stride, padding, dilation, False, [0] * case.d,
                case.groups, [True, True, False])
    else:
        conv = getattr(torch.nn.functional, f"conv_transpose{case.d}d")
        output_padding = case.per_axis(case.output_padding)

        def run():
            with torch.no_grad():
                return conv(tx, tw, tb, stride, padding, output_padding, case.groups,
                            dilation)
    return run


def _onnx_call(entry, case, x, w, b, threads):
    if entry == "backward":
        return None
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    pads = case.per_axis(case.padding)
    attrs = dict(kernel_shape=list(case.weight_shape[2:]), strides=case.per_axis(
        case.stride), dilations=case.per_axis(case.dilation), group=case.groups,
        pads=pads + pads)
    op = "Conv"
    if entry == "transpose":
        op = "ConvTranspose"
        attrs["output_padding"] = case.per_axis(case.output_padding)
    node = helper.make_node(op, ["x", "w", "b"], ["y"], **attrs)
    graph = helper.make_graph(
        [node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                       list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * x.ndim)],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"x": x})


def build_calls(library, entry, cases, threads):
    """``{case name: callable}`` of ``library``'s calls (cases it cannot run left out)."""
    if library in ("torch", "torch_cl"):
        import torch

        torch.set_num_threads(threads)
    calls = {}
    for case in cases:
        x, w, b = case.arrays(entry)
        if entry == "float64":  # the forward suite's arrays, in float64
            x, w, b = (a.astype(np.float64) for a in (x, w, b))
        if library in ("numbaconv", "numbaconv_cl"):
            fn = _numbaconv_call(entry, case, x, w, b, library == "numbaconv_cl")
        elif library in ("torch", "torch_cl"):
            fn = _torch_call(entry, case, x, w, b, library == "torch_cl")
        else:
            fn = _onnx_call(entry, case, x, w, b, threads)
        if fn is not None:
            calls[case.name] = fn
    return calls


def worker(library, entry, names) -> None:
    """A worker's loop: build the calls, then answer ``warm`` and ``time`` commands read
    from stdin, one JSON line of results each, until ``quit``."""
    from .bench import median_time, steady_allocator

    reply = sys.stdout
    sys.stdout = sys.stderr  # nothing a library prints may corrupt the replies
    steady_allocator()
    import numba

    threads = numba.get_num_threads()
    cases = [c for c in SUITES[entry] if c.name in names]
    calls = build_calls(library, entry, cases, threads)
    for command in sys.stdin:
        command = command.strip()
        if command == "warm":
            if library.startswith("numbaconv"):
                from ._compile import compiling_in_foreground

                with compiling_in_foreground():  # time kernels, never the fallback
                    for fn in calls.values():
                        fn()
            for fn in calls.values():
                fn()
            result = {"threads": threads}
        elif command == "time":
            result = {name: median_time(fn, repeats=5, min_time=0.05)
                      for name, fn in calls.items()}
        else:
            return
        reply.write(json.dumps(result) + "\n")
        reply.flush()


class _Worker:
    def __init__(self, library, entry, names):
        self.library = library
        self.process = subprocess.Popen(
            [sys.executable, "-m", "numbaconv._peers", library, entry, ",".join(names)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, command):
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.library} worker ended (exit code "
                               f"{self.process.wait()})")
        return json.loads(line)

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
            self.process.wait()


PAUSE = 0.3  # seconds between two workers' turns: the last one's thread pool goes idle


def measure(entry="forward", names=None, rounds=ROUNDS, libraries=None, progress=True):
    """Time ``entry``'s suite (or the cases ``names``) with numbaconv and each installed
    peer, each library in its own worker process, ``rounds`` rounds in rotating order.

    Returns ``dict(entry, cases, libraries, times, missing)``: ``times[library][case]``
    is the list of per-round times in seconds; ``missing`` the peers not installed.
    """
    cases = [c for c in SUITES[entry] if names is None or c.name in names]
    wanted = (OWN[entry],) + tuple(PEERS[entry] if libraries is None else libraries)
    present = [lib for lib in wanted if available(lib)]
    missing = [lib for lib in wanted if lib not in present]
    names = [c.name for c in cases]
    workers = [_Worker(lib, entry, names) for lib in present]
    times = {lib: {} for lib in present}
    try:
        for w in workers:  # compiles and warms up one library at a time
            w.ask("warm")
        steps = rounds * len(workers)
        for r in range(rounds):
            order = workers[r % len(workers):] + workers[:r % len(workers)]
            for i, w in enumerate(order):
                time.sleep(PAUSE)
                for name, seconds in w.ask("time").items():
                    times[w.library].setdefault(name, []).append(seconds)
                if progress:
                    done = r * len(workers) + i + 1
                    print(f"\r  {entry}: {done}/{steps} turns ({w.library})    ",
                          end="", file=sys.stderr, flush=True)
        if progress:
            print(file=sys.stderr)
    finally:
        for w in workers:
            w.close()
    return dict(entry=entry, cases=[asdict(c) for c in cases], libraries=present,
                times=times, missing=missing, rounds=rounds, own=OWN[entry])


def ratios(result):
    """Per case, the median over rounds of the own library's time (``result["own"]``:
    numbaconv, or numbaconv_cl for the layout entry) over each peer's (same round), and
    over the fastest peer's; ``{case: {peer | "fastest": ratio}}``."""
    own_library = result.get("own", "numbaconv")
    own = result["times"][own_library]
    peers = [lib for lib in result["libraries"] if lib != own_library]
    out = {}
    for case in result["cases"]:
        name = case["name"]
        if name not in own:
            continue
        row = {}
        for lib in peers:
            if name in result["times"][lib]:
                row[lib] = float(np.median(np.divide(own[name], result["times"][lib][name])))
        present = [result["times"][lib][name] for lib in peers if name in result["times"][lib]]
        if present:
            row["fastest"] = float(np.median(np.divide(own[name], np.min(present, axis=0))))
        out[name] = row
    return out


def format_result(result) -> str:
    """The table of :func:`measure`: the own library's median time, the peers' median
    times and the ratios, then geomeans per kind and over the suite."""
    own_library = result.get("own", "numbaconv")
    peers = [lib for lib in result["libraries"] if lib != own_library]
    rat = ratios(result)
    head = f"{'case':<16}{'kind':<13}{SHORT[own_library] + ' ms':>13}"
    for lib in peers:
        head += f"{SHORT[lib] + ' ms':>13}{'/' + SHORT[lib]:>10}"
    head += f"{'/fastest':>10}"
    lines = [f"bench --peers, entry {result['entry']}: median over {result['rounds']} "
             f"rounds, each library in its own process", head, "-" * len(head)]
    kinds = {}
    for case in result["cases"]:
        name = case["name"]
        if name not in rat:
            continue
        line = f"{name:<16}{case['kind']:<13}"
        line += f"{np.median(result['times'][own_library][name]) * 1e3:>13.3f}"
        for lib in peers:
            t = result["times"][lib].get(name)
            line += (f"{np.median(t) * 1e3:>13.3f}{rat[name][lib]:>10.2f}" if t
                     else f"{'-':>13}{'-':>10}")
        fastest = rat[name].get("fastest")
        line += f"{fastest:>10.2f}" if fastest else f"{'-':>10}"
        lines.append(line)
        kinds.setdefault(case["kind"], []).append(rat[name])
    lines.append(f"ratio = {SHORT[own_library]} time / peer time (< 1: {SHORT[own_library]} "
                 "faster), the median over rounds of the same round's ratio; nc = "
                 "numbaconv channels-first, nc_cl = numbaconv channels_last, torch = "
                 "PyTorch NCHW, torch_cl = PyTorch channels_last, ort = ONNX Runtime")
    for kind, rows in [*kinds.items(), ("all", [r for rs in kinds.values() for r in rs])]:
        parts = []
        for lib in peers + ["fastest"]:
            values = [r[lib] for r in rows if lib in r]
            if values:
                parts.append(f"/{SHORT.get(lib, lib)} {geomean(values):.2f}")
        worst = max((r["fastest"] for r in rows if "fastest" in r), default=None)
        lines.append(f"  geomean {kind:<13}" + "  ".join(parts)
                     + (f"  (worst /fastest {worst:.2f})" if worst else ""))
    if result["missing"]:
        lines.append("not installed, skipped: " + ", ".join(result["missing"])
                     + ' (pip install "numbaconv[peers]")')
    return "\n".join(lines)


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2], sys.argv[3].split(","))
