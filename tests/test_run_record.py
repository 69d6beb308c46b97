"""run.json is written through one function that checks its fields (handclust.io.run_record)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from handclust.io.run_record import RunRecordError, read_run, update_run
from handclust.io.storage import OutputStore


def test_update_keeps_other_fields_and_fresh_starts_over(tmp_path: Path):
    store = OutputStore(tmp_path)
    assert read_run(store) == {}
    update_run(store, status="ok", summary={"clips": 2})
    update_run(store, report={"status": "ok"})
    assert json.loads((tmp_path / "run.json").read_text()) == {"status": "ok", "summary": {"clips": 2}, "report": {"status": "ok"}}
    update_run(store, fresh=True, clustering=None)
    assert read_run(store) == {"clustering": None}


def test_a_field_the_record_does_not_have_fails_where_it_is_written(tmp_path: Path):
    store = OutputStore(tmp_path)
    update_run(store, status="ok")
    with pytest.raises(RunRecordError, match="no field 'sumary'.*RUN_RECORD"):
        update_run(store, sumary={"clips": 1})
    with pytest.raises(RunRecordError, match="'report' must be dict, not str"):
        update_run(store, report="report/index.html")
    assert read_run(store) == {"status": "ok"}  # nothing half-written
