from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import CallerDep, SettingsDep
from app.api.problems import problem_responses
from app.services import toolchains
from modelport.schemas.job import ToolchainOut

router = APIRouter(prefix="/v1/toolchains", tags=["toolchains"])


@router.get(
    "",
    response_model=list[ToolchainOut],
    responses=problem_responses(401),
    summary="Installed toolchains with exact package versions",
)
def list_toolchains(caller: CallerDep, settings: SettingsDep) -> list[ToolchainOut]:
    return toolchains.list_toolchains(settings)
