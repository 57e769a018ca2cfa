"""A job's recorded stage results, read once into typed outcomes and looked up by role."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from domain.jobs import names
from domain.jobs.states import StageState
from domain.models import StageRun
from stages.kit.results import StageOutcome

NOTHING = StageOutcome()  # a stage that did not succeed: no outputs, metrics or info


@dataclass(frozen=True)
class Records:
    """The outcomes of a job's succeeded stages, by stage name."""

    by_name: dict[str, StageOutcome] = field(default_factory=dict)

    @classmethod
    def of(cls, raw: Mapping[str, StageOutcome | Mapping[str, Any]]) -> Records:
        """From outcomes or their recorded JSON, by stage name."""
        return cls(
            {
                name: value if isinstance(value, StageOutcome) else StageOutcome.from_json(dict(value))
                for name, value in raw.items()
            }
        )

    @classmethod
    def of_runs(cls, runs: Iterable[StageRun]) -> Records:
        return cls(
            {run.name: StageOutcome.from_json(run.result or {}) for run in runs if run.state == StageState.SUCCEEDED}
        )

    def __contains__(self, stage: str) -> bool:
        return stage in self.by_name

    def stage(self, name: str) -> StageOutcome | None:
        return self.by_name.get(name)

    @property
    def export(self) -> StageOutcome:
        return self.by_name.get(names.EXPORT, NOTHING)

    @property
    def quantize(self) -> StageOutcome:
        return self.by_name.get(names.QUANTIZE, NOTHING)

    def convert(self, converter: str) -> StageOutcome | None:
        return self.by_name.get(names.convert(converter))

    def validation(self, converter: str) -> StageOutcome:
        """The float32 validation of a candidate's .tflite: TensorFlow's run of a file that
        needs flex ops when there was one, else stock LiteRT's (``NOTHING`` without either)."""
        flex = self.by_name.get(names.validate_flex(converter))
        if flex is not None:
            return flex
        return self.by_name.get(names.validate(converter), NOTHING)
