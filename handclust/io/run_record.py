"""``run.json``, the run record: read it, and change it in one place that checks what is written.

Every writer (the runners, the activities step, assign, the report) calls :func:`update_run`; the
keys and their top-level types are :data:`handclust.schema.RUN_RECORD`, so a typo or a block of
the wrong kind fails where it is written instead of surfacing as a missing field in a report.
"""

from __future__ import annotations

import logging
from typing import Any

from handclust.errors import RunRecordError as RunRecordError  # defined with every error in handclust/errors.py
from handclust.io import layout
from handclust.io.storage import OutputStore
from handclust.schema import RUN_RECORD

RUN_JSON = layout.RUN

log = logging.getLogger(__name__)


def read_run(store: OutputStore) -> dict[str, Any]:
    """The run record, or ``{}`` when the folder has none yet; :class:`RunRecordError` (one line) when
    it is not a JSON object (cut short by a full disk or a partial copy, or hand-edited)."""
    if not store.exists(RUN_JSON):
        return {}
    try:
        record = store.read_json(RUN_JSON)
    except ValueError as exc:  # json.JSONDecodeError, UnicodeDecodeError
        raise RunRecordError(f"{store.uri_of(RUN_JSON)} is not valid JSON ({exc}): it was cut short (a full disk, a "
                             "partial copy?) or edited; rerun `handclust run FOOTAGE --out` into this folder to write it "
                             "again (finished clips are kept)") from None
    if not isinstance(record, dict):
        raise RunRecordError(f"{store.uri_of(RUN_JSON)} holds a JSON {type(record).__name__}, not a run record; rerun "
                             "`handclust run FOOTAGE --out` into this folder to write it again")
    return record


def check_run(record: dict[str, Any]) -> None:
    """Raise :class:`RunRecordError` for a key or top-level type the run record does not have."""
    for key, value in record.items():
        if key not in RUN_RECORD:
            raise RunRecordError(f"run.json has no field {key!r}; its fields are {', '.join(RUN_RECORD)} "
                                 "(add new ones to handclust.schema.RUN_RECORD)")
        if not isinstance(value, RUN_RECORD[key]):
            allowed = " or ".join(t.__name__ for t in RUN_RECORD[key])
            raise RunRecordError(f"run.json field {key!r} must be {allowed}, not {type(value).__name__}")


def update_run(store: OutputStore, fresh: bool = False, **fields: Any) -> dict[str, Any]:
    """Set ``fields`` in the run record (written atomically) and return it. ``fresh``: start from an
    empty record instead of the one on disk (a new run's first write)."""
    check_run(fields)
    try:
        record = {} if fresh else read_run(store)
    except RunRecordError as exc:  # a writer rewrites it; the broken one is kept beside for a look
        log.warning("%s; starting a new one (the old one kept as %s.broken)", exc, RUN_JSON)
        store.move(RUN_JSON, f"{RUN_JSON}.broken")
        record = {}
    record.update(fields)
    store.write_json(RUN_JSON, record)
    return record
