"""The floors: what the hardware can do with the same files and no network, no database.

- ``PillowFloor``: ``pixelbatch.transform.transform`` (the same library, code and settings the
  service runs) on every core through a process pool; the bytes are read by the workers.
- ``turbojpeg_floor``: libjpeg-turbo called from C (tjDecompress2 + tjCompress2 at the same
  output quality, 4:2:0), one process per core, on the JPEG files only: the physical
  reference. Needs a C compiler and libturbojpeg0-dev; skipped (with the reason) otherwise.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

_cache: dict[str, bytes] = {}


def _work(path: str) -> tuple[int, int]:
    from pixelbatch.transform import TransformOptions, transform

    data = _cache.get(path)
    if data is None:
        data = _cache[path] = Path(path).read_bytes()
    result = transform(data, TransformOptions(), max_pixels=50_000_000)
    return result.width * result.height, len(result.data)


class PillowFloor:
    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        ctx = multiprocessing.get_context("spawn")
        self.pool = ProcessPoolExecutor(self.workers, mp_context=ctx)

    def warm(self, paths: list[str]) -> None:
        list(self.pool.map(_work, paths[: self.workers * 2]))

    def run(self, paths: list[str]) -> float:
        """Seconds to transform every path once (paths may repeat)."""
        started = time.perf_counter()
        for _ in self.pool.map(_work, paths, chunksize=1):
            pass
        return time.perf_counter() - started

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


C_SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
#include <turbojpeg.h>

/* usage: tjfloor LISTFILE NPROC ; LISTFILE lines: "<quality> <path>" */
static unsigned char *slurp(const char *path, unsigned long *size) {
  FILE *f = fopen(path, "rb"); if (!f) return NULL;
  fseek(f, 0, SEEK_END); long n = ftell(f); fseek(f, 0, SEEK_SET);
  unsigned char *buf = malloc(n); if (fread(buf, 1, n, f) != (size_t)n) { fclose(f); return NULL; }
  fclose(f); *size = n; return buf;
}
int main(int argc, char **argv) {
  if (argc < 3) return 2;
  FILE *list = fopen(argv[1], "r"); if (!list) return 2;
  int nproc = atoi(argv[2]);
  char *paths[100000]; int quals[100000]; int n = 0; char line[4096];
  while (n < 100000 && fgets(line, sizeof line, list)) {
    char *sp = strchr(line, ' '); if (!sp) continue; *sp = 0;
    quals[n] = atoi(line); line[strcspn(sp + 1, "\n") + (sp + 1 - line)] = 0;
    paths[n++] = strdup(sp + 1);
  }
  fclose(list);
  struct timespec t0, t1; clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int p = 0; p < nproc; p++) {
    if (fork() == 0) {
      tjhandle d = tjInitDecompress(), c = tjInitCompress();
      for (int i = p; i < n; i += nproc) {
        unsigned long size; unsigned char *jpg = slurp(paths[i], &size);
        int w, h, ss, cs;
        if (!jpg || tjDecompressHeader3(d, jpg, size, &w, &h, &ss, &cs)) _exit(3);
        unsigned char *rgb = malloc((size_t)w * h * 3);
        if (tjDecompress2(d, jpg, size, rgb, w, 0, h, TJPF_RGB, 0)) _exit(4);
        unsigned char *out = NULL; unsigned long outsize = 0;
        if (tjCompress2(c, rgb, w, 0, h, TJPF_RGB, &out, &outsize, TJSAMP_420, quals[i], 0))
          _exit(5);
        tjFree(out); free(rgb); free(jpg);
      }
      _exit(0);
    }
  }
  int status, failed = 0;
  while (wait(&status) > 0) if (!WIFEXITED(status) || WEXITSTATUS(status)) failed = 1;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  printf("%.6f\n", (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
  return failed;
}
"""


def build_turbojpeg(cache: Path, log: callable = print) -> tuple[Path | None, str]:  # type: ignore[valid-type]
    """Compile the C reference; returns (binary, note). Installs libturbojpeg0-dev if apt can."""
    binary = cache / "tjfloor"
    if binary.exists():
        return binary, "libjpeg-turbo from C (TurboJPEG API)"
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None, "skipped: no C compiler"
    header = Path("/usr/include/turbojpeg.h")
    if not header.exists() and shutil.which("apt-get"):
        log("installing libturbojpeg0-dev with apt-get (one time) ...")
        env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "libturbojpeg0-dev"],
            env=env,
            capture_output=True,
        )
    if not header.exists():
        return None, "skipped: turbojpeg.h not available (libturbojpeg0-dev)"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "tjfloor.c"
        src.write_text(C_SOURCE)
        built = subprocess.run(
            [cc, "-O2", "-o", str(binary), str(src), "-lturbojpeg"], capture_output=True, text=True
        )
    if built.returncode != 0:
        return None, f"skipped: compile failed: {built.stderr[-300:]}"
    return binary, "libjpeg-turbo from C (TurboJPEG API)"


def turbojpeg_floor(
    binary: Path, items: list[tuple[str, int]], workdir: Path, nproc: int | None = None
) -> float:
    """Seconds for ``nproc`` processes to decode + re-encode every (path, quality) item."""
    listing = workdir / "tjfloor.txt"
    listing.write_text("".join(f"{q} {p}\n" for p, q in items))
    out = subprocess.run(
        [str(binary), str(listing), str(nproc or os.cpu_count() or 1)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return float(out.stdout.strip())
