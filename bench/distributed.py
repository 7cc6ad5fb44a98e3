"""The distributed deployment under test: its own database and Redis db, an API, N workers.

Everything it creates is thrown away by ``close``, so a run leaves the shared PostgreSQL
and Redis as it found them.
"""

from __future__ import annotations

import base64
import os
import subprocess
import uuid
from pathlib import Path

from bench import procs
from bench.config import Config


class Distributed:
    """A fresh PostgreSQL database and a flushed Redis db; an API and up to 2 workers."""

    def __init__(
        self,
        cfg: Config,
        base_env: dict[str, str],
        workdir: Path,
        *,
        name: str = "dist",
        storage_env: dict[str, str] | None = None,
        redis_url: str | None = None,
    ) -> None:
        """``storage_env``: the storage settings (default: a directory in ``workdir``);
        ``redis_url``: a Redis db of this stack's own when two stacks run side by side."""
        import psycopg
        import redis

        self.cfg = cfg
        self.name = name
        self.redis_url = redis_url or cfg.redis_url
        self.db = f"pixelbatch_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(cfg.pg_admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db}"')
        self.redis = redis.Redis.from_url(self.redis_url)
        self.redis.flushdb()
        base = cfg.pg_admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
        self.env = {
            **base_env,
            "PIXELBATCH_DATABASE_URL": f"{base}/{self.db}",
            "PIXELBATCH_BROKER_URL": self.redis_url,
            "PIXELBATCH_STORAGE_URL": f"file://{workdir / 'shared'}",
            "PIXELBATCH_DATA_DIR": str(workdir / f"{name}-data"),
            # Replicas and workers must share secrets (random per run; nothing is signed
            # that outlives the run).
            "PIXELBATCH_WEBHOOK_SECRET": base_env.get("PIXELBATCH_WEBHOOK_SECRET")
            or "whsec_" + base64.b64encode(os.urandom(24)).decode(),
            "PIXELBATCH_SECRET_KEY": base_env.get("PIXELBATCH_SECRET_KEY")
            or base64.b64encode(os.urandom(32)).decode(),
            **(storage_env or {}),
        }
        self.workdir = workdir
        self.api: procs.Api | None = None
        self.workers: list[procs.Worker] = []
        subprocess.run(
            [procs.python(), "-m", "pixelbatch", "db", "upgrade"],
            env=self.env,
            cwd=procs.ROOT,
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start_api(self) -> procs.Api:
        self.api = procs.Api(f"{self.name}-api", self.env, self.workdir)
        return self.api

    def scale(self, n: int) -> None:
        while len(self.workers) < n:
            prefix = "w" if self.name == "dist" else f"{self.name}-w"
            worker = procs.Worker(f"{prefix}{len(self.workers) + 1}", self.env, self.workdir)
            self.workers.append(worker)
        while len(self.workers) > n:
            self.workers.pop().stop()

    def close(self) -> None:
        import psycopg

        self.scale(0)
        if self.api is not None:
            self.api.stop()
        try:
            self.redis.flushdb()
            self.redis.close()
        finally:
            with psycopg.connect(self.cfg.pg_admin, autocommit=True) as conn:
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (self.db,),
                )
                conn.execute(f'DROP DATABASE IF EXISTS "{self.db}"')
