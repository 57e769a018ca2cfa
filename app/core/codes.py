"""Every ``code`` the API answers in a problem+json body, one member each (docs/api.md "Error codes").

The values are the wire strings: a member serializes as its value (``json.dumps``, f-strings,
the database), so replacing a literal with its member changes no byte. Job failure codes (a
job's ``error.code``) are ``stages.kit.codes.StageCode``. A new code is a member here, a row
in docs/api.md's table and a raise site; ``tests/project/test_error_catalogue.py`` checks the
three agree and that no raise site spells a code as a bare string.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    # The generic code of each status (``app.core.errors``): framework errors, or an
    # error raised without a more specific code.
    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    NOT_ACCEPTABLE = "not_acceptable"
    CONFLICT = "conflict"
    EXPIRED = "expired"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    VALIDATION_ERROR = "validation_error"
    INTERNAL_ERROR = "internal_error"
    UNAVAILABLE = "unavailable"
    HTTP_ERROR = "http_error"  # a framework error of a status no class has

    # 401, 403: keys
    MISSING_API_KEY = "missing_api_key"
    INVALID_API_KEY = "invalid_api_key"
    ADMIN_REQUIRED = "admin_required"

    # 422 (409, 415) at submission, before a job exists
    INVALID_SPEC = "invalid_spec"
    ARCHITECTURE_NOT_FOUND = "architecture_not_found"
    UNRECOGNIZED_FORMAT = "unrecognized_format"
    FORMAT_MISMATCH = "format_mismatch"
    FORMAT_DISABLED = "format_disabled"
    FORMAT_NOT_SUPPORTED = "format_not_supported"
    ARCHITECTURE_REQUIRED = "architecture_required"
    ARCHITECTURE_NOT_ALLOWED = "architecture_not_allowed"
    INPUTS_REQUIRED = "inputs_required"
    TOOLCHAIN_UNAVAILABLE = "toolchain_unavailable"
    UNSUPPORTED_OPTION = "unsupported_option"
    CALLBACK_URL_REFUSED = "callback_url_refused"
    INVALID_SAMPLES = "invalid_samples"
    EMPTY_MODEL = "empty_model"
    MODEL_REQUIRED = "model_required"
    UNKNOWN_FIELD = "unknown_field"
    UNKNOWN_PARAMETER = "unknown_parameter"
    DUPLICATE_FIELD = "duplicate_field"
    MALFORMED_MULTIPART = "malformed_multipart"
    MULTIPART_REQUIRED = "multipart_required"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    IDEMPOTENCY_KEY_IN_USE = "idempotency_key_in_use"
    DIGEST_MISMATCH = "digest_mismatch"
    UNSAFE_MODEL = "unsafe_model"
    PICKLE_TOO_LARGE = "pickle_too_large"
    ARCHIVE_TOO_LARGE = "archive_too_large"

    # Jobs, keys and their files
    INVALID_CURSOR = "invalid_cursor"
    JOB_NOT_FOUND = "job_not_found"
    JOB_FINISHED = "job_finished"
    KEY_NOT_FOUND = "key_not_found"
    ARTIFACT_NOT_FOUND = "artifact_not_found"
    ARTIFACT_EXPIRED = "artifact_expired"
    REPORT_NOT_READY = "report_not_ready"
    REPORT_NOT_PRODUCED = "report_not_produced"
    REPORT_EXPIRED = "report_expired"
    LOG_NOT_READY = "log_not_ready"
    LOG_NOT_FOUND = "log_not_found"

    # 503: the service
    NOT_READY = "not_ready"
    DATABASE_BUSY = "database_busy"
