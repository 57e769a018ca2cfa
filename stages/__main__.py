"""Entry point: ``python -m stages <stage-name> <request.json> <result.json>``."""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

from stages.kit import usage
from stages.kit.contract import EXIT_STAGE_ERROR, StageError, StageRequest, error_json
from stages.kit.failures import unexpected
from stages.registry import get_stage, unforeseen


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m stages <stage-name> <request.json> <result.json>", file=sys.stderr)
        return 2
    usage.install()  # the stage's own code begins: framework loads from here are start-up
    name, request_path, result_path = argv[0], Path(argv[1]), Path(argv[2])
    started = time.monotonic()
    try:
        request = StageRequest.read(request_path)
        request.output_dir.mkdir(parents=True, exist_ok=True)
        result = get_stage(name)(request).to_json()
        code = 0
    except StageError as exc:
        # In the stage log too: the log a user downloads must say why the stage failed.
        print(f"stage.error stage={name} code={exc.code} message={exc.message}", flush=True)
        result, code = error_json(exc), EXIT_STAGE_ERROR
    except Exception as exc:  # noqa: BLE001 - any uncaught error is this stage's failure, with its trace in the log
        traceback.print_exc()
        result, code = error_json(unexpected(*unforeseen(name), exc)), EXIT_STAGE_ERROR
    result["seconds"] = round(time.monotonic() - started, 3)
    result["startup"] = usage.startup()
    result["usage"] = usage.peak_memory()
    Path(result_path).write_text(json.dumps(result, indent=2, default=float))
    print(f"stage.finished stage={name} ok={result['ok']} seconds={result['seconds']}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
