"""The ``modelport`` command.

Client commands (``convert``, ``jobs``, ``status``, ``report``, ``download``, ``cancel``, ``logs``,
``toolchains``) talk to a running service through ``modelport.Client``; they need only the client's
packages. Server commands (``run``, ``migrate``, ``create-key``, ``revoke-key``) belong to the server install,
whose ``modelport`` script (``app.cli:entry``) runs them and hands every other command here.

Exit status: 0 done (for ``convert`` and ``report``: every artifact passed, or is ``degraded``);
1 the job failed or was cancelled, or an artifact's verdict is ``fail``; 2 bad usage or a request the API
refused (4xx: the problem's code is printed); 3 the service could not be reached, failed (5xx), or the
wait timed out, or a download did not match its sha256; 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

SERVER_COMMANDS = ("run", "migrate", "create-key", "revoke-key")
USAGE_ERROR, UNAVAILABLE = 2, 3
NO_KEY = "no API key: pass --api-key KEY or set MODELPORT_API_KEY (`make run` prints one and saves it in var/api-key)"

EXAMPLES = """\
examples:
  export MODELPORT_URL=http://127.0.0.1:8000 MODELPORT_API_KEY=$(cat var/api-key)
  modelport convert resnet18.pth --arch torchvision.models.resnet18 --input 1x3x224x224 \\
      --quant float32,int8 --calibration calib.npy --out out/
  modelport convert model.onnx --targets tflite            # format sniffed, inputs read from the file
  modelport jobs --status failed
  modelport status JOB --wait
  modelport report JOB            # the table; --json for the report itself
  modelport download JOB --out out/
  modelport cancel JOB
  modelport logs JOB convert_onnx2tf
  modelport toolchains

server commands (with the server installed): run, migrate, create-key, revoke-key
  (`modelport run --help` has theirs)
"""

CONVERT_EXAMPLES = """\
examples:
  # a torchvision state dict: the architecture and the input shape are needed
  modelport convert resnet18.pth --arch resnet18 --input 1x3x224x224 --out out/
  # int8 too, calibrated on your data (.npy: [samples, 1, 3, 224, 224]); validated on your samples
  modelport convert resnet18.pth --arch resnet18 --arch-kwargs '{"num_classes": 10}' \\
      --input 1x3x224x224 --quant float32,int8 --calibration calib.npy --samples val.npy
  # TorchScript / ExportedProgram / ONNX carry their inputs; only a .tflite, every converter tried
  modelport convert model.onnx --targets tflite --toolchain best
  # a token model: named int64 input with a dynamic batch
  modelport convert bert.safetensors --arch transformers.BertModel --arch-config @config.json \\
      --input input_ids=batchx128:int64
  # anything else of the spec (docs/api.md) as JSON; flags override it
  modelport convert model.pth --spec @spec.json

Writes the artifacts flat into --out under their names (model.onnx, saved_model.zip,
model_<precision>.tflite), each checked against its sha256, plus report.json, and prints the report.
Exits 1 when the job failed, an artifact missed its tolerance, or a requested precision was not produced.
"""


def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("service")
    group.add_argument("--url", default=default, help="API base URL (env MODELPORT_URL; http://127.0.0.1:8000)")
    group.add_argument("--api-key", default=default, help="API key (env MODELPORT_API_KEY)")


def _json_flag(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def _wait_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait at most (default: no limit)")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="seconds between polls (default 1)")


def build_parser() -> argparse.ArgumentParser:
    from modelport.cli import spec as flags

    parser = argparse.ArgumentParser(
        prog="modelport",
        description="Convert PyTorch models to validated TensorFlow / TFLite artifacts with a ModelPort service.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, **kwargs: object) -> argparse.ArgumentParser:
        child = sub.add_parser(name, help=help_text, description=help_text, **kwargs)  # type: ignore[arg-type]
        _common(child, suppress=True)
        return child

    convert = command(
        "convert",
        "upload a model, follow the job, download the artifacts and print the report",
        epilog=CONVERT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    convert.add_argument(
        "model",
        help="the model file: .pth/.pt state dict or checkpoint, .safetensors, "
        "TorchScript, ExportedProgram (.pt2), .onnx",
    )
    spec = convert.add_argument_group("job spec (flags not given take the server's defaults)")
    spec.add_argument(
        "--arch",
        help="constructor of a state dict's model: a dotted path "
        "(transformers.BertModel), or a torchvision name (resnet18)",
    )
    spec.add_argument("--arch-kwargs", type=flags.json_object, help="its keyword arguments, JSON or @file")
    spec.add_argument("--arch-config", type=flags.json_object, help="a transformers config, JSON or @file")
    spec.add_argument(
        "--input",
        action="append",
        type=flags.input_argument,
        metavar="[NAME=]DIMS[:DTYPE]",
        help="an input, repeat in call order: 1x3x224x224, ids=batchx128:int64 (name default 'input', dtype float32)",
    )
    spec.add_argument(
        "--format",
        choices=["auto", "state_dict", "torchscript", "exported_program", "pickled_module", "onnx"],
        help="model format (default: sniffed from the bytes)",
    )
    spec.add_argument("--targets", type=flags.comma_list, help="onnx,saved_model,tflite (default: all three)")
    spec.add_argument(
        "--quant",
        type=flags.comma_list,
        metavar="PRECISIONS",
        help="float32,dynamic_range,float16,int8 (default float32)",
    )
    spec.add_argument("--int8-io", action="store_true", help="int8 inputs and outputs for model_int8.tflite")
    spec.add_argument(
        "--toolchain",
        choices=["auto", "best", "onnx2tf", "litert-torch", "onnx-tf"],
        help="auto: first converter that passes (default); best: try all, keep the best",
    )
    spec.add_argument("--layout", choices=["nchw", "nhwc"], help="nhwc: channel-last 4-D inputs (onnx2tf)")
    spec.add_argument("--opset", type=int, help="ONNX opset of the export")
    spec.add_argument("--exporter", choices=["auto", "torchscript", "dynamo"])
    spec.add_argument(
        "--tolerance",
        type=flags.tolerance_argument,
        metavar="P=X,...",
        help="max abs error / scale per precision, e.g. float32=1e-3",
    )
    spec.add_argument("--validation-samples", type=int, help="synthetic validation samples (default 8)")
    spec.add_argument("--strict", action="store_true", help="fail the job when a quantized precision misses")
    spec.add_argument("--spec", type=flags.json_object, help="a whole job spec, JSON or @file; flags override it")
    data = convert.add_argument_group("data (.npy for one input, .npz keyed by input name; samples first)")
    data.add_argument("--calibration", help="int8 calibration samples (default: the validation samples)")
    data.add_argument("--samples", help="validation samples (default: synthetic)")
    run = convert.add_argument_group("run")
    run.add_argument("--out", help="directory for the artifacts and report.json (default ./<model name>-modelport)")
    run.add_argument("--idempotency-key", help="a retried command with the same key gets the same job")
    _wait_flags(run)
    convert.set_defaults(handler="cmd_convert")

    jobs = command("jobs", "list jobs, newest first")
    jobs.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    jobs.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    _json_flag(jobs, "the jobs")
    jobs.set_defaults(handler="cmd_jobs")

    status = command("status", "a job's status and stages")
    status.add_argument("job", help="job id")
    status.add_argument("--wait", action="store_true", help="follow it until it ends (exit 1 unless it succeeded)")
    _wait_flags(status)
    _json_flag(status, "the job resource")
    status.set_defaults(handler="cmd_status")

    report = command("report", "a job's accuracy report as a table (exit 1 when an artifact missed)")
    report.add_argument("job", help="job id")
    _json_flag(report, "the report itself")
    report.set_defaults(handler="cmd_report")

    download = command("download", "download a job's artifacts (sha256 checked) and report.json")
    download.add_argument("job", help="job id")
    download.add_argument("names", nargs="*", help="only these artifacts (default: all)")
    download.add_argument("--out", help="directory (default ./<job id>)")
    download.set_defaults(handler="cmd_download")

    cancel = command("cancel", "cancel a queued or running job")
    cancel.add_argument("job", help="job id")
    cancel.set_defaults(handler="cmd_cancel")

    logs = command("logs", "a stage's log")
    logs.add_argument("job", help="job id")
    logs.add_argument("stage", help="stage name, as `modelport status` lists them")
    logs.set_defaults(handler="cmd_logs")

    toolchains = command("toolchains", "the service's converter environments and their package versions")
    _json_flag(toolchains, "the toolchains")
    toolchains.set_defaults(handler="cmd_toolchains")
    return parser


def _server(argv: list[str]) -> int:
    # The client never imports the server: the server install's `modelport` script is
    # app.cli:entry, which runs these commands itself before it gets here.
    print(
        f"modelport {argv[0]}: a server command; run it where the server is installed (the repository's "
        "`pip install -e .` installs a `modelport` that has it, or `make run`).",
        file=sys.stderr,
    )
    return USAGE_ERROR


def _first_command(argv: Sequence[str]) -> str | None:
    for index, arg in enumerate(argv):
        if arg in ("--url", "--api-key"):
            continue
        if index and argv[index - 1] in ("--url", "--api-key"):
            continue
        if not arg.startswith("-"):
            return arg
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if _first_command(args_list) in SERVER_COMMANDS:
        return _server(args_list)
    args = build_parser().parse_args(args_list)
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Run a parsed client command; API errors and the like become messages and exit statuses."""
    import httpx
    from rich.console import Console
    from rich.markup import escape

    from modelport.cli import commands
    from modelport.client import Client
    from modelport.errors import APIError, ConfigurationError, DigestMismatch, ModelPortError, WaitTimeout

    out = Console(highlight=False, soft_wrap=False)
    if not out.is_terminal:
        out = Console(highlight=False, width=max(out.width, 160))
    err = Console(stderr=True, highlight=False)
    handler: Callable[..., int] = getattr(commands, args.handler)
    try:
        with Client(getattr(args, "url", None), getattr(args, "api_key", None)) as client:
            return handler(args, client, out, err)
    except APIError as error:
        err.print(f"[bold red]error[/]: {error.status} {error.code}: {escape(error.detail)}")
        for item in error.errors:
            loc = item.get("loc", "")
            loc = ".".join(map(str, loc)) if isinstance(loc, list) else str(loc)
            err.print(f"  {escape(loc)}: {escape(str(item.get('msg', item)))}")
        if error.request_id:
            err.print(f"[dim]request id {error.request_id}[/]")
        return USAGE_ERROR if error.status < 500 else UNAVAILABLE
    except ConfigurationError as error:
        # The client's own words name its argument (api_key=...); the command's is --api-key.
        missing_key = not (getattr(args, "api_key", None) or os.environ.get("MODELPORT_API_KEY"))
        text = NO_KEY if missing_key else str(error)
        err.print(f"[bold red]error[/]: {escape(text)}")
        return USAGE_ERROR
    except FileNotFoundError as error:
        err.print(f"[bold red]error[/]: {escape(str(error))}")
        return USAGE_ERROR
    except (WaitTimeout, DigestMismatch) as error:
        err.print(f"[bold red]error[/]: {escape(str(error))}")
        return UNAVAILABLE
    except httpx.TransportError as error:
        err.print(f"[bold red]error[/]: cannot reach the service: {error!r}")
        return UNAVAILABLE
    except ModelPortError as error:
        err.print(f"[bold red]error[/]: {escape(str(error))}")
        return USAGE_ERROR
    except argparse.ArgumentTypeError as error:
        err.print(f"[bold red]error[/]: {escape(str(error))}")
        return USAGE_ERROR
    except KeyboardInterrupt:
        return 130
