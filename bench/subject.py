"""What a run measures and on what: the pixelbatch code under test, and the machine.

Both go into the results, so two result files can be compared knowing what produced them.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import procs
from bench.config import CACHE, Config


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
    }
    with contextlib.suppress(Exception):
        import PIL

        info["pillow"] = PIL.__version__
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def use_code(cfg: Config) -> str:
    """Which pixelbatch to measure. ``head`` (or any git revision, for the "before" of an
    A/B run): that commit's src/ exported to the cache and put first on PYTHONPATH for every
    process (this one, the pools, the servers and workers), so uncommitted edits under src/
    cannot change the figures halfway through a run."""
    if cfg.code == "worktree":
        return f"worktree ({procs.ROOT / 'src'})"
    revision = "HEAD" if cfg.code == "head" else cfg.code
    sha = subprocess.run(
        ["git", "rev-parse", "--verify", f"{revision}^{{commit}}"],
        cwd=procs.ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    target = CACHE / f"code-{sha[:12]}"
    if not (target / "src" / "pixelbatch").is_dir():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", sha, "src"], cwd=procs.ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    src = str(target / "src")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [src, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    )
    sys.path.insert(0, src)
    for name in [m for m in sys.modules if m == "pixelbatch" or m.startswith("pixelbatch.")]:
        del sys.modules[name]
    return f"{cfg.code} {sha[:12]} ({src})"
