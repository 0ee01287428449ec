"""zstd settings shared by create and apply, and bounded reading of patch sections."""

from __future__ import annotations

import io
from typing import IO, BinaryIO, Protocol, cast

import zstandard

from edgeota.delta.format import MAX_WINDOW
from edgeota.errors import FormatError

# Frames are made with at most this window so that apply's decoder memory stays small; the
# decoder accepts up to MAX_WINDOW to leave room for literal frames whose window must also
# span their reference dictionary.
_DEFAULT_MAX_WINDOW_LOG = 24


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def compressor(
    level: int, size: int, dict_data: bytes | None = None, *, threads: int = 0
) -> zstandard.ZstdCompressor:
    """A compressor for one frame of ``size`` bytes, optionally against raw ``dict_data``.

    With a dictionary the window and match tables are sized to cover dictionary plus input:
    zstd's defaults for small levels would otherwise forget most of a multi-megabyte
    dictionary and find nothing to reference.
    """
    base = zstandard.ZstdCompressionParameters.from_level(level, source_size=max(size, 1))
    window_log = min(base.window_log, _DEFAULT_MAX_WINDOW_LOG)
    zdict = None
    overrides: dict[str, int] = {}
    if dict_data:
        span = len(dict_data) + size
        window_log = max(window_log, min(span.bit_length(), MAX_WINDOW.bit_length() - 1))
        overrides["hash_log"] = max(base.hash_log, min(window_log, 24))
        overrides["chain_log"] = max(base.chain_log, min(window_log, 24))
        zdict = zstandard.ZstdCompressionDict(dict_data, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    params = zstandard.ZstdCompressionParameters.from_level(
        level,
        source_size=max(size, 1),
        window_log=max(window_log, 10),
        threads=threads,
        write_content_size=1,
        write_checksum=0,
        **overrides,
    )
    if zdict is None:
        return zstandard.ZstdCompressor(compression_params=params)
    return zstandard.ZstdCompressor(compression_params=params, dict_data=zdict)


def decompressor(dict_data: bytes | None = None) -> zstandard.ZstdDecompressor:
    if dict_data:
        zdict = zstandard.ZstdCompressionDict(dict_data, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
        return zstandard.ZstdDecompressor(dict_data=zdict, max_window_size=MAX_WINDOW)
    return zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)


def open_frame(source: BoundedReader, dict_data: bytes | None = None) -> Readable:
    """A reader of the one zstd frame in ``source`` (it stops at the frame's end)."""
    # zstandard's stubs ask for IO[bytes]; a RawIOBase with readinto is what it really reads.
    src = cast("IO[bytes]", source)
    reader: Readable = decompressor(dict_data).stream_reader(src, read_across_frames=False)
    return reader


def compress(data: bytes | memoryview, level: int, dict_data: bytes | None = None) -> bytes:
    return compressor(level, len(data), dict_data).compress(data)


class BoundedReader(io.RawIOBase):
    """Reads at most ``length`` bytes of ``f`` starting at ``offset`` (positioned reads)."""

    def __init__(self, f: BinaryIO, offset: int, length: int) -> None:
        super().__init__()
        self._f = f
        self._pos = offset
        self._end = offset + length

    def readable(self) -> bool:
        return True

    @property
    def remaining(self) -> int:
        return self._end - self._pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._end - self._pos)
        if n <= 0:
            return 0
        self._f.seek(self._pos)
        data = self._f.read(n)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def read_exact(reader: Readable, size: int, what: str) -> bytes:
    """Read exactly ``size`` bytes or raise FormatError naming ``what`` was cut short."""
    parts: list[bytes] = []
    left = size
    try:
        while left:
            chunk = reader.read(min(left, 1 << 20))
            if not chunk:
                break
            parts.append(chunk)
            left -= len(chunk)
    except zstandard.ZstdError as e:
        raise FormatError(f"corrupt compressed data in {what}: {e}") from e
    if left:
        raise FormatError(f"{what} ends {left} bytes early: the patch is truncated or corrupt")
    if len(parts) == 1:
        return parts[0]
    return b"".join(parts)


def expect_end(reader: Readable, what: str) -> None:
    """Check that a compressed stream has nothing after what its op declared."""
    try:
        extra = reader.read(1)
    except zstandard.ZstdError as e:
        raise FormatError(f"corrupt compressed data in {what}: {e}") from e
    if extra:
        raise FormatError(f"{what} holds more data than its op declares")
