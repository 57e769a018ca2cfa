"""What a stage process used, as its result reports it: start-up time and peak memory.

**Start-up.**
A fresh stage interpreter pays twice before its stage does useful work: the interpreter
starts (``python -m stages``: site, the ``stages`` package), then the stage imports its
framework (torch, tensorflow, onnx2tf…) at its first use. A child forked from a warm
parent (``stages.kit.forkserver``) finds both done. ``install`` (called by
``stages.__main__`` as the stage starts) notes the wall-clock moment the stage's own code
begins, and times the first load of each framework package listed in ``FRAMEWORKS``
(a package already imported, as in a warm child, costs nothing and is not counted).
``startup`` is written into the result file as ``startup``::

    {"entered_at": 1764583200.123,           # time.time() when the stage code began
     "framework_import_seconds": 4.71,       # loading the FRAMEWORKS packages this stage imported
     "frameworks": ["torch", "onnx"]}        # those it loaded itself (not found preloaded)

The worker adds ``entered_at`` minus the moment it launched the process (the interpreter's
own start, or a warm parent's fork) to ``framework_import_seconds``: the stage's
``startup_seconds``. Only a package's top-level load is timed (what a warm parent
preloads); a submodule a stage imports later (``torch.onnx``) is the stage's work, warm or
cold alike. Processes a stage starts itself (the LiteRT runtime child, onnx2tf's
``onnxsim``) are not counted.

**Peak memory.** ``peak_memory`` (the result's ``usage``) is the process's own high-water
mark (``VmHWM``: kept per address space, so a fresh interpreter's starts at its ``exec``,
not at the fork of the worker that launched it, which ``ru_maxrss`` would count) and the
largest ``ru_maxrss`` of the processes it started and waited for. The worker's watchdog
adds its samples of the whole process tree (a stage and its runtime child at once).
"""

from __future__ import annotations

import sys
import time
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

# The frameworks the toolchains' stages import (worker.warm.PRELOAD's lists, and what their
# stages import besides): the seconds a warm parent saves.
FRAMEWORKS = frozenset(
    {
        "numpy",
        "torch",
        "torchvision",
        "transformers",
        "timm",
        "onnx",
        "onnxruntime",
        "onnxsim",
        "onnxscript",
        "onnx2tf",
        "onnx_tf",
        "tensorflow",
        "tf_keras",
        "keras",
        "litert_torch",
        "ai_edge_litert",
        "ai_edge_quantizer",
    }
)


class _ImportClock(MetaPathFinder):
    """Finds nothing itself: it wraps the loader another finder returns for a framework's
    top-level package, and times that package's execution (the outermost one only: torchvision
    importing torch counts once)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.loaded: list[str] = []
        self._depth = 0
        self._finding = False

    def find_spec(self, fullname: str, path: Any, target: ModuleType | None = None) -> ModuleSpec | None:
        if "." in fullname or fullname not in FRAMEWORKS or self._finding:
            return None
        self._finding = True
        try:
            spec = next(
                (
                    found
                    for finder in sys.meta_path
                    if finder is not self and hasattr(finder, "find_spec")
                    for found in [finder.find_spec(fullname, path, target)]
                    if found is not None
                ),
                None,
            )
        finally:
            self._finding = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        execute = spec.loader.exec_module

        def timed(module: ModuleType) -> None:
            if self._depth:
                execute(module)
                return
            self._depth += 1
            started = time.perf_counter()
            try:
                execute(module)
            finally:
                self._depth -= 1
                self.seconds += time.perf_counter() - started
                self.loaded.append(fullname)

        try:
            spec.loader.exec_module = timed  # type: ignore[method-assign]
        except AttributeError:  # a loader that refuses attributes is left untimed
            pass
        return spec


_clock: _ImportClock | None = None
_entered_at: float | None = None


def install() -> None:
    """Start the clock: the stage's code begins now; framework loads from here on are timed."""
    global _clock, _entered_at
    _entered_at = time.time()
    if _clock is None:
        _clock = _ImportClock()
        sys.meta_path.insert(0, _clock)


def startup() -> dict[str, Any]:
    """``{"entered_at", "framework_import_seconds", "frameworks"}`` (see the module docstring)."""
    return {
        "entered_at": _entered_at,
        "framework_import_seconds": round(_clock.seconds, 3) if _clock else 0.0,
        "frameworks": list(_clock.loaded) if _clock else [],
    }


def peak_memory() -> dict[str, int | None]:
    """``{"self_peak_rss_bytes", "children_peak_rss_bytes"}`` of this process (see the module
    docstring); ``self_peak_rss_bytes`` is None where ``/proc/self/status`` has no ``VmHWM``."""
    import resource

    own = None
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    own = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {
        "self_peak_rss_bytes": own,
        "children_peak_rss_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    }
