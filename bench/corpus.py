"""The benchmark corpus: real photographs from Debian packages, cut, resized and re-encoded
into the files a product catalog really holds (1000-6000 px, JPEG q85-95, a few PNG and
WebP, some with EXIF orientation and ICC profiles, one ~24 MP JPEG).

Sources (Debian, installed with apt-get when missing):
- ``mate-backgrounds``: /usr/share/backgrounds/mate/nature/*.jpg, 12 photographs
  (1280x1024 .. 2560x1920);
- ``lomiri-wallpapers-20.04``: Kleiber_by_Lukas_Baubkus.jpg (6028x3391, a photograph of a
  nuthatch on a tree) and Infinite-Sea_by_Aury88.jpg (4096x4096, night sky over the sea);
- ``icc-profiles-free``: compatibleWithAdobeRGB1998.icc and sRGB.icc for embedded profiles.

The corpus is built once and cached in ``bench/.cache/corpus-<kind>/`` with a manifest.
``synthetic`` corpora (for the smoke test) draw pictures with pixelbatch's demo generator
and need nothing installed.
"""

from __future__ import annotations

import io
import json
import random
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageCms

CACHE = Path(__file__).resolve().parent / ".cache"
MANIFEST = "manifest.json"
CORPUS_VERSION = 5

APT_PACKAGES = ("mate-backgrounds", "lomiri-wallpapers-20.04", "icc-profiles-free")
NATURE_DIR = Path("/usr/share/backgrounds/mate/nature")
LOMIRI = [
    Path("/usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg"),
    Path("/usr/share/backgrounds/Infinite-Sea_by_Aury88.jpg"),
]
ADOBE_ICC = Path("/usr/share/color/icc/compatibleWithAdobeRGB1998.icc")
SRGB_ICC = Path("/usr/share/color/icc/sRGB.icc")


@dataclass
class CorpusFile:
    name: str
    format: str  # jpeg, png, webp
    width: int
    height: int
    bytes: int
    quality: int | None
    orientation: int | None
    icc: str | None
    source: str
    # Which tables the file belongs to: "jpeg" (the main, JPEG-only set: the codec floor's
    # ground), "mixed" (the same set with a few PNG and WebP: the second table), "small"
    # (640 px product images, q90: where per-image overhead decides).
    groups: tuple[str, ...] = ("jpeg", "mixed")

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6

    @property
    def content_type(self) -> str:
        return {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}[self.format]


@dataclass
class Corpus:
    kind: str
    directory: Path
    files: list[CorpusFile]

    def group(self, name: str) -> Corpus:
        """The files of one table (same directory, so one image server serves them all)."""
        return Corpus(self.kind, self.directory, [f for f in self.files if name in f.groups])

    def data(self, name: str) -> bytes:
        return (self.directory / name).read_bytes()

    def summary(self) -> dict[str, object]:
        mps = [f.megapixels for f in self.files]
        formats: dict[str, int] = {}
        for f in self.files:
            formats[f.format] = formats.get(f.format, 0) + 1
        return {
            "kind": self.kind,
            "directory": str(self.directory),
            "files": len(self.files),
            "formats": formats,
            "mean_megapixels": round(sum(mps) / len(mps), 2),
            "max_megapixels": round(max(mps), 1),
            "min_long_side": min(max(f.width, f.height) for f in self.files),
            "max_long_side": max(max(f.width, f.height) for f in self.files),
            "total_bytes": sum(f.bytes for f in self.files),
            "with_exif_orientation": sum(1 for f in self.files if f.orientation),
            "with_icc": sum(1 for f in self.files if f.icc),
        }


# --------------------------------------------------------------------------- sources


def ensure_sources(log: callable = print) -> list[Path]:  # type: ignore[valid-type]
    """Install the Debian packages with the photographs if they are missing."""
    if not NATURE_DIR.is_dir() or not all(p.exists() for p in LOMIRI) or not ADOBE_ICC.exists():
        if shutil.which("apt-get") is None:
            raise RuntimeError(
                "the photo corpus needs the Debian packages "
                + " ".join(APT_PACKAGES)
                + "; use --synthetic on a machine without apt-get"
            )
        log(f"installing {' '.join(APT_PACKAGES)} with apt-get (one time) ...")
        env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", *APT_PACKAGES]
        if subprocess.run(cmd, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=True)
            subprocess.run(cmd, env=env, capture_output=True, check=True)
    sources = sorted(NATURE_DIR.glob("*.jpg")) + LOMIRI
    missing = [p for p in sources if not p.exists()]
    if missing or len(sources) < 10:
        raise RuntimeError(f"photo sources missing after install: {missing}")
    return sources


# --------------------------------------------------------------------------- plans


@dataclass
class Plan:
    source: int  # index into the sources
    width: int
    height: int
    format: str
    quality: int | None = None
    orientation: int | None = None
    icc: str | None = None  # "adobe" | "srgb"
    progressive: bool = False
    subsampling: int = 2  # Pillow: 0 = 4:4:4, 2 = 4:2:0
    alpha: bool = False
    camera_exif: bool = False


ASPECTS = [(1, 1), (4, 3), (3, 2), (3, 4), (2, 3), (1, 1), (16, 9)]
# Megapixels of the ordinary files, cycled; mean ~3.2 MP, so with the 24 MP and 12 MP ones
# the corpus averages ~3.8 MP.
MEGAPIXELS = [1.0, 1.5, 2.0, 2.0, 2.5, 3.0, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0]
QUALITIES = [85, 88, 90, 92, 95, 87, 93, 89, 91, 86]


def _dims(mp: float, aspect: tuple[int, int]) -> tuple[int, int]:
    aw, ah = aspect
    h = (mp * 1e6 * ah / aw) ** 0.5
    w = h * aw / ah
    return max(16, round(w / 8) * 8), max(16, round(h / 8) * 8)


def full_plans(n_sources: int, count: int = 48) -> list[Plan]:
    rng = random.Random(20261125)
    plans = [
        # The memory target's input: a 24 MP camera-sized JPEG (6000x4000), a real photo.
        Plan(n_sources - 2, 6000, 4000, "jpeg", 92, camera_exif=True),
        Plan(n_sources - 1, 4000, 3000, "jpeg", 90, icc="adobe"),
    ]
    i = 0
    while len(plans) < count:
        k = len(plans)
        mp = MEGAPIXELS[i % len(MEGAPIXELS)]
        aspect = ASPECTS[(i * 3) % len(ASPECTS)]
        width, height = _dims(mp, aspect)
        source = i % n_sources
        if k % 12 == 5:  # 4 PNGs: product cut-outs with alpha and plain photos
            plans.append(Plan(source, *_dims(min(mp, 1.5), aspect), "png", alpha=(k % 24 == 5)))
        elif k % 12 == 9:  # 4 WebPs
            plans.append(Plan(source, width, height, "webp", quality=[80, 85, 90][i % 3]))
        else:
            q = QUALITIES[i % len(QUALITIES)]
            plan = Plan(source, width, height, "jpeg", q)
            plan.progressive = k % 7 == 3
            plan.subsampling = 0 if q >= 93 and k % 2 == 0 else 2
            if k % 10 == 4:
                plan.orientation = [6, 8, 3, 6, 8][(k // 10) % 5]
            if k % 10 == 7:
                plan.icc = "adobe" if (k // 10) % 2 == 0 else "srgb"
            plan.camera_exif = k % 3 == 0
            plans.append(plan)
        i += 1
        _ = rng
    return plans


def jpeg_stand_ins(plans: list[Plan]) -> list[Plan]:
    """For each PNG/WebP of the mixed set, a JPEG q90 of the same crop size: the JPEG-only
    set is the mixed one with those files replaced, so both tables have the same sizes."""
    return [
        Plan(p.source, p.width, p.height, "jpeg", 90, camera_exif=True)
        for p in plans
        if p.format != "jpeg"
    ]


def small_plans(n_sources: int, count: int) -> list[Plan]:
    """Product images as catalogs hold them: 640 px on the long side, JPEG q90."""
    plans = []
    for i in range(count):
        aw, ah = ASPECTS[i % len(ASPECTS)]
        long_side = 640
        w, h = (
            (long_side, round(long_side * ah / aw))
            if aw >= ah
            else (
                round(long_side * aw / ah),
                long_side,
            )
        )
        plans.append(Plan(i % n_sources, w, h, "jpeg", 90, camera_exif=i % 2 == 0))
    return plans


def quick_plans(n_sources: int) -> list[Plan]:
    """Eight small files of every kind, for the smoke mode."""
    return [
        Plan(0, 1200, 900, "jpeg", 90, camera_exif=True),
        Plan(1 % n_sources, 1000, 1000, "jpeg", 85, orientation=6),
        Plan(2 % n_sources, 1024, 768, "jpeg", 95, icc="adobe", subsampling=0),
        Plan(3 % n_sources, 1000, 1000, "png", alpha=True),
        Plan(4 % n_sources, 1200, 800, "webp", quality=85),
        Plan(5 % n_sources, 1000, 1500, "jpeg", 88, progressive=True),
        Plan(6 % n_sources, 1280, 960, "jpeg", 92, icc="srgb"),
        Plan(7 % n_sources, 1600, 1200, "jpeg", 90),
    ]


# --------------------------------------------------------------------------- building


def _cut(src: Image.Image, width: int, height: int, rng: random.Random) -> Image.Image:
    """A random crop of the source at the target aspect (60-100% of the largest such crop),
    resized to the target with Lanczos (upscaling only when the source is smaller)."""
    sw, sh = src.size
    target_aspect = width / height
    if sw / sh > target_aspect:
        ch, cw = sh, round(sh * target_aspect)
    else:
        cw, ch = sw, round(sw / target_aspect)
    scale = rng.uniform(0.6, 1.0)
    # Never crop so tight that we would upscale by more than 1.5x.
    scale = max(scale, min(1.0, width / cw / 1.5))
    cw, ch = max(1, round(cw * scale)), max(1, round(ch * scale))
    x = rng.randint(0, sw - cw)
    y = rng.randint(0, sh - ch)
    box = (x, y, x + cw, y + ch)
    return src.resize((width, height), Image.Resampling.LANCZOS, box=box)


_INVERSE = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}


def _camera_exif(orientation: int | None) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "BenchCam"  # Make
    exif[0x0110] = "BC-24"  # Model
    exif[0x0131] = "pixelbatch bench"  # Software
    if orientation:
        exif[0x0112] = orientation
    return exif.tobytes()


def _icc_bytes(which: str) -> bytes:
    path = ADOBE_ICC if which == "adobe" else SRGB_ICC
    if path.exists():
        return path.read_bytes()
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _render(im: Image.Image, plan: Plan) -> bytes:
    if plan.icc == "adobe" and ADOBE_ICC.exists():
        # Store real AdobeRGB pixels, as a camera set to AdobeRGB would.
        im = ImageCms.profileToProfile(
            im,
            ImageCms.createProfile("sRGB"),
            ImageCms.ImageCmsProfile(str(ADOBE_ICC)),
            outputMode="RGB",
        )
    if plan.orientation:
        # Stored sideways; the tag says how to turn it upright.
        im = im.transpose(_INVERSE[plan.orientation])
    buf = io.BytesIO()
    params: dict[str, object] = {}
    if plan.icc:
        params["icc_profile"] = _icc_bytes(plan.icc)
    if plan.format == "jpeg":
        if plan.camera_exif or plan.orientation:
            params["exif"] = _camera_exif(plan.orientation)
        im.save(
            buf,
            "JPEG",
            quality=plan.quality,
            progressive=plan.progressive,
            subsampling=plan.subsampling,
            **params,
        )
    elif plan.format == "webp":
        im.save(buf, "WEBP", quality=plan.quality, method=4, **params)
    else:
        if plan.alpha:
            # A product cut-out: transparent surround, opaque ellipse in the middle.
            from PIL import ImageDraw, ImageFilter

            mask = Image.new("L", im.size, 0)
            w, h = im.size
            ImageDraw.Draw(mask).ellipse((w * 0.1, h * 0.1, w * 0.9, h * 0.9), fill=255)
            im = im.convert("RGBA")
            im.putalpha(mask.filter(ImageFilter.GaussianBlur(4)))
        im.save(buf, "PNG", compress_level=6, **params)
    return buf.getvalue()


def _synthetic_sources(n: int = 8) -> list[Image.Image]:
    from pixelbatch.demo.catalog import product_photo

    return [product_photo(100 + i, (1600, 1200)) for i in range(n)]


def build(kind: str, log: callable = print) -> Corpus:  # type: ignore[valid-type]
    """kind: ``full`` (photos, ~48 files), ``quick`` (photos, 8 small files) or
    ``synthetic`` (generated, 8 small files, nothing installed).

    Built in a directory of its own, then renamed into place: several benchmarks (the
    smoke tests, in parallel) may build the same corpus at once while another already
    serves it, and a directory emptied and refilled under a running image server answered
    404 for the files it had listed."""
    directory = CACHE / f"corpus-{kind}"
    cached = _cached(kind, directory)
    if cached is not None:
        return cached
    CACHE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".corpus-{kind}-", dir=CACHE))
    try:
        files = _write_corpus(kind, staging, log)
        if directory.exists():
            cached = _cached(kind, directory)
            if cached is not None:  # another build landed meanwhile: the same files
                return cached
            stale = Path(tempfile.mkdtemp(prefix=f".stale-{kind}-", dir=CACHE))
            directory.rename(stale / "corpus")  # an older version: out of the way first
            shutil.rmtree(stale, ignore_errors=True)
        try:
            staging.rename(directory)
        except OSError:
            cached = _cached(kind, directory)
            if cached is None:
                raise
            return cached  # another build landed between the check and the rename
        return Corpus(kind, directory, files)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already once renamed


def _cached(kind: str, directory: Path) -> Corpus | None:
    """The corpus already built in ``directory``, if it is complete and current."""
    manifest = directory / MANIFEST
    if not manifest.exists():
        return None
    meta = json.loads(manifest.read_text())
    if meta.get("version") != CORPUS_VERSION:
        return None
    files = [CorpusFile(**{**f, "groups": tuple(f["groups"])}) for f in meta["files"]]
    if not all((directory / f.name).exists() for f in files):
        return None
    return Corpus(kind, directory, files)


def _write_corpus(kind: str, directory: Path, log: callable) -> list[CorpusFile]:  # type: ignore[valid-type]
    """Render every file of the ``kind`` corpus into ``directory``, manifest last."""
    manifest = directory / MANIFEST
    if kind == "synthetic":
        images: list[Image.Image] | None = _synthetic_sources()
        source_names = [f"synthetic-{i}" for i in range(len(images))]
        plans = quick_plans(len(images))
        n_sources = len(images)
    else:
        paths = ensure_sources(log)
        images = None
        source_names = [p.name for p in paths]
        plans = full_plans(len(paths)) if kind == "full" else quick_plans(len(paths))
        n_sources = len(paths)
    groups: list[tuple[str, ...]] = [
        ("jpeg", "mixed") if p.format == "jpeg" else ("mixed",) for p in plans
    ]
    stand_ins = jpeg_stand_ins(plans)
    small = small_plans(n_sources, 48 if kind == "full" else 8)
    plans = plans + stand_ins + small
    groups += [("jpeg",)] * len(stand_ins) + [("small",)] * len(small)
    log(f"building the {kind} corpus ({len(plans)} files) in {directory} ...")

    rng = random.Random(7)
    opened: dict[int, Image.Image] = {}
    files: list[CorpusFile] = []
    for index, plan in enumerate(plans):
        if images is not None:
            src = images[plan.source]
        else:
            if plan.source not in opened:
                im = Image.open(paths[plan.source])
                opened[plan.source] = im.convert("RGB")
            src = opened[plan.source]
        cut = _cut(src, plan.width, plan.height, rng)
        data = _render(cut, plan)
        ext = {"jpeg": "jpg", "png": "png", "webp": "webp"}[plan.format]
        prefix = "s" if groups[index] == ("small",) else "p"
        name = f"{prefix}{index:02d}-{plan.width}x{plan.height}.{ext}"
        (directory / name).write_bytes(data)
        files.append(
            CorpusFile(
                name=name,
                format=plan.format,
                width=plan.width,
                height=plan.height,
                bytes=len(data),
                quality=plan.quality,
                orientation=plan.orientation,
                icc=plan.icc,
                source=source_names[plan.source],
                groups=groups[index],
            )
        )
    manifest.write_text(
        json.dumps(
            {"version": CORPUS_VERSION, "kind": kind, "files": [asdict(f) for f in files]},
            indent=1,
        )
    )
    return files


if __name__ == "__main__":
    import sys

    c = build(sys.argv[1] if len(sys.argv) > 1 else "full")
    print(json.dumps(c.summary(), indent=1))
    for f in c.files:
        print(
            f"{f.name:28s} {f.format:5s} {f.megapixels:5.1f} MP {f.bytes / 1e6:6.2f} MB "
            f"q={f.quality} orient={f.orientation} icc={f.icc} src={f.source}"
        )
