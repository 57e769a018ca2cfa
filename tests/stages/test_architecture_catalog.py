"""``domain/architectures.json`` is what the pinned torch environment really offers.

The API checks a submitted ``architecture.name`` against that file (it has no torchvision), so
a torch lock that moves torchvision or transformers without ``make catalog`` would refuse real
builders or accept new misspellings: this runs the generator in the torch environment and
compares, name by name.
"""

from __future__ import annotations

import json
import os
import subprocess

from domain import architectures
from domain.toolchains import stages_pythonpath
from tests.support.toolchain import toolchain_python


def test_the_committed_catalog_is_the_torch_environments() -> None:
    result = subprocess.run(
        [str(toolchain_python("torch")), "-m", "stages.export.catalog"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": stages_pythonpath()},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    fresh: dict[str, list[str]] = json.loads(result.stdout)
    committed = json.loads(architectures.CATALOG.read_text())
    assert sorted(fresh) == sorted(committed), "modules differ: run `make catalog`"
    for module, names in fresh.items():
        assert names == committed[module], f"{module}: names differ: run `make catalog`"
    # The builders users name most are there (a generator that lost a package would fail above too).
    assert {"resnet18", "mobilenet_v2", "vit_b_16"} <= set(committed["torchvision.models"])
    assert "lraspp_mobilenet_v3_large" in committed["torchvision.models.segmentation"]
    assert {"BertModel", "GPT2LMHeadModel"} <= set(committed["transformers"])
