"""How the recipe is computed: precision, compilation and how many features share a pass.

None of these change what is optimized, only how fast and in what arithmetic; the tolerance
between precisions is measured by `benchmarks/check_engine.py` (results in benchmarks/results/).
Every choice has an "auto" that picks by device, so the same config runs on a laptop and a GPU.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Callable, Iterator, Literal

import torch
from torch import nn

from sweep.core.validation import Count, Fraction, config_dataclass
from sweep.models.anatomy import Anatomy, Block

log = logging.getLogger(__name__)

#: On CPUs, passes of 2 features (16 images) were measured fastest on 2 cores: larger passes fall
#: out of cache and got slower per image (one 128-image pass ran at 0.55x the per-image rate; that
#: first measurement's CSV was lost to a .gitignore rule, benchmarks/results/README.md).
CPU_FEATURES_PER_PASS = 2


@config_dataclass
class Engine:
    """Execution settings of the optimization loop, resolved per device by `resolved`.

    precision: fp32, or bf16 autocast for the network (the image, loss, TV and Adam stay fp32);
        auto = bf16 where the device computes bf16 natively (CUDA GPUs from Ampere on, CPUs with
        AVX512-BF16 or AMX), fp32 elsewhere.
    compile: "on" compiles the blocks that run in full before the hooked one (regional
        compilation; the hooked block stays eager so its tap can stop the pass); "step" compiles
        the whole step (augmentation, a network cut at the tap, feature, TV, loss) as one graph
        per layer, falling back to "on" with one log line where the site cannot be cut; auto = on
        for CUDA GPUs (the measured default), off elsewhere.
    compile_mode: torch.compile's mode: default, reduce-overhead (CUDA graphs for the static-shape
        loop) or max-autotune-no-cudagraphs.
    adam: the optimizer's kernels: foreach (one kernel per op over all images), fused (one kernel
        for the whole update); auto = foreach, the measured default.
    features_per_pass: features whose images share one forward/backward; None = auto: 2 on
        CPUs, on accelerators as many as fit `memory_fraction` of the free memory.
    """

    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: Literal["auto", "on", "off", "step"] = "auto"
    features_per_pass: Count | None = None
    memory_fraction: Fraction = 0.8
    compile_mode: Literal["default", "reduce-overhead", "max-autotune-no-cudagraphs"] = "default"
    adam: Literal["auto", "foreach", "fused"] = "auto"

    def resolved(self, device: torch.device) -> "Engine":
        """This engine with "auto" replaced by the device's choice (features_per_pass stays None
        on accelerators: it is fitted to memory once the batch is known)."""
        gpu = device.type == "cuda"
        per_pass = self.features_per_pass
        if per_pass is None and device.type == "cpu":
            per_pass = CPU_FEATURES_PER_PASS
        precision = self.precision
        if precision == "auto":
            precision = "bf16" if native_bf16(device) else "fp32"
        return Engine(precision=precision,
                      compile=("on" if gpu else "off") if self.compile == "auto" else self.compile,
                      features_per_pass=per_pass, memory_fraction=self.memory_fraction,
                      compile_mode=self.compile_mode, adam="foreach" if self.adam == "auto" else self.adam)

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The network's arithmetic: bf16 autocast, or nothing for fp32."""
        if self.precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def native_bf16(device: torch.device) -> bool:
    """Whether `device` has bf16 arithmetic in hardware (emulated bf16 is slower than fp32)."""
    try:
        if device.type == "cuda":
            return torch.cuda.is_bf16_supported(including_emulation=False)
        if device.type == "cpu":
            return any(getattr(torch.cpu, probe, lambda: False)()
                       for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    except (RuntimeError, AssertionError, TypeError):
        pass
    return False


def _compiled_call(module: nn.Module) -> Callable:
    """One compiled `_call_impl` per module, kept on the module so later batches reuse it."""
    fn = module.__dict__.get("_sweep_compiled")
    if fn is None:
        fn = torch.compile(module._call_impl)
        module.__dict__["_sweep_compiled"] = fn
    return fn


@contextlib.contextmanager
def compiled_trunk(net: nn.Module, anatomy: Anatomy, block: Block, enabled: bool) -> Iterator[None]:
    """Within the context, blocks before `block` run compiled; afterwards the network is as it was.

    The hooked block and everything after it stay eager: its tap raises to stop the forward
    pass, which a compiled graph would have to break around anyway.
    """
    if not enabled:
        yield
        return
    target = block.site(next(iter(block.sites))).module
    modules = dict(net.named_modules())
    trunk = [modules[b.name] for b in anatomy.blocks
             if b.index < block.index and b.name in modules and b.name != block.name
             and not target.startswith(b.name + ".")]
    for mod in trunk:
        mod._compiled_call_impl = _compiled_call(mod)
    try:
        yield
    finally:
        for mod in trunk:
            mod._compiled_call_impl = None


def _memory_api(name: str, device: torch.device) -> Callable:
    """torch.accelerator's memory function `name`, or the device module's on torch versions without it."""
    fn = getattr(torch.accelerator, name, None)
    if fn is None:
        fn = getattr(getattr(torch, device.type), "mem_get_info" if name == "get_memory_info" else name)
    return fn


def free_memory(device: torch.device) -> int:
    """Bytes the allocator can still get on an accelerator (free device memory + its cached blocks)."""
    free, _total = _memory_api("get_memory_info", device)(device)
    cached = _memory_api("memory_reserved", device)(device) - _memory_api("memory_allocated", device)(device)
    return int(free + cached)


def passes_that_fit(peaks: dict[int, float], n_features: int, free_bytes: float, fraction: float) -> int:
    """Features per pass from measured peak bytes of passes of k features ({k: bytes}, two k's).

    Linear in k (fixed + k * per_feature); the largest k within fraction * free_bytes, then evened
    out so every pass has the same size (one compiled shape, no small remainder pass).
    """
    small, large = min(peaks), max(peaks)
    per_feature = max((peaks[large] - peaks[small]) / max(large - small, 1), 1.0)
    fixed = max(peaks[small] - small * per_feature, 0.0)
    fit = max(1, min(n_features, int((free_bytes * fraction - fixed) // per_feature)))
    passes = math.ceil(n_features / fit)
    return math.ceil(n_features / passes)


def fit_features_per_pass(run_pass: Callable[[int], None], n_features: int, device: torch.device,
                          fraction: float) -> int:
    """Largest features-per-pass that fits `fraction` of the accelerator's free memory.

    Peak memory of a pass (forward + backward) is measured for 1 and for k <= 4 features.
    """
    if n_features == 1:
        return 1
    peaks = {}
    try:
        for k in sorted({1, min(n_features, 4)}):
            torch.accelerator.synchronize(device)
            _memory_api("reset_peak_memory_stats", device)(device)
            base = _memory_api("memory_allocated", device)(device)
            run_pass(k)
            torch.accelerator.synchronize(device)
            peaks[k] = _memory_api("max_memory_allocated", device)(device) - base
        free = free_memory(device)
    except (AttributeError, RuntimeError, NotImplementedError) as exc:
        log.warning("cannot read %s memory (%s); running all %d features in one pass", device, exc, n_features)
        return n_features
    size = passes_that_fit(peaks, n_features, free, fraction)
    log.info("features per pass: %d of %d (peak %.0f MiB for 1 feature, %.0f MiB for %d)", size, n_features,
             peaks[1] / 2**20, peaks[max(peaks)] / 2**20, max(peaks))
    return size
