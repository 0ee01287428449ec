"""Turn a container image archive into a release folder whose files are one target per layer.

``podman save`` / ``docker save`` write a *docker-archive* (``manifest.json``, the image
config, one file per layer) or an *oci-archive* (``oci-layout``, ``index.json``,
``blobs/sha256/<hex>``; layers usually gzip-compressed). :func:`convert_image_archive` reads
either, one tar member at a time (layers are streamed, never held in memory), and writes::

    release.json                  schema 1: the files below, needs, hardware
    container.json                role "container": the operator's settings, byte for byte
    image/manifest.json           role "image": [{"Config", "RepoTags", "Layers"}]
    image/<config-sha256>.json    role "file": the image config, unchanged (= the image ID)
    image/<layer-sha256>.tar      role "layer": each layer blob, byte for byte

so that ``image/`` is itself a docker-archive (``tar -C image -c . | podman load`` gives the
original image ID) and a layer's target hash is its blob's sha256: a device that has the blob
already does not download it again. Layers stay as stored (an oci-archive's gzip blobs stay
gzip): ``podman load`` accepts compressed layer files in a docker-archive (checked with
podman 4.3), and recompressing would change the hashes the device caches by. Each layer's
uncompressed sha256 is checked against the config's ``rootfs.diff_ids``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import secrets
import shutil
import tarfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import zstandard

from edgeota.containerspec import IMAGE_DIR, IMAGE_MANIFEST, SPEC_FILE, parse_spec
from edgeota.errors import FormatError
from edgeota.fsutil import fsync_dir

OCI_LAYOUT = "oci-layout"
_CHUNK = 1 << 20
_MAX_JSON_BYTES = 16 << 20  # manifests, index and config are small; refuse anything huge
_HINT = "give the file that `podman save --format docker-archive` (or oci-archive) writes"
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
_BLOB_NAME = re.compile(r"^blobs/sha256/([0-9a-f]{64})$")


@dataclass(frozen=True)
class Layer:
    sha256: str  # of the blob as stored (the target hash)
    length: int
    diff_id: str  # sha256 of the uncompressed tar, from the image config

    @property
    def file(self) -> str:
        return f"{IMAGE_DIR}/{self.sha256}.tar"


@dataclass(frozen=True)
class ConvertedImage:
    """What :func:`convert_image_archive` wrote."""

    folder: Path
    archive_format: str  # "docker-archive" or "oci-archive"
    config_sha256: str  # the image ID
    repo_tags: tuple[str, ...]
    layers: tuple[Layer, ...]  # in image order; a repeated layer appears twice

    @property
    def layer_bytes(self) -> int:
        """Bytes of the distinct layer files."""
        return sum({layer.sha256: layer.length for layer in self.layers}.values())


@dataclass(frozen=True)
class _Plan:
    """Where the parts of the one image are inside the archive."""

    archive_format: str
    config: str
    layers: tuple[str, ...]
    tags: tuple[str, ...]
    digests: Mapping[str, str]  # member -> sha256 its name promises (oci-archive)


def is_image_archive(path: Path) -> bool:
    """Whether ``path`` is a tar with ``manifest.json`` or ``oci-layout`` at its top level.

    Reads tar headers only (a plain tar is not read past the member found).
    """
    if not path.is_file():
        return False
    try:
        with tarfile.open(path, "r:*") as tar:
            return any(_name(m) in (IMAGE_MANIFEST, OCI_LAYOUT) for m in tar)
    except (tarfile.TarError, OSError, EOFError, zlib.error):
        return False


def convert_image_archive(
    archive: Path,
    settings: Path,
    out: Path,
    *,
    needs: Mapping[str, str] | None = None,
    hardware: Sequence[str] = ("*",),
) -> ConvertedImage:
    """Write the release folder ``out`` (which must not exist) for the image in ``archive``.

    ``settings`` is the operator's ``container.json``, checked with ``parse_spec``. Everything
    is written to a temp folder beside ``out`` and renamed into place at the end, so an error
    leaves no folder behind. Raises FormatError on a bad archive or settings file.
    """
    if out.exists() or out.is_symlink():
        raise FileExistsError(f"{out} exists already; give a new folder to write the release to")
    settings_bytes = _read_settings(settings)
    tmp = out.parent / f".{out.name}.{secrets.token_hex(4)}.tmp"
    tmp.mkdir()  # not mkdtemp: the folder gets the usual permissions, not 0700
    try:
        image = _write_image(archive, tmp / IMAGE_DIR)
        _write(tmp / SPEC_FILE, settings_bytes)
        _write(tmp / "release.json", _release_json(image, needs, hardware))
        tmp.rename(out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dataclasses.replace(image, folder=out)


def _write_image(archive: Path, folder: Path) -> ConvertedImage:
    """Write ``folder`` as a docker-archive of the one image in ``archive``."""
    folder.mkdir()
    with _open_tar(archive) as tar:
        members = {_name(m): m for m in tar.getmembers()}
        plan = _plan(archive, members, tar)
        config = _read_json_bytes(tar, members, plan.config, archive)
        config_sha = hashlib.sha256(config).hexdigest()
        _check_promised(plan, plan.config, config_sha, archive)
        diff_ids = _diff_ids(config, archive)
        if len(diff_ids) != len(plan.layers):
            raise FormatError(
                f"{archive}: the image config lists {len(diff_ids)} layers (rootfs.diff_ids) "
                f"but the manifest {len(plan.layers)}; the archive is inconsistent, save "
                "the image again"
            )
        layers = tuple(
            _copy_layer(tar, members, plan, i, diff_ids[i], folder, archive)
            for i in range(len(plan.layers))
        )
    _write(folder / f"{config_sha}.json", config)
    manifest = [
        {
            "Config": f"{config_sha}.json",
            "RepoTags": list(plan.tags),
            "Layers": [f"{layer.sha256}.tar" for layer in layers],
        }
    ]
    _write(folder / IMAGE_MANIFEST, json.dumps(manifest).encode())
    fsync_dir(folder)
    return ConvertedImage(folder, plan.archive_format, config_sha, plan.tags, layers)


def _read_settings(settings: Path) -> bytes:
    try:
        with settings.open("rb") as f:
            raw = _read_capped(f)
    except OSError as e:
        raise FormatError(
            f"cannot read the container settings {settings}: {e.strerror}; give the "
            f"{SPEC_FILE} that says how the image runs (see docs/containers.md)"
        ) from e
    if len(raw) > _MAX_JSON_BYTES:
        raise FormatError(f"{settings} is larger than {_MAX_JSON_BYTES} bytes; not a {SPEC_FILE}")
    parse_spec(raw, where=str(settings))
    return raw


def _release_json(
    image: ConvertedImage, needs: Mapping[str, str] | None, hardware: Sequence[str]
) -> bytes:
    files: list[dict[str, str]] = [
        {"path": SPEC_FILE, "role": "container"},
        {"path": f"{IMAGE_DIR}/{IMAGE_MANIFEST}", "role": "image"},
        {"path": f"{IMAGE_DIR}/{image.config_sha256}.json", "role": "file"},
    ]
    for file in dict.fromkeys(layer.file for layer in image.layers):
        files.append({"path": file, "role": "layer"})
    body = {"schema": 1, "hardware": list(hardware), "needs": dict(needs or {}), "files": files}
    return json.dumps(body, indent=2).encode()


# -- reading the archive -------------------------------------------------------------------


def _name(member: tarfile.TarInfo) -> str:
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    return name


def _open_tar(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, "r:*")
    except FileNotFoundError as e:
        raise FormatError(f"{archive} does not exist; {_HINT}") from e
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise FormatError(f"{archive} is not a tar archive; {_HINT}") from e


@contextlib.contextmanager
def _member(
    tar: tarfile.TarFile, members: Mapping[str, tarfile.TarInfo], name: str, what: str, where: Path
) -> Iterator[IO[bytes]]:
    """The member ``name`` opened for reading (links followed); FormatError when missing."""
    info = members.get(name)
    stream = None
    if info is not None:
        with contextlib.suppress(KeyError):  # a link to a member that is not there
            stream = tar.extractfile(info)
    if stream is None:
        raise FormatError(
            f"{where}: {what} {name!r} is listed but missing from the archive; the archive is "
            "incomplete or damaged, save the image again"
        )
    with stream:
        yield stream


def _read_json_bytes(
    tar: tarfile.TarFile, members: Mapping[str, tarfile.TarInfo], name: str, where: Path
) -> bytes:
    with _member(tar, members, name, "file", where) as stream:
        raw = _read_capped(stream)
    if len(raw) > _MAX_JSON_BYTES:
        raise FormatError(f"{where}: {name} is larger than {_MAX_JSON_BYTES} bytes; not metadata")
    return raw


def _read_json(
    tar: tarfile.TarFile, members: Mapping[str, tarfile.TarInfo], name: str, where: Path
) -> Any:
    raw = _read_json_bytes(tar, members, name, where)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise FormatError(f"{where}: {name} is not valid JSON: {e}") from e


def _plan(archive: Path, members: Mapping[str, tarfile.TarInfo], tar: tarfile.TarFile) -> _Plan:
    # docker >= 25 writes both layouts; manifest.json then points into blobs/.
    if IMAGE_MANIFEST in members:
        return _plan_docker(archive, _read_json(tar, members, IMAGE_MANIFEST, archive))
    if OCI_LAYOUT in members:
        return _plan_oci(archive, members, tar)
    raise FormatError(
        f"{archive} is a tar but holds neither manifest.json (docker-archive) nor oci-layout "
        f"(oci-archive) at its top level; {_HINT}"
    )


def _plan_docker(archive: Path, body: Any) -> _Plan:
    if not isinstance(body, list) or not body or not all(isinstance(e, dict) for e in body):
        raise FormatError(f"{archive}: manifest.json must be a non-empty list of images")
    if len(body) > 1:
        tags = [t for e in body for t in (e.get("RepoTags") or ["<untagged>"])]
        raise FormatError(
            f"{archive} holds {len(body)} images ({', '.join(map(str, tags))}); a release is "
            "one image: save only that one (podman save IMAGE)"
        )
    entry = body[0]
    config, layers, tags = entry.get("Config"), entry.get("Layers"), entry.get("RepoTags") or []
    if not isinstance(config, str) or not isinstance(layers, list) or not layers:
        raise FormatError(f'{archive}: manifest.json needs "Config" and a non-empty "Layers" list')
    if not all(isinstance(x, str) for x in [*layers, *tags]):
        raise FormatError(f'{archive}: manifest.json "Layers" and "RepoTags" must be strings')
    # docker >= 25 names files blobs/sha256/<hex>: their content must match that name.
    promised = {n: m.group(1) for n in [config, *layers] if (m := _BLOB_NAME.match(n))}
    return _Plan("docker-archive", config, tuple(layers), tuple(tags), promised)


def _plan_oci(archive: Path, members: Mapping[str, tarfile.TarInfo], tar: tarfile.TarFile) -> _Plan:
    index = _read_json(tar, members, "index.json", archive)
    found = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(found, list) or not found:
        raise FormatError(f'{archive}: index.json lists no "manifests"; {_HINT}')
    if len(found) > 1:
        names = [_ref_name(d) or "<untagged>" for d in found]
        raise FormatError(
            f"{archive} holds {len(found)} images ({', '.join(names)}); a release is one "
            "image: save only that one (podman save --format oci-archive IMAGE)"
        )
    tag = _ref_name(found[0])
    digest = _digest(found[0], archive, "index.json manifest")
    body = _read_json(tar, members, _blob(digest), archive)
    if isinstance(body, dict) and "manifests" in body:  # an image index (multi-platform)
        inner = body["manifests"] if isinstance(body["manifests"], list) else []
        if len(inner) != 1:
            platforms = [_platform(d) for d in inner]
            raise FormatError(
                f"{archive}: {tag or 'the image'} is a multi-platform index "
                f"({', '.join(platforms)}); save one platform's image (podman save --format "
                "oci-archive after pulling with --platform)"
            )
        digest = _digest(inner[0], archive, "image index manifest")
        body = _read_json(tar, members, _blob(digest), archive)
    layers = body.get("layers") if isinstance(body, dict) else None
    if not isinstance(body, dict) or not isinstance(layers, list) or not layers:
        raise FormatError(f"{archive}: image manifest {digest} lists no layers")
    config = _digest(body.get("config"), archive, "config")
    layer_digests = [_digest(d, archive, f"layer {i + 1}") for i, d in enumerate(layers)]
    promised = {_blob(d): d for d in [config, *layer_digests]}
    blobs = tuple(_blob(d) for d in layer_digests)
    return _Plan("oci-archive", _blob(config), blobs, (tag,) if tag else (), promised)


def _platform(descriptor: Any) -> str:
    platform = descriptor.get("platform") if isinstance(descriptor, dict) else None
    if not isinstance(platform, dict):
        return "?"
    return "/".join(str(platform[k]) for k in ("os", "architecture", "variant") if k in platform)


def _ref_name(descriptor: Any) -> str | None:
    notes = descriptor.get("annotations") if isinstance(descriptor, dict) else None
    if not isinstance(notes, dict):
        return None
    # containerd's key holds the full reference; the OCI one may be a bare tag ("1.0").
    for key in ("io.containerd.image.name", "org.opencontainers.image.ref.name"):
        name = notes.get(key)
        if isinstance(name, str) and (":" in name or "/" in name):
            return name
    return None


def _digest(descriptor: Any, archive: Path, what: str) -> str:
    """The sha256 hex of an OCI descriptor."""
    digest = descriptor.get("digest") if isinstance(descriptor, dict) else None
    match = _DIGEST.match(digest) if isinstance(digest, str) else None
    if match is None:
        raise FormatError(f"{archive}: {what} needs a sha256 digest, got {descriptor!r}")
    return match.group(1)


def _blob(sha256: str) -> str:
    return f"blobs/sha256/{sha256}"


def _check_promised(plan: _Plan, name: str, actual: str, archive: Path) -> None:
    promised = plan.digests.get(name)
    if promised is not None and promised != actual:
        raise FormatError(
            f"{archive}: {name} hashes to sha256:{actual}, not the digest its name promises; "
            "the archive is damaged, save the image again"
        )


def _diff_ids(config: bytes, archive: Path) -> list[str]:
    try:
        body = json.loads(config)
        diff_ids = body["rootfs"]["diff_ids"]
    except (ValueError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise FormatError(f"{archive}: the image config has no rootfs.diff_ids ({e})") from e
    out = []
    for d in diff_ids if isinstance(diff_ids, list) else [diff_ids]:
        match = _DIGEST.match(d) if isinstance(d, str) else None
        if match is None:
            raise FormatError(f"{archive}: the image config has a malformed diff_id {d!r}")
        out.append(match.group(1))
    return out


# -- copying one layer ---------------------------------------------------------------------


def _copy_layer(
    tar: tarfile.TarFile,
    members: Mapping[str, tarfile.TarInfo],
    plan: _Plan,
    index: int,
    diff_id: str,
    folder: Path,
    archive: Path,
) -> Layer:
    """Copy layer ``index`` into ``folder``, hashing the blob and its uncompressed tar."""
    name = plan.layers[index]
    blob_hash, tar_hash, length = hashlib.sha256(), hashlib.sha256(), 0
    unpack = _Decompressor()
    part = folder / f".layer-{index}.part"
    with (
        part.open("xb") as dst,
        _member(tar, members, name, f"layer {index + 1}", archive) as src,
    ):
        while chunk := src.read(_CHUNK):
            blob_hash.update(chunk)
            length += len(chunk)
            dst.write(chunk)
            for data in unpack.feed(chunk, archive, index):
                tar_hash.update(data)
        dst.flush()
        os.fsync(dst.fileno())
    sha256 = blob_hash.hexdigest()
    _check_promised(plan, name, sha256, archive)
    if tar_hash.hexdigest() != diff_id:
        raise FormatError(
            f"{archive}: layer {index + 1} ({name}) does not match the image config's diff_id: "
            f"its tar hashes to sha256:{tar_hash.hexdigest()}, the config says "
            f"sha256:{diff_id}; the archive is damaged or was edited, save the image again"
        )
    part.replace(folder / f"{sha256}.tar")
    return Layer(sha256=sha256, length=length, diff_id=diff_id)


class _Decompressor:
    """Yields a layer's tar bytes from its blob: plain, gzip (multi-member) or zstd."""

    def __init__(self) -> None:
        self._kind: str | None = None
        self._gz: Any = None
        self._zstd: Any = None

    def feed(self, chunk: bytes, archive: Path, index: int) -> Iterator[bytes]:
        if self._kind is None:
            self._kind = _sniff(chunk)
        try:
            if self._kind == "tar":
                yield chunk
            elif self._kind == "zstd":
                if self._zstd is None:
                    self._zstd = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True)
                yield self._zstd.decompress(chunk)
            else:
                yield from self._gunzip(chunk)
        except (zlib.error, zstandard.ZstdError) as e:
            raise FormatError(
                f"{archive}: layer {index + 1} is not valid {self._kind}: {e}; the archive is "
                "damaged, save the image again"
            ) from e

    def _gunzip(self, data: bytes) -> Iterator[bytes]:
        while data:
            if self._gz is None:
                self._gz = zlib.decompressobj(16 + zlib.MAX_WBITS)
            # bounded output per step: a small blob may inflate to a huge tar
            yield self._gz.decompress(data, _CHUNK)
            data = self._gz.unconsumed_tail
            if self._gz.eof:
                data, self._gz = self._gz.unused_data, None


def _sniff(head: bytes) -> str:
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    return "tar"


def _read_capped(stream: IO[bytes]) -> bytes:
    """Up to ``_MAX_JSON_BYTES + 1`` bytes (read(n) would allocate n bytes up front)."""
    raw = bytearray()
    while len(raw) <= _MAX_JSON_BYTES and (chunk := stream.read(_CHUNK)):
        raw += chunk
    return bytes(raw)


def _write(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
