"""What recording a finished image costs, alone: ``record_many`` in groups, as the recorder
and a Celery chunk call it, on SQLite and PostgreSQL.

    .venv/bin/python -m bench.recording                  # this tree
    .venv/bin/python -m bench.recording --code 2c1b1d4   # another revision, for an A/B pair

The end-to-end rows of ``bench.run`` swing by 20% from run to run on a shared machine,
more than a change to one stage can move them; this times that stage in one process. Each
round uploads ``--images`` images into a fresh batch, leases them, and records them in
groups of ``--group`` (a group is one transaction), with the finished-image log line on
(INFO, written to /dev/null) as a server writes it. Prints CPU and wall microseconds per
image, medians of ``--rounds``. PostgreSQL is the local server (a database of its own,
dropped after); ``--databases sqlite`` skips it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

from bench.config import Config
from bench.subject import use_code

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextlib.contextmanager
def _database(kind: str) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="pixelbatch-bench-") as directory:
            yield f"sqlite:///{directory}/db.sqlite3"
        return
    from sqlalchemy import create_engine, text

    name = f"pixelbatch_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _new_batch(sessions: Any, images: int) -> uuid.UUID:
    from pixelbatch.db.bulk import NewProduct, insert_products
    from pixelbatch.db.engine import transaction
    from pixelbatch.db.models import Batch
    from pixelbatch.transform import TransformOptions

    batch_id = uuid.uuid4()
    with transaction(sessions) as session:
        session.add(
            Batch(
                id=batch_id,
                input_filename="bench.csv",
                input_key=f"{batch_id}/input.csv",
                options=TransformOptions().model_dump(mode="json"),
                extra_columns=[],
                products_total=images,
                images_total=images,
            )
        )
        session.flush()
        products = [
            NewProduct(i + 2, str(i), f"p{i}", [], [f"http://cdn.test/{i}.jpg"])
            for i in range(images)
        ]
        insert_products(session, batch_id, products)
    return batch_id


def _round(sessions: Any, images: int, group: int) -> tuple[float, float]:
    """CPU and wall microseconds per image of recording one batch's images."""
    from pixelbatch.db.engine import transaction
    from pixelbatch.db.images import ImageSuccess, claim_images
    from pixelbatch.jobs.recording import Outcome, record_many

    batch_id = _new_batch(sessions, images)
    with transaction(sessions) as session:
        items = claim_images(session, owner="bench", limit=images, lease_seconds=600)
    stages = {"queue": 0.2, "download": 0.05, "transform": 0.004, "store": 0.0005}
    outcomes = [
        Outcome(
            item.id,
            item.batch_id,
            ImageSuccess(
                f"{item.batch_id}/{item.id}.jpg",
                "image/jpeg",
                90_000,
                30_000,
                640,
                480,
                "JPEG",
                90,
                45,
                55.0,
            ),
            duration_ms=55.0,
            row_number=item.row_number,
            position=item.position,
            url=item.url,
            stages=stages,
            has_copies=item.has_copies,
        )
        for item in items
    ]
    completed = []
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, len(outcomes), group):
        completed += record_many(sessions, outcomes[start : start + group], "bench")
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if completed != [batch_id]:  # every image recorded, the last one completing the batch
        raise RuntimeError(f"recording did not complete the batch: {completed}")
    return 1e6 * cpu / len(outcomes), 1e6 * wall / len(outcomes)


@contextlib.contextmanager
def _log_lines_written() -> Iterator[None]:
    """INFO lines formatted and written (to /dev/null), as a server writes them."""
    from pixelbatch.telemetry.logs import TEXT_FORMAT

    root = logging.getLogger()
    level = root.level
    with open(os.devnull, "w") as sink:
        handler = logging.StreamHandler(sink)
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            yield
        finally:
            root.removeHandler(handler)
            root.setLevel(level)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--code", default="worktree", help="worktree, head or a git revision")
    p.add_argument("--images", type=int, default=2000, help="images per round")
    p.add_argument("--group", type=int, default=9, help="images per transaction")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--databases", default="sqlite,postgresql")
    a = p.parse_args(argv)
    print("measuring", use_code(Config(code=a.code)))
    from pixelbatch.db.engine import make_engine, make_session_factory
    from pixelbatch.db.migrate import upgrade

    for kind in a.databases.split(","):
        with _database(kind) as url, _log_lines_written():
            engine = make_engine(url)
            upgrade(engine)
            sessions = make_session_factory(engine)
            _round(sessions, a.group * 10, a.group)  # warm: statement caches, connections
            samples = [_round(sessions, a.images, a.group) for _ in range(a.rounds)]
            engine.dispose()
        cpu = statistics.median(s[0] for s in samples)
        wall = statistics.median(s[1] for s in samples)
        print(
            f"{kind:<10} groups of {a.group}: CPU {cpu:6.0f} µs/image, wall {wall:6.0f} µs/image"
            f"  (CPU by round: {', '.join(f'{s[0]:.0f}' for s in samples)})"
        )


if __name__ == "__main__":
    main()
