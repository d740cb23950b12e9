"""Fast, deterministic gzip for volumes: one independent deflate block sequence per z-slice.

Each slice is compressed by a fresh raw-deflate compressor ending in a full flush, so the pieces
can be concatenated into one valid gzip member (the technique pigz uses); slices can therefore be
compressed in parallel threads, and an all-zero slice (most slices of an organ mask) reuses one
cached compressed block. The gzip header has ``mtime=0`` and no file name: the bytes depend only on
the data. Any gzip reader (nibabel, ITK, gunzip) decompresses the result.
"""
from __future__ import annotations

import functools
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

GZIP_HEADER = b"\x1f\x8b\x08\x00" + b"\x00\x00\x00\x00" + b"\x00\xff"   # deflate, no flags, mtime 0, OS unknown
LEVEL = 1


def _deflate_piece(data) -> bytes:
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)


@functools.lru_cache(maxsize=8)
def _zero_piece(nbytes: int) -> bytes:
    return _deflate_piece(bytes(nbytes))


def _final_block() -> bytes:
    return zlib.compressobj(LEVEL, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)


def gzip_volume(header: bytes, volume_zyx: np.ndarray, pool: ThreadPoolExecutor | None = None) -> bytes:
    """gzip(``header`` + bytes of ``volume_zyx``), compressing each z-slice independently.

    Args:
        header: bytes written first (e.g. the NIfTI header).
        volume_zyx: C-contiguous array whose first axis is the slowest in the file (NIfTI z).
        pool: optional thread pool to compress slices in parallel.
    """
    volume_zyx = np.ascontiguousarray(volume_zyx)
    raw = volume_zyx.view(np.uint8).reshape(volume_zyx.shape[0], -1)
    occupied = raw.any(axis=1)
    zero = _zero_piece(raw.shape[1])

    def piece(k: int) -> bytes:
        return _deflate_piece(memoryview(raw[k])) if occupied[k] else zero

    indices = range(raw.shape[0])
    pieces = list(pool.map(piece, indices)) if pool is not None else [piece(k) for k in indices]
    crc = zlib.crc32(memoryview(raw.reshape(-1)), zlib.crc32(header))
    size = (len(header) + raw.size) & 0xFFFFFFFF
    return b"".join([GZIP_HEADER, _deflate_piece(header), *pieces, _final_block(), struct.pack("<II", crc, size)])
