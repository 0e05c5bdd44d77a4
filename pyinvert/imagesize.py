"""An image's width and height read from its file header, before anything is decoded.

:func:`header_size` knows the headers of every format OpenCV decodes here: PNG, JPEG, GIF,
BMP, WebP, TIFF (and BigTIFF), PBM/PGM/PPM/PAM, PFM, Sun raster, Radiance HDR, OpenEXR,
JPEG 2000 (JP2 and raw codestreams) and AVIF. :func:`pyinvert.io.load_image` uses it to refuse an
image over its pixel limit (a "decompression bomb": a few kilobytes that decode to gigabytes)
without allocating its pixels.
"""

import re
import struct
from typing import Optional, Tuple

Size = Tuple[int, int]  # (width, height)


def _png(d: bytes) -> Optional[Size]:
    if len(d) >= 24 and d[12:16] == b"IHDR":
        return struct.unpack(">II", d[16:24])
    return None


_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg(d: bytes) -> Optional[Size]:
    i = 2
    while i + 4 <= len(d):
        if d[i] != 0xFF:
            return None
        marker = d[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # no length
            i += 2
            continue
        (length,) = struct.unpack(">H", d[i + 2 : i + 4])
        if marker in _SOF and i + 9 <= len(d):
            h, w = struct.unpack(">HH", d[i + 5 : i + 9])
            return w, h
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        i += 2 + length
    return None


def _gif(d: bytes) -> Optional[Size]:
    return struct.unpack("<HH", d[6:10]) if len(d) >= 10 else None


def _bmp(d: bytes) -> Optional[Size]:
    if len(d) < 26:
        return None
    (dib,) = struct.unpack("<I", d[14:18])
    if dib == 12:
        return struct.unpack("<HH", d[18:22])
    w, h = struct.unpack("<ii", d[18:26])
    return abs(w), abs(h)


def _webp(d: bytes) -> Optional[Size]:
    kind = d[12:16]
    if kind == b"VP8 " and len(d) >= 30:
        w, h = struct.unpack("<HH", d[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if kind == b"VP8L" and len(d) >= 25:
        (bits,) = struct.unpack("<I", d[21:25])
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X" and len(d) >= 30:
        return (int.from_bytes(d[24:27], "little") + 1, int.from_bytes(d[27:30], "little") + 1)
    return None


def _tiff(d: bytes) -> Optional[Size]:
    end = "<" if d[:2] == b"II" else ">"
    (version,) = struct.unpack(end + "H", d[2:4])
    big = version == 43
    try:
        if big:
            (ifd,) = struct.unpack(end + "Q", d[8:16])
            (count,) = struct.unpack(end + "Q", d[ifd : ifd + 8])
            first, step = ifd + 8, 20
        else:
            (ifd,) = struct.unpack(end + "I", d[4:8])
            (count,) = struct.unpack(end + "H", d[ifd : ifd + 2])
            first, step = ifd + 2, 12
        found = {}
        for k in range(min(count, 4096)):
            e = first + k * step
            tag, typ = struct.unpack(end + "HH", d[e : e + 4])
            if tag in (256, 257):
                v = e + (12 if big else 8)
                fmt = {3: "H", 4: "I", 16: "Q"}.get(typ)
                if fmt is None:
                    return None
                (found[tag],) = struct.unpack(end + fmt, d[v : v + struct.calcsize(fmt)])
        if 256 in found and 257 in found:
            return found[256], found[257]
    except struct.error:
        return None
    return None


def _pnm(d: bytes) -> Optional[Size]:
    text = d[:4096]
    if text[:2] == b"P7":
        w = re.search(rb"\nWIDTH\s+(\d+)", text)
        h = re.search(rb"\nHEIGHT\s+(\d+)", text)
        return (int(w.group(1)), int(h.group(1))) if w and h else None
    body = re.sub(rb"#[^\n]*", b" ", text[2:])
    m = re.match(rb"\s*(\d+)\s+(\d+)", body)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _sun(d: bytes) -> Optional[Size]:
    return struct.unpack(">II", d[4:12]) if len(d) >= 12 else None


def _hdr(d: bytes) -> Optional[Size]:
    m = re.search(rb"\n\s*([-+])([YX])\s+(\d+)\s+([-+])([YX])\s+(\d+)", d[:65536])
    if not m or m.group(2) == m.group(5):
        return None
    a, b = int(m.group(3)), int(m.group(6))
    return (b, a) if m.group(2) == b"Y" else (a, b)


def _exr(d: bytes) -> Optional[Size]:
    i = d.find(b"dataWindow\x00box2i\x00")
    if i < 0 or len(d) < i + 37:
        return None
    x0, y0, x1, y1 = struct.unpack("<iiii", d[i + 21 : i + 37])
    return x1 - x0 + 1, y1 - y0 + 1


def _jp2(d: bytes) -> Optional[Size]:
    i = d.find(b"ihdr")
    if i < 0 or len(d) < i + 12:
        return None
    h, w = struct.unpack(">II", d[i + 4 : i + 12])
    return w, h


def _j2k(d: bytes) -> Optional[Size]:
    if len(d) < 24 or d[2:4] != b"\xff\x51":
        return None
    xs, ys, xo, yo = struct.unpack(">IIII", d[8:24])
    return xs - xo, ys - yo


def _avif(d: bytes) -> Optional[Size]:
    best = None
    for m in re.finditer(rb"ispe", d[: 1 << 20]):
        i = m.start()
        if len(d) >= i + 16:
            w, h = struct.unpack(">II", d[i + 8 : i + 16])
            if best is None or w * h > best[0] * best[1]:
                best = (w, h)
    return best


_FORMATS = (
    (lambda d: d[:8] == b"\x89PNG\r\n\x1a\n", "PNG", _png),
    (lambda d: d[:2] == b"\xff\xd8", "JPEG", _jpeg),
    (lambda d: d[:6] in (b"GIF87a", b"GIF89a"), "GIF", _gif),
    (lambda d: d[:2] == b"BM", "BMP", _bmp),
    (lambda d: d[:4] == b"RIFF" and d[8:12] == b"WEBP", "WebP", _webp),
    (lambda d: d[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), "TIFF", _tiff),
    (lambda d: re.match(rb"P[1-7]\s", d[:3]) is not None, "PNM", _pnm),
    (lambda d: d[:3] in (b"PF\n", b"Pf\n", b"PF\r", b"Pf\r", b"PF ", b"Pf "), "PFM", _pnm),
    (lambda d: d[:4] == b"\x59\xa6\x6a\x95", "Sun raster", _sun),
    (lambda d: d[:2] == b"#?", "Radiance HDR", _hdr),
    (lambda d: d[:4] == b"\x76\x2f\x31\x01", "OpenEXR", _exr),
    (lambda d: d[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000", _jp2),
    (lambda d: d[:2] == b"\xff\x4f", "JPEG 2000 codestream", _j2k),
    (
        lambda d: d[4:8] == b"ftyp" and d[8:12] in (b"avif", b"avis", b"mif1", b"msf1"),
        "AVIF",
        _avif,
    ),
)


def header_size(data: bytes) -> Tuple[Optional[str], Optional[Size]]:
    """(format name, (width, height)) read from the start of an image file's bytes.

    Args:
        data: the file's first bytes (the whole file for a JPEG with large metadata).

    Returns:
        (None, None) for a format not recognized; (name, None) for a recognized format whose
        header is cut short or malformed.

    Example:
        >>> import struct, zlib
        >>> ihdr = struct.pack(">II5B", 640, 480, 8, 2, 0, 0, 0)
        >>> png = b"\\x89PNG\\r\\n\\x1a\\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
        >>> header_size(png)
        ('PNG', (640, 480))
    """
    head = bytes(data[:16])
    for test, name, read in _FORMATS:
        if test(head):
            try:
                return name, read(data)
            except (struct.error, ValueError, IndexError):
                return name, None
    return None, None


__all__ = ["header_size"]
