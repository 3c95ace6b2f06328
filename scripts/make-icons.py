#!/usr/bin/env python3
"""Draws the app icon (a rounded tile with three rising bars) as RGBA PNGs in icons/.
Pure standard library, so it runs anywhere; rerun after changing the design."""
import os, struct, zlib

def png(path, size):
    def px(x, y):
        u, v = (x + 0.5) / size, (y + 0.5) / size
        # rounded square tile
        r, m = 0.2, 0.04
        cx, cy = min(max(u, m + r), 1 - m - r), min(max(v, m + r), 1 - m - r)
        d = ((u - cx) ** 2 + (v - cy) ** 2) ** 0.5 - r
        a = max(0.0, min(1.0, 0.5 - d * size))
        if a == 0:
            return (0, 0, 0, 0)
        t = v  # vertical gradient, indigo to teal
        base = (int(79 + (20 - 79) * t), int(70 + (184 - 70) * t), int(229 + (166 - 229) * t))
        # three white bars rising left to right
        for i, h in enumerate((0.30, 0.48, 0.66)):
            x0 = 0.24 + i * 0.19
            if x0 <= u <= x0 + 0.13 and 0.80 - h <= v <= 0.80:
                return (255, 255, 255, int(255 * a))
        return base + (int(255 * a),)
    rows = b"".join(b"\0" + b"".join(bytes(px(x, y)) for x in range(size)) for y in range(size))
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0))
    data += chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)

here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "icons")
for name, size in (("32x32.png", 32), ("128x128.png", 128), ("128x128@2x.png", 256), ("icon.png", 512)):
    png(os.path.join(here, name), size)
