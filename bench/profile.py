"""Profile one mode with py-spy while a batch runs, and summarise where the time goes.

    .venv/bin/pip install py-spy
    .venv/bin/python -m bench.profile embedded   # or: dist1, dist2
    .venv/bin/python -m bench.profile dist1 --idle   # include waiting threads
    .venv/bin/python -m bench.profile embedded --table small   # 640 px product images
    .venv/bin/python -m bench.profile embedded --table small --gil   # CPU of a GIL-bound API

Records every process of the mode (API, pool children, workers) for ``--seconds``, writes the
raw collapsed stacks to bench/.cache/profile-<mode>-<pid>.txt (open them with speedscope or
flamegraph.pl) and prints, per process, the share of samples by thread and by leaf frame.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bench import corpus as corpus_mod
from bench import procs
from bench.config import Config
from bench.distributed import Distributed
from bench.measure import run_batch, workload
from bench.subject import use_code


def summarise(path: Path, top: int) -> str:
    threads: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1] if frames[0].startswith("thread") else "?"
        threads[thread] += n
        leaves[frames[-1]] += n
        for frame in {
            f.rsplit(" (", 1)[0] + " (" + f.rsplit(" (", 1)[-1].split(":")[0] + ")"
            for f in frames[1:]
        }:
            inclusive[frame] += n
    if not total:
        return f"{path.name}: no samples"
    out = [f"{path.name}: {total} samples"]
    out.append("  by thread:")
    out += [f"    {n / total:6.1%}  {t}" for t, n in threads.most_common(8)]
    out.append("  leaf frames (self time):")
    out += [f"    {n / total:6.1%}  {f}" for f, n in leaves.most_common(top)]
    out.append("  inclusive (pixelbatch and Pillow frames):")
    wanted = [(f, n) for f, n in inclusive.most_common(200) if "pixelbatch" in f or "PIL" in f]
    out += [f"    {n / total:6.1%}  {f}" for f, n in wanted[:top]]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("embedded", "dist1", "dist2"))
    p.add_argument(
        "--products",
        type=int,
        default=None,
        help="products in the batch (x3 images); default 96, or 800 for the small table, so"
        " the batch outlasts the recording's start",
    )
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--idle", action="store_true", help="sample idle (waiting) threads too")
    p.add_argument(
        "--gil",
        action="store_true",
        help="only samples holding the GIL: where a GIL-bound process spends its CPU",
    )
    p.add_argument("--top", type=int, default=12)
    p.add_argument(
        "--table",
        choices=("jpeg", "small", "mixed"),
        default="jpeg",
        help="corpus: JPEG photos (the main table), 640 px products, or the mixed one",
    )
    p.add_argument("--code", default="worktree", help="worktree, head or a git revision")
    p.add_argument("--hosts", type=int, default=4, help="image hosts (suppliers), as bench.run")
    a = p.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(procs.python()).parent / "py-spy")
    cfg = Config(code=a.code)
    print("measuring", use_code(cfg))
    corpus = corpus_mod.build("full").group(a.table)
    workdir = Path(tempfile.mkdtemp(prefix="profile-", dir=corpus_mod.CACHE))
    server = procs.ImageServer(corpus.directory, 0.05, 0, a.hosts)
    env = {
        **procs.os.environ,
        "PIXELBATCH_FETCH_ALLOW": server.allow,
        "PIXELBATCH_FETCH_ALLOWED_PORTS": str(server.port),
    }
    products = a.products or (800 if a.table == "small" else 96)
    wl = workload(corpus, products * 3, "prof")
    dist = None
    api = None
    try:
        if a.mode == "embedded":
            api = procs.Api("embedded", {**env, "PIXELBATCH_DATA_DIR": str(workdir / "d")}, workdir)
            roots = [api.pid]
            url = api.base_url
        else:
            dist = Distributed(cfg, env, workdir)
            url = dist.start_api().base_url
            dist.scale(1 if a.mode == "dist1" else 2)
            roots = [dist.api.pid, *(w.pid for w in dist.workers)]  # type: ignore[union-attr]
        result: dict[str, object] = {}
        batch = threading.Thread(
            target=lambda: result.update(run_batch(url, wl.csv(server.bases, 3), 10))
        )
        batch.start()
        time.sleep(3)  # let the pipeline fill
        pids = [
            pid
            for root in roots
            for pid in [root, *procs.descendants(root)]
            if "resource_tracker" not in procs.cmdline(pid)
        ]
        recorders = []
        for pid in pids:
            out = corpus_mod.CACHE / f"profile-{a.mode}-{pid}.txt"
            cmd = [
                pyspy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(int(a.seconds)),
                "--rate",
                "100",
                "--format",
                "raw",
                "--threads",
                "--output",
                str(out),
                "--nonblocking",
            ]
            if a.idle:
                cmd.append("--idle")
            if a.gil:
                cmd.append("--gil")
            recorders.append(
                (
                    pid,
                    out,
                    subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
                )
            )
        # Until the batch ends (or --seconds pass): samples after it would only dilute the
        # profile with idle threads. py-spy writes what it has on SIGINT.
        batch.join(timeout=a.seconds)
        for _, _, rec in recorders:
            if rec.poll() is None:
                rec.send_signal(signal.SIGINT)
        for _, _, rec in recorders:
            rec.wait()
        batch.join()
        print(f"batch: {result.get('seconds', 0):.1f} s for {len(wl.files)} images")
        for pid, out, _ in recorders:
            print(f"\n== pid {pid}: {procs.cmdline(pid)[-70:] or '(exited)'}")
            if out.exists():
                print(summarise(out, a.top))
    finally:
        if api is not None:
            api.stop()
        if dist is not None:
            dist.close()
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
