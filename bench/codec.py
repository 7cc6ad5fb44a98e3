"""The second tables, measured in every round after the main one:

- ``pillow``: ``transform()`` against plain Pillow decode + encode with the same settings,
  on the sRGB-tagged or untagged JPEGs (nothing to convert), on every core: what
  orientation, colour management and quality estimation cost when there is nothing to do;
- ``small``: 640 px product images (q90), the C floor against pixelbatch embedded, and the
  CPU each image costs on top of the codec (split: our processes vs PostgreSQL/Redis);
- ``mixed``: the mixed corpus (a few PNG and WebP among the JPEGs), ``transform()`` on all
  cores against pixelbatch embedded, the figures of earlier runs.
"""

from __future__ import annotations

import functools

from bench import corpus as corpus_mod
from bench import floor as floor_mod
from bench.measure import rate, workload
from bench.rig import Rig


def measure_second_tables(rig: Rig, r: int) -> None:
    modes = rig.cfg.modes
    if "pillow" in modes and rig.pillow is not None and rig.plain is not None:
        measure_pillow(rig, rig.pillow, rig.plain, r)
    if "small" in modes and rig.small is not None and rig.small.files:
        measure_small(rig, rig.small, r)
    if "mixed" in modes and rig.mixed is not None and rig.pillow is not None:
        measure_mixed(rig, rig.mixed, rig.pillow, r)


def measure_pillow(
    rig: Rig, pillow: floor_mod.PillowFloor, plain: floor_mod.PlainPillow, r: int
) -> None:
    files = [f for f in rig.corpus.files if f.format == "jpeg" and f.icc in (None, "srgb")]
    srgb = corpus_mod.Corpus("srgb", rig.corpus.directory, files)
    wl = workload(srgb, rig.total, f"r{r}p")
    paths = rig.paths(wl.files)
    items = rig.quality_items(wl.files)
    steps = [
        ("transform_srgb", lambda: rate(len(paths), wl.megapixels, pillow.run(paths))),
        ("pillow_srgb", lambda: rate(len(items), wl.megapixels, plain.run(items))),
    ]
    for mode, fn in steps if r % 2 == 0 else steps[::-1]:
        rig.measure(mode, fn)


def measure_small(rig: Rig, small: corpus_mod.Corpus, r: int) -> None:
    wl = workload(small, rig.total, f"r{r}small")
    if rig.tj_binary is not None:
        items = rig.quality_items(wl.files)
        binary = rig.tj_binary
        rig.measure(
            "small_floor",
            lambda: rate(
                len(items),
                wl.megapixels,
                floor_mod.turbojpeg_floor(binary, items, rig.workdir),
            ),
        )
    if rig.embedded is not None:
        rig.measure(
            "small_embedded", functools.partial(rig.batch, "small", rig.embedded.base_url, wl)
        )


def measure_mixed(
    rig: Rig, mixed: corpus_mod.Corpus, pillow: floor_mod.PillowFloor, r: int
) -> None:
    wl = workload(mixed, rig.total, f"r{r}mixed")
    paths = rig.paths(wl.files)
    rig.measure("mixed_floor", lambda: rate(len(paths), wl.megapixels, pillow.run(paths)))
    if rig.embedded is not None:
        rig.measure(
            "mixed_embedded", functools.partial(rig.batch, "mixed", rig.embedded.base_url, wl)
        )
