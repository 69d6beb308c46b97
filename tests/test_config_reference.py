"""docs/configuration.md is generated from the config model and must match it (issue 23)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pydantic import BaseModel

from handclust.config import RunConfig, config_to_dict
from handclust.config_reference import DOC_PATH, render_markdown

REPO = Path(__file__).resolve().parent.parent


def _keys_and_defaults() -> list[tuple[str, object]]:
    """(dotted key, default) for every key `handclust config` prints."""
    out: list[tuple[str, object]] = []
    for name, value in config_to_dict(RunConfig()).items():
        tp = RunConfig.model_fields[name].annotation
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            out += [(f"{name}.{key}", default) for key, default in value.items()]
        else:
            out.append((name, value))
    return out


def test_configuration_page_matches_the_config_model():
    """A key added, removed or re-described in handclust/config.py without regenerating the page fails here."""
    assert DOC_PATH.read_text() == render_markdown(), (
        "docs/configuration.md is out of date with handclust/config.py; regenerate it: python -m handclust.config_reference")


def test_configuration_page_lists_every_key_with_its_default():
    """What a user looks up: each key `handclust config` prints is a row of the page, showing that default."""
    rows = {line.split("|")[1].strip(): line for line in DOC_PATH.read_text().splitlines() if line.startswith("| `")}
    keys = _keys_and_defaults()
    assert len(keys) > 100
    for dotted, default in keys:
        row = rows.get(f"`{dotted}`")
        assert row is not None, f"{dotted} missing from docs/configuration.md"
        assert f"`{json.dumps(default, ensure_ascii=False)}`".replace("|", "\\|") in row, (dotted, row)


def test_check_mode_reports_a_stale_page(tmp_path: Path):
    """`--check` exits 1 and names the command that fixes a stale page, 0 once it is current."""
    page = tmp_path / "configuration.md"
    page.write_text(render_markdown().replace("frames sampled per second of video", "an old description"))
    cmd = [sys.executable, "-m", "handclust.config_reference", "--check", "--out", str(page)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 1 and "python -m handclust.config_reference" in r.stderr, r.stderr
    page.write_text(render_markdown())
    assert subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120).returncode == 0
