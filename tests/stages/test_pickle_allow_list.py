"""The submission scan allows exactly what ``torch.load(weights_only=True)`` allows.

``stages.export.pickle_scan.ALLOWED_GLOBALS`` is a table written out by hand so the control plane
needs no torch; this compares it with the installed torch's own list, so a torch upgrade
that changes the list fails here rather than refusing good files or passing bad ones.
"""

from __future__ import annotations

import json
import subprocess

from stages.export.pickle_scan import ALLOWED_GLOBALS
from tests.support.toolchain import toolchain_python

TORCH_ALLOWED = """
import json
from torch._weights_only_unpickler import _get_allowed_globals

print(json.dumps(sorted(_get_allowed_globals())))
"""


def test_the_allow_list_is_torchs() -> None:
    proc = subprocess.run(
        [str(toolchain_python("torch")), "-c", TORCH_ALLOWED], capture_output=True, text=True, check=True, timeout=300
    )
    torch_allowed = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert len(torch_allowed) > 100  # dtypes, storages, tensor classes, rebuild functions
    assert sorted(torch_allowed - ALLOWED_GLOBALS) == []  # good files we would refuse
    assert sorted(ALLOWED_GLOBALS - torch_allowed) == []  # globals torch refuses that we would pass
