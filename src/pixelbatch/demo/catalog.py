"""The example catalog: product photos drawn on the fly, so nothing large ships in the repo."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from pixelbatch.demo.server import ImageServer, Route

PRODUCTS = [
    ("SKU-1001", "Trail Running Shoe", "Footwear"),
    ("SKU-1002", "Canvas Backpack 20L", "Bags"),
    ("SKU-1003", "Ceramic Coffee Mug", "Kitchen"),
    ("SKU-1004", "Wool Beanie", "Accessories"),
    ("SKU-1005", 'Desk Lamp, "Aurora"', "Home"),
    ("SKU-1006", "Stainless Water Bottle", "Outdoor"),
    ("SKU-1007", "Linen Shirt", "Apparel"),
    ("SKU-1008", "Bluetooth Speaker", "Electronics"),
]


def product_photo(seed: int, size: tuple[int, int]) -> Image.Image:
    """A photo-like picture: smooth gradient background, soft shapes, a little noise."""
    rng = random.Random(seed)
    width, height = size
    top = tuple(rng.randint(150, 255) for _ in range(3))
    bottom = tuple(rng.randint(40, 160) for _ in range(3))
    gradient = Image.linear_gradient("L").resize(size)
    im = Image.composite(Image.new("RGB", size, bottom), Image.new("RGB", size, top), gradient)
    draw = ImageDraw.Draw(im)
    for _ in range(6):
        x, y = rng.randint(0, width), rng.randint(0, height)
        r = rng.randint(min(size) // 10, min(size) // 3)
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    im = im.filter(ImageFilter.GaussianBlur(radius=max(1, min(size) // 200)))
    noise = Image.effect_noise(size, 12).convert("RGB")
    return Image.blend(im, noise, 0.08)


def encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def serve_catalog(server: ImageServer) -> list[tuple[str, str, str, list[str]]]:
    """Register the demo images on ``server``; returns (serial, name, category, urls) rows."""
    rows = []
    for index, (serial, name, category) in enumerate(PRODUCTS):
        urls = []
        for view in range(3):
            seed = index * 10 + view
            size = (1600 - 200 * view, 1200 + 100 * view)
            photo = product_photo(seed, size)
            if view == 2 and index % 3 == 0:
                rgba = photo.convert("RGBA")
                rgba.putalpha(Image.linear_gradient("L").resize(size))
                body, ext, ctype = encode(rgba, "PNG"), "png", "image/png"
            elif view == 2 and index % 3 == 1:
                body, ext, ctype = encode(photo, "WEBP", quality=90), "webp", "image/webp"
            else:
                body, ext, ctype = encode(photo, "JPEG", quality=90), "jpg", "image/jpeg"
            path = f"/images/{serial.lower()}-{view + 1}.{ext}"
            urls.append(server.add(path, Route(body, ctype)))
        rows.append((serial, name, category, urls))
    return rows


def write_catalog_csv(path: Path, rows: list[tuple[str, str, str, list[str]]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["S. No.", "Product Name", "Input Image Urls", "Category"])
        for serial, name, category, urls in rows:
            writer.writerow([serial, name, ",".join(urls), category])
