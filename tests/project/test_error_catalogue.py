"""One error catalogue: ``ErrorCode`` (problem+json), ``StageCode`` (jobs, stages, precisions),
the two tables under docs/api.md "Error codes", and no code spelled as a bare string.

The bare-string guard reads the source of app/, worker/, domain/ and stages/ with ``ast``: a
``code=`` keyword, the code argument of ``StageError``/``StageFailure``/``fail_job`` (and of
``StageError`` subclasses), a ``"code"`` entry of a dict literal, and the ``code`` of a
``ModelPortError`` subclass must be an expression (an enum member), never a string literal.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from app.api.problems import problem_responses
from app.core.codes import ErrorCode
from app.core.errors import BY_STATUS, ModelPortError, problem_body
from stages.kit.codes import StageCode
from stages.kit.contract import StageError, error_json
from stages.registry import ROWS, UNFORESEEN, unforeseen
from worker.runner import StageFailure

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("app", "worker", "domain", "stages")
API_TABLE = "Problem codes (`ErrorCode`)"
STAGE_TABLE = "Job, stage and precision codes (`StageCode`)"
# Calls whose first positional argument is a code.
CODE_FIRST = {"StageError", "StageFailure"}  # and the StageError subclasses without an __init__
CODE_THIRD = {"fail_job"}  # fail_job(job, run, code, message)


def documented(table: str) -> list[str]:
    """The codes in the first column of the docs/api.md table under ``### <table>``."""
    text = (ROOT / "docs" / "api.md").read_text()
    assert f"### {table}\n" in text, f"docs/api.md has no table {table!r}"
    section = text.split(f"### {table}\n", 1)[1].split("\n#", 1)[0]
    return re.findall(r"^\| `([a-z0-9_]+)` \|", section, flags=re.MULTILINE)


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _is_text(node: ast.expr | None) -> bool:
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str))


def _subclasses(trees: dict[str, ast.Module], root: str, *, same_init: bool = False) -> set[str]:
    """Names of the classes in ``trees`` that derive from ``root``, ``root`` included; with
    ``same_init``, only those that keep ``root``'s ``__init__`` (define none on the way)."""
    classes = [node for tree in trees.values() for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    names = {root}
    while True:
        more = {
            c.name
            for c in classes
            if c.name not in names
            and any(_name(b) in names for b in c.bases)
            and not (same_init and any(isinstance(f, ast.FunctionDef) and f.name == "__init__" for f in c.body))
        }
        if not more:
            return names
        names |= more


def _class_codes(cls: ast.ClassDef) -> list[ast.expr]:
    """What a class body assigns to ``code``: ``code = v``, ``code: T = v``, ``status, code, title = s, v, t``."""
    values: list[ast.expr] = []
    for stmt in cls.body:
        if isinstance(stmt, ast.AnnAssign) and _name(stmt.target) == "code" and stmt.value is not None:
            values.append(stmt.value)
        elif isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                if _name(target) == "code":
                    values.append(stmt.value)
                elif isinstance(target, ast.Tuple) and isinstance(stmt.value, ast.Tuple):
                    values += [v for t, v in zip(target.elts, stmt.value.elts, strict=False) if _name(t) == "code"]
    return values


def bare_codes(trees: dict[str, ast.Module]) -> list[str]:
    """``path:line: what`` for every code spelled as a string literal in ``trees`` (path -> module)."""
    stage_errors = _subclasses(trees, "StageError")
    code_first = CODE_FIRST | _subclasses(trees, "StageError", same_init=True)
    domain_errors = _subclasses(trees, "ModelPortError")
    found: list[str] = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            where = f"{path}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ClassDef) and node.name in domain_errors:
                found += [f"{where}: class {node.name} code" for value in _class_codes(node) if _is_text(value)]
            if isinstance(node, ast.ClassDef) and node.name in stage_errors - {"StageError"}:
                for call in ast.walk(node):
                    if (
                        isinstance(call, ast.Call)
                        and _name(call.func) == "__init__"
                        and call.args
                        and _is_text(call.args[0])
                    ):
                        found.append(f"{where}: {node.name}.__init__ code")
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == "code" and _is_text(value):
                        found.append(f'{where}: {{"code": ...}}')
            if not isinstance(node, ast.Call):
                continue
            called = _name(node.func)
            found += [f"{where}: {called}(code=...)" for kw in node.keywords if kw.arg == "code" and _is_text(kw.value)]
            if called in code_first and node.args and _is_text(node.args[0]):
                found.append(f"{where}: {called}(<code>, ...)")
            if called in CODE_THIRD and len(node.args) > 2 and _is_text(node.args[2]):
                found.append(f"{where}: {called}(..., <code>, ...)")
    return found


def source_trees() -> dict[str, ast.Module]:
    return {
        str(path.relative_to(ROOT)): ast.parse(path.read_text(), filename=str(path))
        for top in SCANNED
        for path in sorted((ROOT / top).rglob("*.py"))
    }


@pytest.mark.parametrize(("table", "enum"), [(API_TABLE, ErrorCode), (STAGE_TABLE, StageCode)])
def test_the_docs_table_lists_every_member_and_nothing_else(table: str, enum: type[ErrorCode | StageCode]) -> None:
    rows = documented(table)
    assert len(rows) > 30, f"the table {table!r} was not parsed"
    assert sorted({c for c in rows if rows.count(c) > 1}) == [], "a code is documented twice"
    assert sorted(set(enum) - set(rows)) == [], "members missing from docs/api.md"
    assert sorted(set(rows) - set(enum)) == [], "documented codes that are no member"


def test_no_code_is_a_bare_string() -> None:
    assert bare_codes(source_trees()) == []


@pytest.mark.parametrize(
    "source",
    [
        'raise NotFound("no job", code=<job_not_found>)',
        'raise InvalidRequest("bad", code=f<invalid_{what}>)',
        'raise StageError(<export_failed>, "the export failed")',
        'raise StageFailure(<timeout>, "too slow", tail)',
        'fail_job(job, run, <worker_lost>, "lost")',
        'failed[p] = {"code": <runtime_failed>, "reason": why}',
        'class Gone(ModelPortError):\n    status, code, title = 410, <gone>, "Gone"',
        "class Gone(ModelPortError): ...\nclass Later(Gone):\n    code: ClassVar[str] = <later>",
        "class Late(StageError):\n    def __init__(self, m):\n        super().__init__(<late>, m)",
        'raise Late(<late>, "m")\nclass Late(StageError):\n    pass',
    ],
)
def test_the_guard_finds_a_bare_string(source: str) -> None:
    """Each way of spelling a code is caught as a literal (``<code>``), and passes as a member."""
    base = ast.parse("class ModelPortError(Exception): ...\nclass StageError(Exception): ...")
    literal = re.sub(r"<([^>]*)>", r'"\1"', source)
    member = re.sub(r"f?<([a-z_]*)[^>]*>", r"Code.\1", source)
    assert len(bare_codes({"base.py": base, "new.py": ast.parse(literal)})) == 1
    assert bare_codes({"base.py": base, "new.py": ast.parse(member)}) == []


def test_codes_are_members_where_they_are_kept() -> None:
    domain_errors = [cls for cls in BY_STATUS.values() if issubclass(cls, ModelPortError)]
    assert all(isinstance(cls.code, ErrorCode) for cls in domain_errors)
    assert sorted(BY_STATUS) == [400, 401, 403, 404, 405, 406, 409, 410, 413, 415, 422, 500, 503]
    assert all(cls.status == status for status, cls in BY_STATUS.items())
    assert all(isinstance(row.unforeseen.code, StageCode) for row in ROWS)
    assert isinstance(UNFORESEEN.code, StageCode)
    assert unforeseen("convert.onnx2tf")[0] is StageCode.CONVERSION_FAILED
    assert unforeseen("selftest.echo")[0] is StageCode.STAGE_FAILED


def test_status_titles_and_descriptions_come_from_the_error_classes() -> None:
    declared = problem_responses(401, 404, 410, 422, 503, 418)
    assert declared[401]["description"] == "Missing or invalid API key"
    assert declared[410]["description"] == "Removed under the retention policy"
    assert declared[422]["description"] == "The request cannot be processed as sent"
    assert declared[503]["description"] == "A dependency is unavailable"
    assert declared[418]["description"] == "Error"
    assert [BY_STATUS[s].title for s in (404, 410, 422, 500)] == [
        "Not found",
        "Gone",
        "Unprocessable request",
        "Internal server error",
    ]


def test_members_serialize_as_their_wire_strings() -> None:
    """The stage result JSON and the problem JSON are byte for byte what the strings gave."""
    stage = json.dumps(error_json(StageError(StageCode.EXPORT_FAILED, "the export failed")))
    assert stage == '{"ok": false, "error": {"code": "export_failed", "message": "the export failed"}}'
    problem = json.dumps(problem_body(404, ErrorCode.JOB_NOT_FOUND, "Not found", "no job"))
    assert problem == (
        '{"type": "https://modelport.dev/problems/job_not_found", "title": "Not found", '
        '"status": 404, "detail": "no job", "code": "job_not_found"}'
    )
    failure = StageFailure(StageCode.STAGE_CRASHED, "killed by SIGKILL")
    assert (f"{failure.code}", str(failure.code), failure.code == "stage_crashed") == (
        "stage_crashed",
        "stage_crashed",
        True,
    )
