"""The bench's corpus is built beside its place and renamed in: benchmarks building it at
once never see a directory emptied under them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench import corpus as corpus_mod


def test_concurrent_builds_each_get_a_whole_corpus_and_leave_no_staging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(corpus_mod, "CACHE", tmp_path)
    with ThreadPoolExecutor(3) as pool:
        built = list(
            pool.map(lambda _: corpus_mod.build("synthetic", log=lambda *a: None), range(3))
        )
    for corpus in built:
        assert corpus.directory == tmp_path / "corpus-synthetic"
        assert corpus.files and all((corpus.directory / f.name).is_file() for f in corpus.files)
    assert [p.name for p in tmp_path.iterdir()] == ["corpus-synthetic"]


def test_a_build_keeps_the_served_files_of_a_current_corpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(corpus_mod, "CACHE", tmp_path)
    first = corpus_mod.build("synthetic", log=lambda *a: None)
    served = {f.name: (first.directory / f.name).read_bytes() for f in first.files}
    again = corpus_mod.build("synthetic", log=lambda *a: None)
    assert {f.name: (again.directory / f.name).read_bytes() for f in again.files} == served
