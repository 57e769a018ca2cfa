"""A stand-in for onnx2tf's command line, run by convert.onnx2tf's ``_run_onnx2tf`` in
tests/worker/test_forked_cli.py: ``python -m tests.support.fake_onnx2tf <mode>``.

``write`` writes ``out/model_float32.tflite`` and prints (as JSON) what the tool found
around it; the other modes fail as a converter can: ``abort`` (SIGABRT), ``exit`` (an
``ERROR:`` line, then ``sys.exit(3)``), ``raise`` (an uncaught exception), ``nothing``
(exit 0 without a file).
"""

from __future__ import annotations

import json
import os
import sys

if __name__ == "__main__":
    mode = sys.argv[1]
    print(f"fake onnx2tf: {mode}", flush=True)
    if mode == "abort":
        os.abort()
    elif mode == "exit":
        print("ERROR: the stand-in gives up on this model")
        sys.exit(3)
    elif mode == "raise":
        raise RuntimeError("the stand-in broke")
    elif mode == "write":
        os.makedirs("out")
        with open(os.path.join("out", "model_float32.tflite"), "wb") as handle:
            handle.write(b"not a real file")
        found = {
            "argv": sys.argv[1:],
            "cwd": os.getcwd(),
            "path0": os.environ["PATH"].split(os.pathsep)[0],
            "tqdm_disable": os.environ.get("TQDM_DISABLE"),
            # Set on the json module by the process that ran this: a fork sees it, a fresh interpreter does not.
            "marker": getattr(json, "marker", None),
            "ppid": os.getppid(),
        }
        print("\x1b[32mcoloured\x1b[0m")
        print("FOUND " + json.dumps(found))
