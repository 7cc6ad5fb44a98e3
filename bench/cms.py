"""Colour conversion alone: Pillow's ``ImageCms`` against pixelbatch's direct LittleCMS call.

    .venv/bin/python -m bench.cms                 # the main table's profiled photos
    .venv/bin/python -m bench.cms --synthetic     # the generated corpus (installs nothing)

Each JPEG of the corpus with a profile other than sRGB is decoded once; then, ``--runs``
times each and alternating, a fresh copy is converted to sRGB in place by Pillow's
``ImageCms.applyTransform`` (the yardstick: what any Pillow program does) and by
``transform.lcms_direct.convert_in_place`` (what ``transform()`` does). The two outputs must
be the same bytes. Medians per file, single-threaded, one process: the codec and the rest of
``transform()`` are left out, so the difference is LittleCMS's pixel layout alone.
"""

from __future__ import annotations

import argparse
import functools
import io
import statistics
import time
from collections.abc import Callable

from bench import corpus as corpus_mod


def _timed(convert: Callable[[], object]) -> float:
    started = time.perf_counter()
    convert()
    return (time.perf_counter() - started) * 1000


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="runs per file and path (median)")
    p.add_argument("--synthetic", action="store_true", help="8 generated files (installs nothing)")
    a = p.parse_args(argv)
    from PIL import Image, ImageCms

    from pixelbatch.transform import lcms_direct

    if not lcms_direct.available():
        raise SystemExit("the direct LittleCMS path is not available with this Pillow")
    corpus = corpus_mod.build("synthetic" if a.synthetic else "full").group("jpeg")
    srgb = ImageCms.createProfile("sRGB")
    totals = {"pillow": 0.0, "direct": 0.0}
    megapixels = 0.0
    for f in [f for f in corpus.files if f.format == "jpeg" and f.icc == "adobe"]:
        with lcms_direct.contiguous_pixels():  # copies too are single blocks
            source = Image.open(io.BytesIO(corpus.data(f.name)))
            source.load()
            icc = source.info["icc_profile"]
            built = ImageCms.buildTransform(
                ImageCms.ImageCmsProfile(io.BytesIO(icc)), srgb, "RGB", "RGB"
            )
            # Both transforms built before the clock starts (each path caches its own).
            ImageCms.applyTransform(source.copy(), built, True)
            lcms_direct.convert_in_place(source.copy(), icc)
            times: dict[str, list[float]] = {"pillow": [], "direct": []}
            outputs: dict[str, bytes] = {}
            for _ in range(a.runs):
                by_pillow, direct = source.copy(), source.copy()
                times["pillow"].append(
                    _timed(functools.partial(ImageCms.applyTransform, by_pillow, built, True))
                )
                times["direct"].append(
                    _timed(functools.partial(lcms_direct.convert_in_place, direct, icc))
                )
                outputs = {"pillow": by_pillow.tobytes(), "direct": direct.tobytes()}
        if outputs["pillow"] != outputs["direct"]:
            raise SystemExit(f"{f.name}: the two paths gave different pixels")
        pillow_ms, direct_ms = (statistics.median(times[k]) for k in ("pillow", "direct"))
        totals["pillow"] += pillow_ms
        totals["direct"] += direct_ms
        megapixels += f.megapixels
        print(
            f"  {f.name:<22} {f.megapixels:5.1f} MP  ImageCms {pillow_ms:7.1f} ms"
            f"  direct {direct_ms:7.1f} ms  ({pillow_ms / direct_ms:.2f}x, same pixels)"
        )
    if not megapixels:
        raise SystemExit("no profiled JPEG in the corpus")
    print(
        f"{megapixels:.1f} MP converted: ImageCms {totals['pillow']:.1f} ms "
        f"({megapixels / totals['pillow'] * 1000:.0f} MP/s), direct {totals['direct']:.1f} ms "
        f"({megapixels / totals['direct'] * 1000:.0f} MP/s): "
        f"{totals['pillow'] / totals['direct']:.2f}x"
    )


if __name__ == "__main__":
    main()
