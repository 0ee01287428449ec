"""The patch file layout: header, dictionary ranges, method summary, and the reader's limits.

Everything here is pure: it packs and unpacks bytes and raises ``FormatError`` on anything a
well-formed patch cannot contain. Op records are in ``ops``; the whole layout is described in
the package docstring.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from edgeota.errors import FormatError

MAGIC = b"\x89EDLTA\r\n"
FORMAT_VERSION = 1
DIGEST_SIZE = 32  # sha256

# magic, version, flags, container, 3 pad, old size, old sha256, new size, new sha256,
# dict range count, summary length, control length, data length
_HEADER = struct.Struct("<8sHHB3xQ32sQ32sIIQQ")
HEADER_SIZE = _HEADER.size
_RANGE = struct.Struct("<QQ")
RANGE_SIZE = _RANGE.size
_SUMMARY_ENTRY = struct.Struct("<BQQQ")

# Limits a reader enforces before it allocates anything a patch asks for. They bound memory
# during apply independently of what an untrusted header claims.
MAX_DICT_RANGES = 1 << 16
MAX_DICT_BYTES = 16 << 20  # old bytes loaded as the control stream's dictionary
MAX_INLINE = 1 << 20  # bytes carried by one inline op
MAX_REF = 32 << 20  # old bytes loaded as one literal's dictionary
MAX_BLOCK = 16 << 20  # one tensor block, the unit apply decodes at a time
MAX_STRIDE = 4096  # widest element or quantization block that is byte-plane shuffled
MAX_WINDOW = 1 << 26  # zstd window a frame may demand from the decoder
MAX_RANK = 1024
MAX_FACTOR_ELEMENTS = 1 << 22  # (rows + cols) * rank of a low-rank op
MAX_ROW_BLOCK_ELEMENTS = 1 << 20  # rows_per_block * cols of a low-rank op (float64 work area)
MAX_QBITS = 26
MAX_EXPONENT = 1200  # power-of-two scales of low-rank factors
MAX_SUMMARY_ENTRIES = 32


class Container(IntEnum):
    """The file format NEW was recognised as (informational; apply does not depend on it)."""

    GENERIC = 0
    SAFETENSORS = 1
    GGUF = 2
    ONNX = 3


class Method(IntEnum):
    """How a section of NEW is carried; also the keys of the summary."""

    COPY = 1
    INLINE = 2
    LITERAL = 3
    TENSOR_RAW = 4
    TENSOR_XOR = 5
    TENSOR_SUB = 6
    LOWRANK = 7


METHOD_NAMES = {
    Method.COPY: "copy",
    Method.INLINE: "inline",
    Method.LITERAL: "literal",
    Method.TENSOR_RAW: "tensor-raw",
    Method.TENSOR_XOR: "tensor-xor",
    Method.TENSOR_SUB: "tensor-sub",
    Method.LOWRANK: "lowrank",
}


class Codec(IntEnum):
    """Transform of a tensor region against its reference before byte-plane shuffle + zstd."""

    RAW = 0  # no reference: the bytes themselves
    XOR = 1  # new ^ old, as little-endian unsigned integers of `elem` bytes
    SUB = 2  # zigzag(new - old mod 2**bits): small moves of the bit pattern give small numbers


class FloatKind(IntEnum):
    F32 = 1
    F16 = 2
    BF16 = 3

    @property
    def itemsize(self) -> int:
        return 4 if self is FloatKind.F32 else 2


@dataclass(frozen=True)
class PatchHeader:
    container: Container
    old_size: int
    old_sha256: bytes
    new_size: int
    new_sha256: bytes
    dict_ranges: int
    summary_length: int
    control_length: int
    data_length: int
    version: int = FORMAT_VERSION

    def pack(self) -> bytes:
        return _HEADER.pack(
            MAGIC,
            self.version,
            0,
            self.container,
            self.old_size,
            self.old_sha256,
            self.new_size,
            self.new_sha256,
            self.dict_ranges,
            self.summary_length,
            self.control_length,
            self.data_length,
        )

    @property
    def dict_offset(self) -> int:
        return HEADER_SIZE

    @property
    def control_offset(self) -> int:
        return HEADER_SIZE + self.dict_ranges * RANGE_SIZE

    @property
    def data_offset(self) -> int:
        return self.control_offset + self.control_length

    @property
    def summary_offset(self) -> int:
        return self.data_offset + self.data_length

    @property
    def total_size(self) -> int:
        return self.summary_offset + self.summary_length + DIGEST_SIZE


def unpack_header(raw: bytes, patch_size: int) -> PatchHeader:
    """Parse and check the fixed header of a patch of ``patch_size`` bytes."""
    if len(raw) < HEADER_SIZE:
        raise FormatError(
            f"patch is {patch_size} bytes, shorter than the {HEADER_SIZE}-byte header: "
            "truncated or not an edgeota patch"
        )
    fields = _HEADER.unpack(raw[:HEADER_SIZE])
    magic, version, flags, container = fields[:4]
    if magic != MAGIC:
        raise FormatError("not an edgeota delta patch (bad magic)")
    if version != FORMAT_VERSION:
        raise FormatError(
            f"patch format version {version} is not supported (this build reads "
            f"{FORMAT_VERSION}): upgrade edgeota or rebuild the patch"
        )
    if flags:
        raise FormatError(f"patch sets unknown flags {flags:#x}")
    try:
        container_v = Container(container)
    except ValueError as e:
        raise FormatError(f"unknown container code {container}") from e
    header = PatchHeader(container_v, *fields[4:])
    if header.dict_ranges > MAX_DICT_RANGES:
        raise FormatError(f"{header.dict_ranges} dictionary ranges exceed {MAX_DICT_RANGES}")
    if header.summary_length > 1 + MAX_SUMMARY_ENTRIES * _SUMMARY_ENTRY.size:
        raise FormatError(f"summary of {header.summary_length} bytes is too long")
    # Each length is bounded by the file size before they are summed, so a huge claimed length
    # cannot pass as a wrapped-around small one.
    if header.control_length > patch_size or header.data_length > patch_size:
        raise FormatError("section lengths exceed the patch size: truncated or corrupt")
    if header.total_size != patch_size:
        raise FormatError(
            f"patch is {patch_size} bytes but its header describes {header.total_size}: "
            "truncated or corrupt"
        )
    return header


def pack_ranges(ranges: list[tuple[int, int]]) -> bytes:
    return b"".join(_RANGE.pack(o, n) for o, n in ranges)


def unpack_ranges(raw: bytes, old_size: int) -> list[tuple[int, int]]:
    ranges = [(int(o), int(n)) for o, n in _RANGE.iter_unpack(raw)]
    total = 0
    for offset, length in ranges:
        if offset > old_size or length > old_size - offset:
            raise FormatError(f"dictionary range {offset}+{length} lies outside the old file")
        total += length
    if total > MAX_DICT_BYTES:
        raise FormatError(f"dictionary of {total} bytes exceeds {MAX_DICT_BYTES}")
    return ranges


@dataclass(frozen=True)
class SectionStats:
    """How much of NEW one method carries, and what it costs in the patch."""

    method: Method
    count: int
    new_bytes: int
    patch_bytes: int

    @property
    def name(self) -> str:
        return METHOD_NAMES[self.method]


def pack_summary(stats: list[SectionStats]) -> bytes:
    entries = [s for s in stats if s.count]
    out = bytes([len(entries)])
    for s in entries:
        out += _SUMMARY_ENTRY.pack(s.method, s.count, s.new_bytes, s.patch_bytes)
    return out


def unpack_summary(raw: bytes) -> list[SectionStats]:
    if not raw or len(raw) != 1 + raw[0] * _SUMMARY_ENTRY.size:
        raise FormatError("malformed method summary")
    out = []
    for method, count, new_bytes, patch_bytes in _SUMMARY_ENTRY.iter_unpack(raw[1:]):
        try:
            m = Method(method)
        except ValueError as e:
            raise FormatError(f"unknown method {method} in summary") from e
        out.append(SectionStats(m, count, new_bytes, patch_bytes))
    return out


@dataclass(frozen=True)
class PatchInfo:
    """What a patch says about itself (read without applying it)."""

    format_version: int
    container: str
    old_size: int
    old_sha256: str
    new_size: int
    new_sha256: str
    patch_size: int
    control_size: int
    sections: tuple[SectionStats, ...] = field(default_factory=tuple)

    @property
    def ratio(self) -> float:
        """Patch size as a fraction of NEW (0 for an empty NEW)."""
        return self.patch_size / self.new_size if self.new_size else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "container": self.container,
            "old_size": self.old_size,
            "old_sha256": self.old_sha256,
            "new_size": self.new_size,
            "new_sha256": self.new_sha256,
            "patch_size": self.patch_size,
            "control_size": self.control_size,
            "ratio": self.ratio,
            "sections": [
                {
                    "method": s.name,
                    "count": s.count,
                    "new_bytes": s.new_bytes,
                    "patch_bytes": s.patch_bytes,
                }
                for s in self.sections
            ],
        }


def info_from_header(header: PatchHeader, summary: list[SectionStats]) -> PatchInfo:
    return PatchInfo(
        format_version=header.version,
        container=header.container.name.lower(),
        old_size=header.old_size,
        old_sha256=header.old_sha256.hex(),
        new_size=header.new_size,
        new_sha256=header.new_sha256.hex(),
        patch_size=header.total_size,
        control_size=header.control_length,
        sections=tuple(summary),
    )
