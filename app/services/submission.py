"""Accepting a job: check a received upload and create its job (blocking: in a thread).

The body is streamed into the store before, by ``app.api.uploads`` (HTTP stays there).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.codes import ErrorCode
from app.core.errors import InvalidRequest
from app.services import jobs
from app.services.pickle_gate import refuse_unsafe_pickles
from app.services.sniff import sniff_format
from domain import webhooks
from domain.config import Settings
from domain.models import Job
from domain.storage import ObjectStore, StoredObject

FILE_FIELDS = ("model", "inputs", "calibration")
NPY_MAGIC = b"\x93NUMPY"


@dataclass
class Submission:
    job: Job
    replayed: bool


def _check_data_file(store: ObjectStore, key: str, field: str) -> None:
    with store.open_read(key) as handle:
        magic = handle.read(6)
    if magic != NPY_MAGIC and not magic.startswith(b"PK\x03\x04"):
        raise InvalidRequest(
            f"'{field}' must be a .npy array (one input) or an .npz archive keyed by input name",
            code=ErrorCode.INVALID_SAMPLES,
        )


@dataclass
class Part:
    """One received form field: a file in the store (``stored``) or a text field (``text``)."""

    name: str
    filename: str | None = None
    stored: StoredObject | None = None
    text: str | None = None


@dataclass
class Upload:
    """A received multipart body: its parts are stored under ``prefix``, none checked yet."""

    job_id: str
    prefix: str
    parts: dict[str, Part]


def accept(
    session: Session,
    store: ObjectStore,
    settings: Settings,
    upload: Upload,
    *,
    tenant: str,
    idempotency_key: str | None,
) -> Submission:
    """Check the upload and create its job (flushed, not committed), or find the job an
    earlier request with this Idempotency-Key created. Blocking: call it in a worker
    thread, in the write transaction the caller commits. Raises ModelPortError (422 …)
    for a refused upload, whose files are then deleted."""
    job_id, prefix, parts = upload.job_id, upload.prefix, upload.parts
    try:
        model = parts.get("model")
        if model is None or model.stored is None:
            raise InvalidRequest("the 'model' file part is required", code=ErrorCode.MODEL_REQUIRED)
        if model.stored.size == 0:
            raise InvalidRequest("the 'model' file is empty", code=ErrorCode.EMPTY_MODEL)
        claimed = (parts["model_sha256"].text or "").strip().lower() if "model_sha256" in parts else None
        if claimed and claimed != model.stored.sha256:
            raise InvalidRequest(
                f"the model's sha256 is {model.stored.sha256}, not the {claimed} sent in 'model_sha256': "
                "the upload was altered or truncated; nothing was stored",
                code=ErrorCode.DIGEST_MISMATCH,
            )
        spec_text = parts["spec"].text if "spec" in parts else None
        spec = jobs.parse_spec(spec_text)
        with store.open_read(model.stored.key) as handle:
            sniffed = sniff_format(handle)
        model_format = jobs.resolve_format(
            spec.model_format, sniffed, pickled_module_enabled=settings.conversion.enable_pickled_module
        )
        # Before any database work, so a long scan never holds SQLite's write lock.
        refuse_unsafe_pickles(
            store,
            model.stored.key,
            sniffed=sniffed,
            model_format=model_format,
            pickled_module_enabled=settings.conversion.enable_pickled_module,
        )
        normalized = jobs.check_spec(spec, model_format, settings)
        if "calibration" in parts and "int8" not in normalized.quantization:
            # Only int8 reads it: accepting it would leave the user believing it was used.
            raise InvalidRequest(
                f"the 'calibration' part calibrates int8 only and quantization is {list(normalized.quantization)}: "
                "add 'int8' to quantization, or drop the 'calibration' part",
                code=ErrorCode.UNSUPPORTED_OPTION,
            )
        digests = {name: p.stored.sha256 for name, p in parts.items() if p.stored is not None}
        for field in ("inputs", "calibration"):
            if field in parts and parts[field].stored is not None:
                _check_data_file(store, parts[field].stored.key, field)  # type: ignore[union-attr]
        assert spec_text is not None
        req_hash = jobs.request_hash(spec_text, digests)
        if idempotency_key:
            existing = jobs.find_by_idempotency_key(session, tenant, idempotency_key)
            if existing is not None:
                store.delete_prefix(prefix)
                return _replay(existing, req_hash)
        inputs, calibration = parts.get("inputs"), parts.get("calibration")
        job = jobs.create_job(
            session,
            job_id=job_id,
            tenant=tenant,
            spec=normalized,  # stored as normalized.to_json()
            model={
                "key": model.stored.key,
                "size": model.stored.size,
                "sha256": model.stored.sha256,
                "filename": model.filename,
            },
            inputs_key=inputs.stored.key if inputs and inputs.stored else None,
            calibration_key=calibration.stored.key if calibration and calibration.stored else None,
            idempotency_key=idempotency_key,
            req_hash=req_hash,
        )
        if spec.callback_url is not None:
            webhooks.register(session, job, spec.callback_url)
    except BaseException:
        store.delete_prefix(prefix)
        raise
    try:
        session.flush()
    except IntegrityError:
        # Another request with this Idempotency-Key committed first.
        session.rollback()
        store.delete_prefix(prefix)
        existing = jobs.find_by_idempotency_key(session, tenant, idempotency_key or "")
        if existing is None:
            raise
        return _replay(existing, req_hash)
    return Submission(job=job, replayed=False)


def _replay(existing: Job, req_hash: str) -> Submission:
    if existing.request_hash != req_hash:
        raise InvalidRequest(
            "this Idempotency-Key was used with a different request; use a new key for a new job",
            code=ErrorCode.IDEMPOTENCY_KEY_REUSED,
        )
    return Submission(job=existing, replayed=True)
