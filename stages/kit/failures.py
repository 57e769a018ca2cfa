"""An unexpected exception in a stage, as one line in the user's terms.

A stage raises ``StageError`` for what it foresaw. Anything else (a converter's own
bug, a SavedModel that cannot run, a framework assertion) reaches ``python -m stages``,
which prints the traceback to the stage log and reports ``unexpected(stage, exc)``:
the code of the stage's role (``conversion_failed`` for a converter, ``export_failed``
for ``export.prepare``...; see ``stages.registry``), naming the tool that failed and
the one line of the exception that says why. Framework messages are long: TensorFlow's
``InvalidArgumentError`` starts with "Graph execution error:" and a stack of the graph's
Python frames before its reason and the node it failed at, which is what is kept.
"""

from __future__ import annotations

import re

from stages.kit.codes import StageCode
from stages.kit.contract import StageError

SUMMARY_LIMIT = 150
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Lines of framework messages that carry no reason: headers, frames, node markers.
NOISE = re.compile(
    r"^(Graph execution error:?|Detected at node\b.*|<stack traces unavailable>|Traceback \(most recent call last\):"
    r"|File \".*|Node: .*|\[\[.*|During handling of the above exception.*|The above exception was the direct cause.*)$"
)
# The op a TensorFlow error names, most specific first.
TF_NODES = (re.compile(r"\{\{node ([^}]+)\}\}"), re.compile(r"Detected at node '?([^'\s]+)'?"))


def summary(exc: BaseException, limit: int = SUMMARY_LIMIT) -> str:
    """``"<ExceptionType>: <reason>[ (at node <name>)]"``, one line of at most ``limit`` characters.

    The reason is the first line of the message that is not a header or a stack frame
    (unindented, see ``NOISE``); a TensorFlow op error adds the graph node it failed at.
    An exception with no message of its own takes its cause's.
    """
    current: BaseException | None = exc
    reason = ""
    while current is not None and not reason:
        reason = _reason(str(current))
        current = current.__cause__ or current.__context__
    found = [match.group(1) for pattern in TF_NODES if (match := pattern.search(ANSI.sub("", str(exc))))]
    node = found[0] if found else ""
    text = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
    if node and node not in text:
        text += f" (at node {node})"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reason(message: str) -> str:
    lines = [line for line in ANSI.sub("", message).splitlines() if line.strip()]
    for line in lines:
        if not line[0].isspace() and not NOISE.match(line.strip()):
            return " ".join(line.split()).rstrip(".:")
    return ""


def unexpected(code: StageCode, actor: str, advice: str, exc: BaseException) -> StageError:
    """The ``StageError`` for an exception nobody foresaw in a stage run by ``actor``."""
    return StageError(code, f"{actor} failed unexpectedly: {summary(exc)}. {advice}; the traceback is in the stage log")


def first_line(exc: BaseException, limit: int = 400) -> str:
    """A short, single-line description of an exception and its causes.

    Framework messages can carry a whole graph dump; the first line of each link of
    the cause chain is what tells the user what went wrong.
    """
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(parts) < 3:
        seen.add(id(current))
        text = ANSI.sub("", str(current)).strip()
        line = text.splitlines()[0].strip() if text else ""
        parts.append(f"{type(current).__name__}: {line}" if line else type(current).__name__)
        current = current.__cause__ or current.__context__
    message = " <- ".join(parts)
    return message if len(message) <= limit else message[: limit - 3] + "..."
