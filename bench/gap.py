"""Where ``transform()`` spends time beyond the codec, file by file, in one process.

    .venv/bin/python -m bench.gap                     # the main table, default options
    .venv/bin/python -m bench.gap --max-width 1000    # shrunk, as catalog pages ask
    .venv/bin/python -m bench.gap --code 8a1e165      # another revision's transform()

Each JPEG of the main table is transformed ``--runs`` times (median) and, on the default
options, also decoded and encoded by plain Pillow at the quality ``transform()`` chose,
Huffman optimisation on: the codec alone, through the same library. The files are then
grouped by what sets them apart (an AdobeRGB or sRGB profile, an EXIF orientation), and
each group's share of the time beyond plain Pillow is printed: the whole-table ratios of
``bench.run`` say how far we are from the floor, this says which files put us there.
Single-threaded wall time, so run it on a quiet machine and compare within one run.
"""

from __future__ import annotations

import argparse
import functools
import io
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench import corpus as corpus_mod
from bench.config import Config
from bench.subject import use_code


def _median_ms(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def _plain_pillow(data: bytes, quality: int) -> None:
    from PIL import Image

    im = Image.open(io.BytesIO(data))
    im.load()
    im.save(io.BytesIO(), "JPEG", quality=quality, optimize=True)


TRAITS = ("AdobeRGB profile", "EXIF orientation", "sRGB profile", "untagged")


def _trait(f: corpus_mod.CorpusFile) -> str:
    if f.icc == "adobe":
        return "AdobeRGB profile"
    if f.orientation:
        return "EXIF orientation"
    return "sRGB profile" if f.icc == "srgb" else "untagged"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--max-width", type=int, default=None, help="transform() option max_width")
    p.add_argument("--runs", type=int, default=5, help="runs per file (median)")
    p.add_argument("--code", default="worktree", help="worktree, head or a git revision")
    p.add_argument("--synthetic", action="store_true", help="8 generated files (installs nothing)")
    a = p.parse_args(argv)
    print("measuring", use_code(Config(code=a.code)))
    from pixelbatch.transform import TransformOptions, transform

    corpus = corpus_mod.build("synthetic" if a.synthetic else "full").group("jpeg")
    options = TransformOptions(max_width=a.max_width)
    shrunk = a.max_width is not None
    rows = []
    for f in [f for f in corpus.files if f.format == "jpeg"]:
        data = corpus.data(f.name)
        result = transform(data, options)
        quality = result.output_quality or 75
        ours = _median_ms(functools.partial(transform, data, options), a.runs)
        plain = (
            0.0 if shrunk else _median_ms(functools.partial(_plain_pillow, data, quality), a.runs)
        )
        rows.append((f, ours, plain))
        print(
            f"  {f.name:<22} {f.megapixels:5.1f} MP  {_trait(f):<17} transform() {ours:7.1f} ms"
            + ("" if shrunk else f"  plain Pillow {plain:7.1f} ms  beyond {ours - plain:6.1f}")
        )
    total_ours = sum(ours for _, ours, _ in rows)
    if shrunk:
        print(f"transform(), max_width={a.max_width}, all {len(rows)} files: {total_ours:.1f} ms")
        for trait in TRAITS:
            group = [ours for f, ours, _ in rows if _trait(f) == trait]
            print(f"  {trait:<17} {len(group):2d} files  {sum(group):7.1f} ms")
        return
    total_plain = sum(plain for _, _, plain in rows)
    beyond = total_ours - total_plain
    print(
        f"all {len(rows)} files: transform() {total_ours:.1f} ms, plain Pillow {total_plain:.1f} "
        f"ms (ratio {total_plain / total_ours:.3f}); {beyond:.1f} ms beyond the codec, of which:"
    )
    for trait in TRAITS:
        group = [(ours, plain) for f, ours, plain in rows if _trait(f) == trait]
        extra = sum(ours - plain for ours, plain in group)
        share = extra / beyond if beyond > 0 else 0.0
        print(f"  {trait:<17} {len(group):2d} files  {extra:7.1f} ms  ({share:.0%})")


if __name__ == "__main__":
    main()
