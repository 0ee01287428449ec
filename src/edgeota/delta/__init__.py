"""Delta updates for model files (safetensors, GGUF, ONNX) and any other file.

API::

    create_patch(old, new, patch, *, level=16) -> PatchInfo
    apply_patch(old, patch, out) -> None           # OUT byte-identical to NEW, or an error
    read_patch_info(patch) -> PatchInfo

How NEW is carried (``Method``):

- ``copy``: bytes taken from OLD (unchanged, renamed, moved or reshaped tensors; matched
  content-defined chunks of other files);
- ``inline``: bytes inside the compressed control stream (headers, metadata, framing);
- ``literal``: zstd, optionally with a window of OLD as raw-content dictionary;
- ``tensor-raw`` / ``tensor-xor`` / ``tensor-sub``: a tensor against an old tensor (see
  ``codecs``), byte-plane shuffled, zstd;
- ``lowrank``: a merged low-rank (LoRA) update: integer factors plus an exact residual
  (see ``lowrank``).

Patch format, version 1 (all integers little-endian)::

    offset  size  field
    0       8     magic  89 45 44 4C 54 41 0D 0A  ("\\x89EDLTA\\r\\n")
    8       2     format version (1)
    10      2     flags (0; any other value is refused)
    12      1     container of NEW: 0 generic, 1 safetensors, 2 gguf, 3 onnx (informational)
    13      3     zero
    16      8     OLD length          24  32  OLD sha256
    56      8     NEW length          64  32  NEW sha256
    96      4     D: dictionary range count (<= 65536)
    100     4     S: summary length
    104     8     C: control stream length
    112     8     P: data section length
    120     16*D  dictionary ranges (offset u64, length u64) into OLD, <= 16 MiB in total
    ...     C     control stream: one zstd frame, dictionary = the ranges' OLD bytes
    ...     P     data section: op payloads, in op order
    ...     S     summary: u8 n, then n x (method u8, count u64, NEW bytes u64, payload u64)
    ...     32    sha256 of every byte above

The file size must equal the sum of the parts. The control stream decompresses to ops, each
an op code byte and fixed fields (u64 unless noted), ending with END (0):

    1 COPY     old offset, length                          -> OLD[offset:offset+length]
    2 INLINE   length u32 (<= 1 MiB), then that many bytes -> the bytes
    3 LITERAL  ref offset, ref length u32 (<= 32 MiB), out length, payload length
               -> payload is one zstd frame; OLD[ref] (if any) is its raw dictionary
    4 TENSOR   codec u8 (0 raw, 1 xor, 2 sub), elem u8 (1/2/4/8), stride u32, block u32,
               ref offset, ref length, out length, payload length
               -> payload is one zstd frame holding the encoded blocks (``codecs``): the
                  first min(out, ref) bytes rounded down to the stride are XOR/SUB against
                  OLD[ref], the rest is raw; each block is byte-plane shuffled by stride
    5 LOWRANK  float kind u8 (1 f32, 2 f16, 3 bf16), rows u32, cols u32, rank u16,
               qbits u8, rows per block u32, ref offset, payload length
               -> payload is one zstd frame: Bq (rows x rank int32, shuffled), Aq (rank x
                  cols int32, shuffled), row exponents (int16), column exponents (int16),
                  then per block of rows the SUB residual (shuffled by element size) of
                  NEW's bits against round(OLD + 2**(row_exp + col_exp) * (Bq @ Aq)),
                  computed in float64 and narrowed as ``floats`` describes

Ops write NEW front to back; their lengths must add up to NEW's length exactly, their payloads
must use the data section exactly, and every range they name must lie inside OLD. Summary
method codes are those of ``Method`` (1 copy ... 7 lowrank). Apply checks the checksum and the
header first, then OLD's length and sha256, then each op against the limits in ``format`` as
it decodes it into a temporary file; the result is renamed over OUT only after NEW's length
and sha256 match, so on any failure OUT is untouched.
"""

from __future__ import annotations

from edgeota.delta.apply import apply_patch, read_patch_info
from edgeota.delta.create import DEFAULT_LEVEL, create_patch
from edgeota.delta.format import FORMAT_VERSION, Method, PatchInfo, SectionStats

__all__ = [
    "DEFAULT_LEVEL",
    "FORMAT_VERSION",
    "Method",
    "PatchInfo",
    "SectionStats",
    "apply_patch",
    "create_patch",
    "read_patch_info",
]
