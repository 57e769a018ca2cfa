"""Receiving a job's multipart body: file parts stream straight into the object store.

Starlette's form parser spools files to temporary files first; here every chunk is
written to its object as it arrives, its sha256 computed on the way, and a part over its
limit stops the upload at once (413) instead of after the body has been read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartState, parse_options_header
from redis import Redis
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from app.core.codes import ErrorCode
from app.core.errors import Conflict, InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from app.services import jobs
from app.services.idempotency import KeyReservation
from app.services.submission import Part, Upload
from domain.config import Settings
from domain.models import Job
from domain.models.base import new_id
from domain.storage import ObjectStore
from domain.storage.base import ObjectWriter

TEXT_FIELD_LIMIT = 1024 * 1024


@dataclass
class _PartState:
    name: str = ""
    filename: str | None = None
    writer: ObjectWriter | None = None
    buffer: bytearray | None = None
    limit: int = 0
    size: int = 0


@dataclass
class MultipartReceiver:
    """Receives ``file_fields`` (name -> byte limit) into the store under ``key_prefix``."""

    store: ObjectStore
    key_prefix: str
    file_fields: dict[str, int]
    text_fields: set[str]
    parts: dict[str, Part] = field(default_factory=dict)
    _current: _PartState = field(default_factory=_PartState)
    _header_field: bytearray = field(default_factory=bytearray)
    _header_value: bytearray = field(default_factory=bytearray)
    _headers: dict[str, str] = field(default_factory=dict)
    _open_writers: list[ObjectWriter] = field(default_factory=list)

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._on_part_begin,
            "on_header_field": lambda data, start, end: self._header_field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
        }

    def _on_part_begin(self) -> None:
        self._current = _PartState()
        self._headers = {}

    def _on_header_end(self) -> None:
        self._headers[self._header_field.decode("latin-1").lower()] = self._header_value.decode("latin-1")
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        disposition = self._headers.get("content-disposition", "")
        _, options = parse_options_header(disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        state = self._current
        state.name = name
        state.filename = filename.decode("utf-8", "replace") if filename is not None else None
        if name in self.parts:
            raise InvalidRequest(f"form field {name!r} was sent twice", code=ErrorCode.DUPLICATE_FIELD)
        if name in self.file_fields:
            state.limit = self.file_fields[name]
            state.writer = self.store.open_writer(f"{self.key_prefix}/{name}")
            self._open_writers.append(state.writer)
        elif name in self.text_fields:
            state.limit = TEXT_FIELD_LIMIT
            state.buffer = bytearray()
        else:
            known = sorted([*self.file_fields, *self.text_fields])
            raise InvalidRequest(
                f"unknown form field {name!r}; the fields are {', '.join(known)}", code=ErrorCode.UNKNOWN_FIELD
            )

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        state = self._current
        state.size += end - start
        if state.size > state.limit:
            raise PayloadTooLarge(
                f"form field {state.name!r} is over its limit of {state.limit} bytes; "
                "ask the operator to raise MODELPORT_MAX_UPLOAD_BYTES if the model is genuine",
                limit=state.limit,
            )
        if state.writer is not None:
            state.writer.write(data[start:end])
        elif state.buffer is not None:
            state.buffer.extend(data[start:end])

    def _on_part_end(self) -> None:
        state = self._current
        part = Part(name=state.name, filename=state.filename)
        if state.writer is not None:
            part.stored = state.writer.commit()
            self._open_writers.remove(state.writer)
        elif state.buffer is not None:
            try:
                part.text = state.buffer.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidRequest(
                    f"form field {state.name!r} is not UTF-8 text", code=ErrorCode.INVALID_SPEC
                ) from None
        self.parts[state.name] = part

    def abort(self) -> None:
        for writer in self._open_writers:
            writer.abort()
        self._open_writers.clear()


async def receive_multipart(request: Request, receiver: MultipartReceiver, max_body: int) -> dict[str, Part]:
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise UnsupportedMediaType(
            "send the job as multipart/form-data with a 'model' file and a 'spec' field",
            code=ErrorCode.MULTIPART_REQUIRED,
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise PayloadTooLarge(f"the request body declares {declared} bytes; the limit is {max_body}")
    parser = MultipartParser(options[b"boundary"], receiver.callbacks())  # type: ignore[arg-type]
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_body:
                raise PayloadTooLarge(f"the request body is over the limit of {max_body} bytes")
            if chunk:
                await run_in_threadpool(parser.write, chunk)
        parser.finalize()
    except MultipartParseError as exc:
        receiver.abort()
        raise InvalidRequest(f"the multipart body is malformed: {exc}", code=ErrorCode.MALFORMED_MULTIPART) from None
    except BaseException:
        receiver.abort()
        raise
    # python-multipart's finalize() does not check that the closing boundary arrived.
    if parser.state != MultipartState.END:
        where = f"in part {receiver._current.name!r}" if receiver._current.name else "early"
        receiver.abort()
        raise InvalidRequest(
            f"the multipart body ended {where}, before its closing boundary: "
            "the upload was cut short; send the whole request again",
            code=ErrorCode.MALFORMED_MULTIPART,
        )
    return receiver.parts


@asynccontextmanager
async def receive(
    request: Request,
    sessions: sessionmaker[Session],
    store: ObjectStore,
    settings: Settings,
    *,
    tenant: str,
    idempotency_key: str | None,
    redis: Redis,
) -> AsyncIterator[Upload]:
    """Reserve the Idempotency-Key, stream the body into the store and yield it; the files
    are deleted if the block raises, the key released when it ends. Blocking calls (Redis,
    the database, deleting files) run in the thread pool, never on the event loop."""
    job_id = new_id()
    prefix = f"uploads/{job_id}"
    reservation = KeyReservation(redis, tenant, idempotency_key, job_id) if idempotency_key else None
    if reservation is not None and not await run_in_threadpool(reservation.acquire):
        if await run_in_threadpool(_find_by_key, sessions, tenant, idempotency_key or "") is None:
            raise Conflict(
                "a request with this Idempotency-Key is still being processed; retry once it has answered",
                code=ErrorCode.IDEMPOTENCY_KEY_IN_USE,
            )
    limits = settings.limits
    receiver = MultipartReceiver(
        store,
        prefix,
        file_fields={
            "model": limits.max_upload_bytes,
            "inputs": limits.max_data_upload_bytes,
            "calibration": limits.max_data_upload_bytes,
        },
        text_fields={"spec", "model_sha256"},
    )
    max_body = limits.max_upload_bytes + 2 * limits.max_data_upload_bytes + 4 * 1024 * 1024
    try:
        parts = await receive_multipart(request, receiver, max_body)
        yield Upload(job_id=job_id, prefix=prefix, parts=parts)
    except BaseException:
        await run_in_threadpool(store.delete_prefix, prefix)
        raise
    finally:
        if reservation is not None:
            await run_in_threadpool(reservation.release)


def _find_by_key(sessions: sessionmaker[Session], tenant: str, key: str) -> Job | None:
    with sessions() as session:
        return jobs.find_by_idempotency_key(session, tenant, key)
