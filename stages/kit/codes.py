"""Every code a job, a stage or a precision can fail with, one member each (docs/api.md "Error codes").

Stages (``StageError``), the worker's runner (``StageFailure``), the worker and the report
record these in a job's ``error.code``, a stage's ``error_code`` and the report's
``precisions``. The values are the wire strings: a member serializes as its value (the stage
result JSON, the database, f-strings), so a member changes no byte. Stdlib only: the stages
import it in every toolchain's interpreter. A new code is a member here and a row in
docs/api.md's table (``tests/project/test_error_catalogue.py`` checks both).
"""

from __future__ import annotations

from enum import StrEnum


class StageCode(StrEnum):
    # Loading the model (export.prepare); some are also answered at submission (422).
    UNSAFE_MODEL = "unsafe_model"
    INVALID_MODEL = "invalid_model"
    EMPTY_MODEL = "empty_model"
    ARCHIVE_TOO_LARGE = "archive_too_large"
    CORRUPT_ARCHIVE = "corrupt_archive"
    FORMAT_DISABLED = "format_disabled"
    FORMAT_NOT_SUPPORTED = "format_not_supported"
    ARCHITECTURE_NOT_FOUND = "architecture_not_found"
    ARCHITECTURE_NOT_ALLOWED = "architecture_not_allowed"
    ARCHITECTURE_FAILED = "architecture_failed"
    STATE_DICT_MISMATCH = "state_dict_mismatch"
    INPUTS_REQUIRED = "inputs_required"
    INPUT_MISMATCH = "input_mismatch"
    INPUT_TYPE_NOT_SUPPORTED = "input_type_not_supported"
    INPUT_TOO_LARGE = "input_too_large"
    ONNX_EXTERNAL_DATA = "onnx_external_data"
    INVALID_SPEC = "invalid_spec"
    INVALID_SAMPLES = "invalid_samples"
    SAMPLES_TOO_LARGE = "samples_too_large"
    # Export to ONNX
    EXPORT_FAILED = "export_failed"
    EXPORTER_NOT_SUPPORTED = "exporter_not_supported"
    OPSET_NOT_SUPPORTED = "opset_not_supported"
    # Conversion and validation
    CONVERSION_FAILED = "conversion_failed"
    TFLITE_CONVERSION_FAILED = "tflite_conversion_failed"
    INVALID_TFLITE = "invalid_tflite"
    VALIDATION_FAILED = "validation_failed"
    # Quantization, and why a precision was not produced (the report's ``precisions``)
    QUANTIZATION_FAILED = "quantization_failed"
    INVALID_CALIBRATION = "invalid_calibration"
    RUNTIME_CRASHED = "runtime_crashed"
    RUNTIME_FAILED = "runtime_failed"
    REQUIRES_FLEX = "requires_flex"
    PRECISION_UNAVAILABLE = "precision_unavailable"
    NO_FLOAT32_CANDIDATE = "no_float32_candidate"
    # The stage contract (a worker/stage mismatch, not the user's doing) and the self-tests
    STAGE_INPUT_MISSING = "stage_input_missing"
    UNKNOWN_STAGE = "unknown_stage"
    STAGE_FAILED = "stage_failed"
    # The runner (worker.runner)
    STAGE_CRASHED = "stage_crashed"
    TIMEOUT = "timeout"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    TOOLCHAIN_MISSING = "toolchain_missing"
    # The worker
    WORKER_LOST = "worker_lost"
    INTERNAL_ERROR = "internal_error"
    # The report
    ACCURACY_CHECK_FAILED = "accuracy_check_failed"
    TARGET_MISSING = "target_missing"
