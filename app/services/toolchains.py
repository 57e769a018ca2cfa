"""The toolchains as the API lists them: pins, readiness, converters, the broker queue."""

from __future__ import annotations

from domain.config import Settings
from domain.jobs.plan import CONVERTERS
from domain.toolchains import TOOLCHAINS, queue_name
from modelport.schemas.job import ToolchainOut


def list_toolchains(settings: Settings) -> list[ToolchainOut]:
    """One entry per toolchain, in registry order; ``enabled`` is the converters of it that
    ``MODELPORT_ENABLED_TOOLCHAINS`` allows."""
    items = []
    for toolchain in TOOLCHAINS.values():
        converters = [c.name for c in CONVERTERS.values() if c.env == toolchain.name]
        items.append(
            ToolchainOut(
                name=toolchain.name,
                summary=toolchain.summary,
                queue=queue_name(settings, toolchain.name),
                ready=toolchain.is_ready(),
                python=toolchain.built_python(),
                lock_sha256=toolchain.lock_hash,
                converters=converters,
                enabled=[name for name in converters if name in settings.conversion.enabled_toolchains],
                packages=toolchain.pins(),
            )
        )
    return items
