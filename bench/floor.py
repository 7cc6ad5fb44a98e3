"""The floors: what the hardware can do with the same files and no network, no database.

- ``PillowFloor``: ``pixelbatch.transform.transform`` (the same library, code and settings the
  service runs) on every core through a process pool; the bytes are read by the workers.
- ``turbojpeg_floor``: libjpeg-turbo called from C through the libjpeg API with our output
  settings (the same quality rule, 4:2:0, baseline, Huffman optimisation on), one process
  per core, on JPEG files: the bench's floor. Needs a C compiler and libjpeg62-turbo-dev;
  skipped (with the reason) otherwise.
- ``PlainPillow``: Pillow decode + encode with the same settings and nothing else, the
  ceiling of ``transform()`` on sRGB or untagged JPEGs.
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


def _plain(item: tuple[str, int]) -> tuple[int, int]:
    """Plain Pillow: decode, encode at the given quality with our settings, nothing else."""
    import io

    from PIL import Image

    path, quality = item
    data = _cache.get(path)
    if data is None:
        data = _cache[path] = Path(path).read_bytes()
    im = Image.open(io.BytesIO(data))
    im.load()
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality, optimize=True, progressive=False)
    return im.width * im.height, buf.tell()


class PlainPillow:
    """``_plain`` on every core: what transform() would cost with nothing to do but the codec."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        ctx = multiprocessing.get_context("spawn")
        self.pool = ProcessPoolExecutor(self.workers, mp_context=ctx)

    def warm(self, items: list[tuple[str, int]]) -> None:
        list(self.pool.map(_plain, items))

    def run(self, items: list[tuple[str, int]]) -> float:
        started = time.perf_counter()
        for _ in self.pool.map(_plain, items, chunksize=1):
            pass
        return time.perf_counter() - started

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


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
#include <jpeglib.h>

/* usage: jfloor LISTFILE NPROC OPTIMIZE ; LISTFILE lines: "<quality> <path>"
   Decode to RGB and encode at <quality>, 4:2:0, baseline, Huffman optimisation when
   OPTIMIZE is 1: exactly what Pillow's save(quality=q, optimize=True) asks of libjpeg. */
static unsigned char *slurp(const char *path, unsigned long *size) {
  FILE *f = fopen(path, "rb"); if (!f) return NULL;
  fseek(f, 0, SEEK_END); long n = ftell(f); fseek(f, 0, SEEK_SET);
  unsigned char *buf = malloc(n); if (fread(buf, 1, n, f) != (size_t)n) { fclose(f); return NULL; }
  fclose(f); *size = n; return buf;
}
static unsigned long one(unsigned char *jpg, unsigned long size, int quality, int optimize) {
  struct jpeg_decompress_struct d; struct jpeg_compress_struct c; struct jpeg_error_mgr e1, e2;
  d.err = jpeg_std_error(&e1); jpeg_create_decompress(&d);
  jpeg_mem_src(&d, jpg, size); jpeg_read_header(&d, TRUE);
  d.out_color_space = JCS_RGB; jpeg_start_decompress(&d);
  unsigned w = d.output_width, h = d.output_height;
  unsigned char *rgb = malloc((size_t)w * h * 3);
  while (d.output_scanline < h) {
    JSAMPROW row = rgb + (size_t)d.output_scanline * w * 3; jpeg_read_scanlines(&d, &row, 1);
  }
  jpeg_finish_decompress(&d); jpeg_destroy_decompress(&d);
  unsigned char *out = NULL; unsigned long outsize = 0;
  c.err = jpeg_std_error(&e2); jpeg_create_compress(&c); jpeg_mem_dest(&c, &out, &outsize);
  c.image_width = w; c.image_height = h; c.input_components = 3; c.in_color_space = JCS_RGB;
  jpeg_set_defaults(&c); jpeg_set_quality(&c, quality, TRUE); c.optimize_coding = optimize;
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < h) {
    JSAMPROW row = rgb + (size_t)c.next_scanline * w * 3; jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c); jpeg_destroy_compress(&c);
  free(rgb); free(out); return outsize;
}
int main(int argc, char **argv) {
  if (argc < 4) return 2;
  FILE *list = fopen(argv[1], "r"); if (!list) return 2;
  int nproc = atoi(argv[2]), optimize = atoi(argv[3]);
  static char *paths[100000]; static int quals[100000]; int n = 0; char line[4096];
  while (n < 100000 && fgets(line, sizeof line, list)) {
    char *sp = strchr(line, ' '); if (!sp) continue; *sp = 0;
    quals[n] = atoi(line); sp[1 + strcspn(sp + 1, "\n")] = 0;
    paths[n++] = strdup(sp + 1);
  }
  fclose(list);
  /* Files are read before the clock starts, as the Python floors read from a warm cache. */
  unsigned char **data = calloc(n, sizeof *data); unsigned long *sizes = calloc(n, sizeof *sizes);
  for (int i = 0; i < n; i++) if (!(data[i] = slurp(paths[i], &sizes[i]))) return 3;
  struct timespec t0, t1; clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int p = 0; p < nproc; p++) {
    if (fork() == 0) {
      for (int i = p; i < n; i += nproc) one(data[i], sizes[i], quals[i], optimize);
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
    binary = cache / "jfloor"
    if binary.exists():
        return binary, "libjpeg-turbo from C (libjpeg API, Huffman optimisation on)"
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None, "skipped: no C compiler"
    header = Path("/usr/include/jpeglib.h")
    if not header.exists() and shutil.which("apt-get"):
        log("installing libjpeg62-turbo-dev with apt-get (one time) ...")
        env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "libjpeg62-turbo-dev"],
            env=env,
            capture_output=True,
        )
    if not header.exists():
        return None, "skipped: jpeglib.h not available (libjpeg62-turbo-dev)"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "jfloor.c"
        src.write_text(C_SOURCE)
        built = subprocess.run(
            [cc, "-O2", "-o", str(binary), str(src), "-ljpeg"], capture_output=True, text=True
        )
    if built.returncode != 0:
        return None, f"skipped: compile failed: {built.stderr[-300:]}"
    return binary, "libjpeg-turbo from C (libjpeg API, Huffman optimisation on)"


def turbojpeg_floor(
    binary: Path,
    items: list[tuple[str, int]],
    workdir: Path,
    nproc: int | None = None,
    optimize: bool = True,
) -> float:
    """Seconds for ``nproc`` processes to decode + re-encode every (path, quality) item,
    with Huffman optimisation (``optimize``) as pixelbatch writes its JPEGs."""
    listing = workdir / "tjfloor.txt"
    listing.write_text("".join(f"{q} {p}\n" for p, q in items))
    out = subprocess.run(
        [str(binary), str(listing), str(nproc or os.cpu_count() or 1), str(int(optimize))],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return float(out.stdout.strip())
