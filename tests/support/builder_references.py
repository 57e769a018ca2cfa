"""Every torchvision builder's state dict through export.prepare's loader, in the torch env.

    python builder_references.py WORK_DIR CONFIG_JSON

For each classification and segmentation builder that ``torchvision.models.list_models``
names: build it (seed 1234, so the stage's own seed-0 initialization differs), save its
``state_dict()`` with ``torch.save``, run the model itself on the samples the stage will
synthesize, free it, then hand the file to ``stages.export.prepare.load_reference`` (the
first half of the ``export.prepare`` stage: upload checks, state-dict loader, build,
strict load, samples, reference outputs; no export). Prints one JSON line per builder:
what the stage returned or raised, and how far its reference is from the saved model's
own outputs (the first line lists every builder). Run by test_state_dict_builders.py
with PYTHONPATH set to the stages package, never imported by the test process.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

SAVED_SEED = 1234  # the stage seeds 0: a loader that kept the fresh weights would not match


def builders() -> list[tuple[str, str, Any]]:
    """(family, name, module) for every builder torchvision lists, classification then segmentation."""
    import torchvision

    found = []
    for family, module in (
        ("classification", torchvision.models),
        ("segmentation", torchvision.models.segmentation),
    ):
        found += [(family, name, module) for name in torchvision.models.list_models(module=module)]
    return found


def check(work: Path, family: str, name: str, module: Any, config: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    from stages.export.outputs import reference
    from stages.export.prepare import load_reference
    from stages.kit import samples as sample_io
    from stages.kit.contract import StageError, StageRequest
    from stages.kit.spec import PlanSpec

    size = int(config["size"])
    kwargs = {"num_classes": int(config["num_classes"]), **config.get("kwargs", {})}
    spec = PlanSpec.from_json(
        {
            "model_format": "state_dict",
            "architecture": {"name": f"{module.__name__}.{name}", "kwargs": kwargs},
            "inputs": [{"name": "input", "shape": [1, 3, size, size], "dtype": "float32"}],
            "validation_samples": 1,
            "seed": 0,
        }
    )
    path = work / f"{name}.pt"
    started = time.monotonic()
    torch.manual_seed(SAVED_SEED)
    extra = {"weights_backbone": None} if family == "segmentation" else {}
    model = getattr(module, name)(weights=None, **extra, **kwargs).eval()
    torch.save(model.state_dict(), path)
    synthetic = sample_io.synthesize(sample_io.input_specs(spec), spec.validation_samples, spec.seed)
    _, expected = reference(model, synthetic, ["input"])
    del model
    gc.collect()
    built = time.monotonic() - started
    row: dict[str, Any] = {"family": family, "name": name, "size": size, "num_classes": kwargs["num_classes"]}
    request = StageRequest(
        "export.prepare", {"model": str(path)}, spec, {"allowed_architectures": ["torchvision.models."]}, work / "out"
    )
    try:
        done = load_reference(request, "state_dict")
    except StageError as exc:
        row.update(code=exc.code, message=exc.message)
    else:
        row["outputs"] = {key: list(value.shape) for key, value in done.reference.items()}
        row["finite"] = all(bool(np.isfinite(value).all()) for value in done.reference.values())
        row["max_error_of_scale"] = max(
            float(np.abs(done.reference[key] - value).max() / max(float(np.abs(value).max()), 1e-12))
            for key, value in expected.items()
        )
        del done
    finally:
        path.unlink(missing_ok=True)
        gc.collect()
    row["seconds"] = round(time.monotonic() - started, 2)
    row["seconds_saving"] = round(built, 2)
    return row


def main(work: Path, config: dict[str, Any]) -> None:
    import torch

    torch.set_num_threads(1)
    work.mkdir(parents=True, exist_ok=True)
    only, skip = set(config.get("only") or []), set(config.get("skip") or [])
    listed = builders()
    print(json.dumps({"listed": [[family, name] for family, name, _ in listed]}), flush=True)
    for family, name, module in listed:
        if (only and name not in only) or name in skip:
            continue
        settings = {**config["default"], **config["builders"].get(name, {})}
        print(json.dumps(check(work, family, name, module, settings)), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), json.loads(sys.argv[2]))
