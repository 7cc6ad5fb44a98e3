"""The web page's files ship in the wheel: every template and static file is matched by
pyproject's package-data, so a non-editable install serves the same page."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "pixelbatch"


def test_every_web_file_is_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["pixelbatch"]
    files = [
        p.relative_to(PACKAGE).as_posix()
        for p in (PACKAGE / "web").rglob("*")
        if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts
    ]
    assert files, "no web assets found"
    missing = [f for f in files if not any(fnmatch.fnmatchcase(f, pat) for pat in patterns)]
    assert missing == [], f"not in [tool.setuptools.package-data]: {missing}"
