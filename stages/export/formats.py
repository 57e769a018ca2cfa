"""Load an uploaded TorchScript archive, ExportedProgram or pickled module, and its input signature.

All three are programs: they are opened only inside the sandboxed stage process (see the
trust boundary in docs). Once ``torch_model.check_upload`` has refused empty, damaged
and bomb-like archives, every failure to read one is ``invalid_model`` with what went
wrong and what to upload instead.

- TorchScript (``torch.jit.save``): ``torch.jit.load(map_location="cpu")``. The archive
  carries no input signature, so ``spec.inputs`` is required.
- ExportedProgram (``torch.export.save``): ``torch.export.load``; the reference comes
  from ``ep.module()``. Without ``spec.inputs`` the signature is the program's own:
  its user inputs' names, and the shapes and dtypes torch.export kept in the
  placeholders' metadata (symbolic sizes become named dynamic dimensions, sampled at
  the size of the program's example inputs).
- Pickled module (``torch.save(model)``, only when the operator enabled it):
  ``torch.load(weights_only=False, map_location="cpu")``, which runs the pickle's code;
  it must give a ``torch.nn.Module``. The pickle names its classes by reference, so they
  must be importable here (torchvision, transformers, torch's own layers). No signature:
  ``spec.inputs`` is required. litert-torch loads it the same way (``unpickle_module``).
"""

from __future__ import annotations

import importlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.kit.codes import StageCode
from stages.kit.contract import StageError
from stages.kit.failures import first_line
from stages.kit.spec import PlanSpec

TORCH_DTYPES = ("float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
INPUTS_EXAMPLE = '[{"name": "input", "shape": ["batch", 3, 224, 224], "dtype": "float32"}]'
# torch.export.load needs the classes named in a program's input/output tree (a
# transformers ModelOutput, say) to be importable; it names the missing one like this.
UNREGISTERED = re.compile(r"Deserializing ([\w.]+) in pytree is not registered")
MAX_IMPORT_RETRIES = 4


@dataclass
class Loaded:
    """A loaded model, ready for reference outputs and export."""

    model: Any  # called with the flat input tensors, in the signature's order
    inputs: list[dict[str, Any]]  # the signature: the spec's, or derived from the program
    inputs_source: str  # "spec" | "program"
    parameters: int
    vocab_size: int | None = None  # a transformers config's vocab_size, when there is one
    program: Any = None  # the ExportedProgram
    unpickled: dict[str, Any] | None = None  # how a pickled module was loaded, for the stage's info
    dim_names: dict[str, str] = field(default_factory=dict)  # program symbol -> spec dimension name


def require_inputs(spec: PlanSpec, model_format: str) -> list[dict[str, Any]]:
    from stages.kit import samples as sample_io

    if not spec.inputs:
        raise StageError(
            StageCode.INPUTS_REQUIRED,
            f"a {model_format} upload carries no input signature: give spec.inputs in call order, e.g. "
            + INPUTS_EXAMPLE,
        )
    return sample_io.input_specs(spec)


def load_torchscript(path: Path, spec: PlanSpec) -> Loaded:
    import torch

    inputs = require_inputs(spec, "TorchScript")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # a zip without TorchScript code, or not a zip at all
        raise StageError(
            StageCode.INVALID_MODEL,
            f"not a TorchScript archive: torch.jit.load could not read it ({first_line(exc, 300)}). "
            "Save the model with torch.jit.save(torch.jit.script(model) or torch.jit.trace(model, example)); "
            "for a state dict send model_format 'state_dict'",
        ) from None
    module.eval()
    return Loaded(module, inputs, "spec", int(sum(p.numel() for p in module.parameters())))


def load_pickled_module(path: Path, spec: PlanSpec, enabled: bool) -> Loaded:
    inputs = require_inputs(spec, "pickled_module")
    module = unpickle_module(path, enabled)
    vocab = getattr(getattr(module, "config", None), "vocab_size", None)
    return Loaded(
        module,
        inputs,
        "spec",
        int(sum(p.numel() for p in module.parameters())),
        vocab_size=vocab if isinstance(vocab, int) else None,
        unpickled={
            "call": "torch.load(path, weights_only=False, map_location='cpu')",
            "code_execution_allowed": True,
            "where": "inside the stage's sandboxed process (the job's stages[].isolation lists the layers applied)",
            "class": f"{type(module).__module__}.{type(module).__qualname__}",
            "seen_from_inside": _isolation_seen(),
        },
    )


def unpickle_module(path: Path, enabled: bool) -> Any:
    """A ``torch.save(model)`` file as a module in eval mode; its code runs as it loads.

    Callers are the sandboxed stages, and only for an explicit ``pickled_module``. The
    control plane accepts one only when the operator enabled it; ``enabled`` is that
    setting as the worker sees it now, so a job accepted before the operator turned it
    off is refused here too.
    """
    if not enabled:
        raise StageError(
            StageCode.FORMAT_DISABLED,
            "pickled modules run code when loaded and are disabled on this server; "
            "upload a state dict with an architecture instead",
        )
    import torch

    try:
        loaded = torch.load(path, weights_only=False, map_location="cpu")
    except (ModuleNotFoundError, AttributeError) as exc:  # a class the pickle names is not here
        raise StageError(
            StageCode.INVALID_MODEL,
            f"the pickled module refers to code that is not importable in the stage ({first_line(exc, 300)}): "
            "torch.save(model) stores classes by reference, so only modules built from torch, torchvision or "
            "transformers classes load here. Upload a state dict with an architecture, a TorchScript archive "
            "or an ExportedProgram instead",
        ) from None
    except Exception as exc:  # anything else the file's own code or the unpickler raised
        raise StageError(
            StageCode.INVALID_MODEL,
            f"not a pickled module: torch.load (weights_only=False) could not read it ({first_line(exc, 300)}). "
            "Save it with torch.save(model)",
        ) from None
    if not isinstance(loaded, torch.nn.Module):
        kind = f"{type(loaded).__module__}.{type(loaded).__qualname__}"
        hint = (
            ": it looks like a state dict or checkpoint; send model_format 'state_dict' with an architecture"
            if isinstance(loaded, dict)
            else ""
        )
        raise StageError(
            StageCode.INVALID_MODEL,
            f"model_format 'pickled_module' needs a torch.save(model) file holding a torch.nn.Module; "
            f"this one holds a {kind}{hint}",
        )
    config = getattr(loaded, "config", None)
    if config is not None and getattr(config, "use_cache", None) is True:
        config.use_cache = False  # causal language models export without a KV cache, as when built
    return loaded.eval()


def _isolation_seen() -> dict[str, Any]:
    """What the stage can see of its sandbox: the runner applies it, this only reports it."""
    seen: dict[str, Any] = {"no_new_privileges": None, "network_interfaces": None}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("NoNewPrivs:"):
                seen["no_new_privileges"] = line.split(":", 1)[1].strip() == "1"
        # /proc/self/net is the process's own network namespace: only "lo" when it has no network.
        rows = Path("/proc/self/net/dev").read_text().splitlines()[2:]
        seen["network_interfaces"] = sorted(row.split(":", 1)[0].strip() for row in rows if ":" in row)
    except OSError:
        pass
    return seen


def load_exported_program(path: Path, spec: PlanSpec, allowed: list[str] | tuple[str, ...]) -> Loaded:

    program = _load_program(path, allowed)
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    user_inputs = list(program.graph_signature.user_inputs)
    values = [placeholders[name].meta.get("val") if name in placeholders else None for name in user_inputs]
    examples = _example_leaves(program)
    if spec.inputs:
        inputs = _spec_inputs_for_program(spec, user_inputs, values, examples)
        source = "spec"
    else:
        inputs = _program_inputs(user_inputs, values, examples)
        source = "program"
    dim_names = _dim_names(inputs, values)
    state = program.state_dict
    parameters = sum(int(state[name].numel()) for name in program.graph_signature.parameters if name in state)
    call = _program_call_class()(program.module(), program.call_spec.in_spec)
    return Loaded(call.eval(), inputs, source, parameters, program=program, dim_names=dim_names)


def _load_program(path: Path, allowed: list[str] | tuple[str, ...]) -> Any:
    import torch

    imported: list[str] = []
    for _ in range(MAX_IMPORT_RETRIES):
        logged = _LogCapture()
        try:
            with logged:
                return torch.export.load(str(path))
        except Exception as exc:
            missing = _unregistered_type(exc, logged.messages)
            module_name = missing.rpartition(".")[0] if missing else ""
            if missing and module_name not in imported and _under(missing, allowed):
                # e.g. transformers.modeling_outputs.BaseModelOutput: defining it registers it.
                try:
                    importlib.import_module(module_name)
                except ImportError:
                    pass
                else:
                    imported.append(module_name)
                    continue
            if missing:
                raise StageError(
                    StageCode.INVALID_MODEL,
                    f"the ExportedProgram returns or takes a {missing!r}, which is not importable here "
                    f"(only classes under {list(allowed)} are). Export a module that returns tensors, "
                    "tuples or dicts of tensors",
                ) from None
            raise StageError(
                StageCode.INVALID_MODEL,
                f"not an ExportedProgram: torch.export.load could not read it ({first_line(exc, 300)}). "
                "Save it with torch.export.save(torch.export.export(model, example_args), path)",
            ) from None
    raise StageError(StageCode.INVALID_MODEL, "the ExportedProgram needs more classes than can be imported to load")


def _unregistered_type(exc: BaseException, logged: list[str]) -> str | None:
    # torch.export.load logs the underlying error as a warning and raises a generic one.
    texts = [*logged]
    current: BaseException | None = exc
    while current is not None:
        texts.append(str(current))
        current = current.__cause__ or current.__context__
    for text in texts:
        found = UNREGISTERED.search(text)
        if found:
            return found.group(1)
    return None


class _LogCapture(logging.Handler):
    """Collects what torch.export logs while it loads (its real reason for failing)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        error = record.exc_info[1] if record.exc_info else None
        while error is not None:
            self.messages.append(str(error))
            error = error.__cause__ or error.__context__

    def __enter__(self) -> _LogCapture:
        logging.getLogger("torch.export").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("torch.export").removeHandler(self)


def _under(dotted: str, allowed: list[str] | tuple[str, ...]) -> bool:
    return any(prefix.rstrip(".") and dotted.startswith(prefix.rstrip(".") + ".") for prefix in allowed)


def _example_leaves(program: Any) -> list[Any] | None:
    import torch
    from torch.utils import _pytree as pytree

    example = getattr(program, "example_inputs", None)
    if example is None:
        return None
    leaves = pytree.tree_leaves(example)
    return leaves if all(isinstance(leaf, torch.Tensor) for leaf in leaves) else None


def _dtype_name(value: Any) -> str | None:
    name = str(getattr(value, "dtype", "")).removeprefix("torch.")
    return name if name in TORCH_DTYPES else None


def _describe(user_inputs: list[str], values: list[Any]) -> str:
    parts = []
    for name, value in zip(user_inputs, values, strict=True):
        shape = [str(d) for d in getattr(value, "shape", [])]
        parts.append(f"{name} [{', '.join(shape)}] {_dtype_name(value) or type(value).__name__}")
    return "; ".join(parts)


def _program_inputs(user_inputs: list[str], values: list[Any], examples: list[Any] | None) -> list[dict[str, Any]]:
    import torch

    if not user_inputs:
        raise StageError(StageCode.INPUTS_REQUIRED, "the ExportedProgram has no user inputs to feed")
    names: dict[str, str] = {}
    inputs: list[dict[str, Any]] = []
    for index, (name, value) in enumerate(zip(user_inputs, values, strict=True)):
        dtype = _dtype_name(value) if isinstance(value, torch.Tensor) else None
        if dtype is None:
            raise StageError(
                StageCode.INPUTS_REQUIRED,
                f"the ExportedProgram's input {name!r} is not a tensor torch.export described "
                f"({_describe(user_inputs, values)}): give spec.inputs, e.g. {INPUTS_EXAMPLE}",
            )
        example = examples[index] if examples and index < len(examples) else None
        shape: list[int | str] = []
        sizes: list[int] = []
        for axis, dim in enumerate(value.shape):
            if isinstance(dim, torch.SymInt):
                symbol = str(dim)
                if symbol not in names:
                    names[symbol] = "batch" if axis == 0 and "batch" not in names.values() else f"{name}_dim{axis}"
                shape.append(names[symbol])
                size = int(example.shape[axis]) if example is not None else 1
                sizes.append(max(size, 1))
            else:
                shape.append(int(dim))
                sizes.append(int(dim))
        inputs.append({"name": name, "shape": shape, "dtype": dtype, "sample_shape": sizes})
    return inputs


def _spec_inputs_for_program(
    spec: PlanSpec, user_inputs: list[str], values: list[Any], examples: list[Any] | None
) -> list[dict[str, Any]]:
    import torch

    from stages.kit import samples as sample_io

    given = sample_io.input_specs(spec)
    if len(given) != len(user_inputs):
        raise StageError(
            StageCode.INPUT_MISMATCH,
            f"spec.inputs lists {len(given)} inputs but the ExportedProgram takes {len(user_inputs)}: "
            f"{_describe(user_inputs, values)}",
        )
    inputs = []
    for index, (item, value) in enumerate(zip(given, values, strict=True)):
        item = dict(item)
        example = examples[index] if examples and index < len(examples) else None
        shape = getattr(value, "shape", None)
        if example is not None and shape is not None and len(shape) == len(item["shape"]):
            # A named dimension is sampled at the program's example size where it is
            # dynamic there (size 1 may be outside its range), at its size where static.
            item["sample_shape"] = [
                d if isinstance(d, int) else int(example.shape[a] if isinstance(shape[a], torch.SymInt) else shape[a])
                for a, d in enumerate(item["shape"])
            ]
        inputs.append(item)
    return inputs


def _dim_names(inputs: list[dict[str, Any]], values: list[Any]) -> dict[str, str]:
    """The program's dimension symbols -> the signature's names, to name the ONNX file's dimensions."""
    import torch

    names: dict[str, str] = {}
    for item, value in zip(inputs, values, strict=True):
        shape = getattr(value, "shape", None)
        if shape is None or len(shape) != len(item["shape"]):
            continue
        for dim, wanted in zip(shape, item["shape"], strict=True):
            if isinstance(dim, torch.SymInt) and isinstance(wanted, str) and re.fullmatch(r"s\d+", str(dim)):
                names.setdefault(str(dim), wanted)
    return names


def _program_call_class() -> Any:
    import torch
    from torch.utils import _pytree as pytree

    class _ProgramCall(torch.nn.Module):
        """ep.module() called with the flat input tensors (its own call takes args and kwargs)."""

        def __init__(self, module: torch.nn.Module, in_spec: Any) -> None:
            super().__init__()
            self.module = module
            self.in_spec = in_spec

        def forward(self, *flat: Any) -> Any:
            args, kwargs = pytree.tree_unflatten(list(flat), self.in_spec)
            return self.module(*args, **kwargs)

        def train(self, mode: bool = True) -> _ProgramCall:
            # An unlifted program refuses train() (even train(False), which the legacy
            # exporter calls): it is always in the mode it was exported in.
            self.training = mode
            return self

    return _ProgramCall
