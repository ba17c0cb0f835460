"""A streaming PNG writer: RGB rows in, band by band, with memory that does not grow with the image.

Pillow encodes a whole image held in memory; a 16384x4096 panorama would need 200 MB as
uint8 before the first byte is written. PNG itself streams well: the pixel data is one
zlib stream split into IDAT chunks, so each band of rows is filtered, fed to a
`zlib.compressobj` and its output written as it comes. Rows use PNG filter type 2 ("Up":
each byte minus the byte above it), which is vectorised over a whole band and compresses
smooth generated images well. The file is plain 8-bit RGB PNG that any reader opens.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
FILTER_UP = 2
CHUNK_BYTES = 1 << 20  # IDAT payloads are flushed at about this size
COMPRESS_LEVEL = 6  # zlib's default, as Pillow's


def write_chunk(file: BinaryIO, kind: bytes, data: bytes) -> None:
    file.write(struct.pack(">I", len(data)) + kind + data)
    file.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind))))


class PngStream:
    """Write an RGB image of known size to an open binary file, rows top to bottom."""

    def __init__(self, file: BinaryIO, width: int, height: int, level: int = COMPRESS_LEVEL):
        self.file = file
        self.width, self.height = width, height
        self.rows_written = 0
        self.previous = np.zeros((1, width, 3), np.uint8)  # the row above the first row is zeros
        self.compressor = zlib.compressobj(level)
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        file.write(SIGNATURE)
        # width, height, bit depth 8, colour type 2 (RGB), deflate, adaptive filtering, no interlace
        write_chunk(file, b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))

    def write(self, rows: np.ndarray) -> None:
        """Append rows: [h, width, 3] uint8."""
        if rows.dtype != np.uint8 or rows.ndim != 3 or rows.shape[1:] != (self.width, 3):
            raise ValueError(f"rows must be uint8 [h, {self.width}, 3], not {rows.dtype} {list(rows.shape)}")
        if self.rows_written + len(rows) > self.height:
            raise ValueError(f"more than {self.height} rows written")
        above = np.concatenate([self.previous, rows[:-1]])  # (h, W, 3)
        filtered = np.empty((len(rows), 1 + 3 * self.width), np.uint8)  # filter byte + row
        filtered[:, 0] = FILTER_UP
        np.subtract(rows, above, out=filtered[:, 1:].reshape(rows.shape))  # wraps modulo 256 as PNG wants
        self.feed(self.compressor.compress(filtered.tobytes()))
        self.previous = rows[-1:].copy()
        self.rows_written += len(rows)

    def feed(self, data: bytes) -> None:
        self.pending.append(data)
        self.pending_bytes += len(data)
        if self.pending_bytes >= CHUNK_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.pending_bytes:
            write_chunk(self.file, b"IDAT", b"".join(self.pending))
        self.pending, self.pending_bytes = [], 0

    def close(self) -> None:
        """Finish the image; every row must have been written."""
        if self.rows_written != self.height:
            raise ValueError(f"{self.rows_written} of {self.height} rows written")
        self.feed(self.compressor.flush())
        self.flush()
        write_chunk(self.file, b"IEND", b"")
