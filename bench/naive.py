"""The naive baseline, as the common implementations do it: one process, one URL after the
other with urllib, open with Pillow, save at quality 50. No orientation, no colour
management, no metadata stripping, no limits.

Usage: python -m bench.naive URLFILE OUTDIR  → prints {"seconds": s, "images": n, "failed": n}
"""

from __future__ import annotations

import io
import json
import sys
import time
import urllib.request
from pathlib import Path

from PIL import Image


def main() -> None:
    urls = Path(sys.argv[1]).read_text().split()
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    started = time.perf_counter()
    for index, url in enumerate(urls):
        try:
            with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310
                data = response.read()
            im = Image.open(io.BytesIO(data))
            fmt = im.format or "JPEG"
            im.save(out / f"{index}.{fmt.lower()}", format=fmt, quality=50)
        except Exception as exc:  # count, keep going
            failed += 1
            print(f"{url}: {exc}", file=sys.stderr)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "images": len(urls), "failed": failed}))


if __name__ == "__main__":
    main()
