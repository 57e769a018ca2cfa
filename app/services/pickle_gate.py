"""Refuse, at submission, a state dict whose pickles would run code when loaded.

A state dict is loaded with ``torch.load(weights_only=True)``, which refuses any global
outside its allow-list; the stage keeps that check. This one reads the same pickles with
``stages.export.pickle_scan`` (stdlib ``pickletools``: nothing is imported or run) before a job
exists, so the upload is answered 422 ``unsafe_model`` naming the global, and nothing of it
is kept. TorchScript and ExportedProgram archives are programs loaded in the sandbox, and
an explicit ``pickled_module`` is the operator's opt-in to run code: neither is scanned.
"""

from __future__ import annotations

import structlog

from app.core.codes import ErrorCode
from app.core.errors import InvalidRequest
from domain.storage import ObjectStore
from stages.export.pickle_scan import MAX_OPCODES, MAX_PICKLE_BYTES, describe, scan_file

log = structlog.get_logger()


def refuse_unsafe_pickles(
    store: ObjectStore, key: str, *, sniffed: str | None, model_format: str, pickled_module_enabled: bool
) -> None:
    """Raise ``unsafe_model`` (422) when the stored model at ``key`` is a pickle naming a global
    ``torch.load(weights_only=True)`` refuses; ``pickle_too_large`` when its pickles are over the
    scan's bounds. Only torch.save files (``sniffed`` ``state_dict_or_module``) read as a state dict.

    Blocking (reads the object store); callers on the event loop run it in a thread.
    """
    if sniffed != "state_dict_or_module" or model_format != "state_dict":
        return
    with store.open_read(key) as handle:
        result = scan_file(handle)
    if not result.findings:
        if result.too_large is not None:
            raise InvalidRequest(
                f"the model's pickle in {result.too_large.where} is too large to check ({result.too_large.reason}; "
                f"the limits are {MAX_PICKLE_BYTES} bytes and {MAX_OPCODES} opcodes). torch.save stores tensors "
                "beside its pickle, which stays small: save the weights with torch.save(model.state_dict()) "
                "or as .safetensors",
                code=ErrorCode.PICKLE_TOO_LARGE,
            )
        return
    log.warning("upload.unsafe_model", key=key, globals=result.names[:10])
    pickled = (
        "a whole pickled model (torch.save(model)) must be sent with model_format 'pickled_module'"
        if pickled_module_enabled
        else "a whole pickled model (torch.save(model)) needs model_format 'pickled_module', which the "
        "operator must enable on this server (MODELPORT_ENABLE_PICKLED_MODULE)"
    )
    raise InvalidRequest(
        f"the model file is a pickle that would run code when loaded: it imports {describe(result.findings)}, "
        "which torch.load(weights_only=True) does not allow. It was refused before loading: nothing of it ran "
        "and nothing was kept. Upload a state dict saved with torch.save(model.state_dict()) or as .safetensors; "
        + pickled,
        code=ErrorCode.UNSAFE_MODEL,
    )
