from __future__ import annotations

import json
import re

from fastapi import APIRouter

from app.api.deps import CallerDep, SettingsDep
from domain.jobs.plan import CONVERTERS
from domain.toolchains import TOOLCHAINS
from modelport.schemas.job import ToolchainOut
from modelport.schemas.problem import problem_responses
from worker.celery_app import queue_name

router = APIRouter(prefix="/v1/toolchains", tags=["toolchains"])
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;]+)")


@router.get(
    "",
    response_model=list[ToolchainOut],
    responses=problem_responses(401),
    summary="Installed toolchains with exact package versions",
)
def list_toolchains(caller: CallerDep, settings: SettingsDep) -> list[ToolchainOut]:
    items = []
    for toolchain in TOOLCHAINS.values():
        packages = {}
        for line in toolchain.lock_file.read_text().splitlines():
            match = _PIN.match(line.strip())
            if match:
                packages[match.group(1).lower()] = match.group(2)
        ready = toolchain.is_ready()
        python = toolchain.python
        if ready:
            python = json.loads(toolchain.ready_marker.read_text()).get("python", python)
        converters = [c.name for c in CONVERTERS.values() if c.env == toolchain.name]
        enabled = [name for name in converters if name in settings.conversion.enabled_toolchains]
        items.append(
            ToolchainOut(
                name=toolchain.name,
                summary=toolchain.summary,
                queue=queue_name(toolchain.name),
                ready=ready,
                python=python,
                lock_sha256=toolchain.lock_hash,
                converters=converters,
                enabled=enabled,
                packages=packages,
            )
        )
    return items
