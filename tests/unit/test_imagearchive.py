"""Image archives become release folders with one target per layer (edgeota.imagearchive).

The archives are built here with tarfile and json, in both layouts ``podman save`` writes,
with plain, gzip and zstd layers; every refusal leaves no folder behind.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zstandard

from edgeota.errors import FormatError
from edgeota.imagearchive import convert_image_archive, is_image_archive
from edgeota.releasefolder import load_release

SETTINGS = b'{"schema": 1, "health": {"exec": ["/bin/busybox", "true"]}, "network": "none"}\n'


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@dataclass
class Image:
    """An image's parts: ``blobs`` as stored, ``tars`` uncompressed (for the diff_ids)."""

    tars: list[bytes]
    blobs: list[bytes]
    tags: list[str] = field(default_factory=lambda: ["localhost/app:1"])

    @property
    def config(self) -> bytes:
        diff_ids = [f"sha256:{sha(t)}" for t in self.tars]
        body = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}
        body["rootfs"]["diff_ids"] = diff_ids  # type: ignore[index]
        return json.dumps(body).encode()


def image(*layers: str, compress: str = "none") -> Image:
    """An image whose layer i holds one file with the text ``layers[i]``."""
    tars = [layer_tar({f"file{i}.txt": text.encode()}) for i, text in enumerate(layers)]
    return Image(tars=tars, blobs=[pack(t, compress) for t in tars])


def pack(layer: bytes, compress: str) -> bytes:
    if compress == "gzip":
        return gzip.compress(layer, mtime=0)
    if compress == "zstd":
        return zstandard.ZstdCompressor().compress(layer)
    return layer


def docker_archive(path: Path, img: Image, *, skip: str | None = None, more: int = 0) -> Path:
    """A docker-archive as ``podman save`` writes it; ``skip`` leaves a member out."""
    config_name = f"{sha(img.config)}.json"
    layer_names = [f"{sha(b)}.tar" for b in img.blobs]
    entry = {"Config": config_name, "RepoTags": img.tags, "Layers": layer_names}
    manifest = [entry] + [{**entry, "RepoTags": [f"localhost/other{i}:1"]} for i in range(more)]
    with tarfile.open(path, "w") as tar:
        for name, data in [(config_name, img.config), *zip(layer_names, img.blobs, strict=True)]:
            if name != skip:
                add(tar, name, data)
        add(tar, "manifest.json", json.dumps(manifest).encode())
    return path


def oci_archive(path: Path, img: Image, *, extra_manifests: int = 0) -> Path:
    """An oci-archive as ``podman save --format oci-archive`` writes it."""
    gz = "application/vnd.oci.image.layer.v1.tar+gzip"
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": f"sha256:{sha(img.config)}",
            "size": len(img.config),
        },
        "layers": [
            {"mediaType": gz, "digest": f"sha256:{sha(b)}", "size": len(b)} for b in img.blobs
        ],
    }
    manifest_bytes = json.dumps(manifest).encode()
    descriptor = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": f"sha256:{sha(manifest_bytes)}",
        "size": len(manifest_bytes),
        "annotations": {"org.opencontainers.image.ref.name": img.tags[0]},
    }
    others = [
        {**descriptor, "annotations": {"org.opencontainers.image.ref.name": f"localhost/o{i}:2"}}
        for i in range(extra_manifests)
    ]
    index = {"schemaVersion": 2, "manifests": [descriptor, *others]}
    with tarfile.open(path, "w") as tar:
        add(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        add(tar, "index.json", json.dumps(index).encode())
        for blob in [manifest_bytes, img.config, *img.blobs]:
            add(tar, f"blobs/sha256/{sha(blob)}", blob)
    return path


@pytest.fixture
def settings(tmp_path: Path) -> Path:
    path = tmp_path / "container.json"
    path.write_bytes(SETTINGS)
    return path


def convert(archive: Path, settings: Path, **kwargs: object) -> Path:
    out = archive.parent / "release"
    convert_image_archive(archive, settings, out, **kwargs)  # type: ignore[arg-type]
    return out


def refused(archive: Path, settings: Path, match: str) -> FormatError:
    """Conversion fails with ``match`` and leaves the output's folder as it was."""
    before = sorted(p.name for p in archive.parent.iterdir())
    with pytest.raises(FormatError, match=match) as caught:
        convert(archive, settings)
    assert sorted(p.name for p in archive.parent.iterdir()) == before
    return caught.value


# -- what a converted release holds --------------------------------------------------------


def test_docker_archive_becomes_one_target_per_layer(tmp_path: Path, settings: Path) -> None:
    img = image("base system", "the app")
    out = convert(
        docker_archive(tmp_path / "app.tar", img),
        settings,
        needs={"model": ">=1.3.0"},
        hardware=["jetson"],
    )

    release = load_release(out)
    by_file = {f.file: f for f in release.files}
    config_sha = sha(img.config)
    layer_files = [f"image/{sha(b)}.tar" for b in img.blobs]
    assert list(by_file) == [
        "container.json",
        "image/manifest.json",
        f"image/{config_sha}.json",
        *layer_files,
    ]
    assert [by_file[f].role for f in by_file] == ["container", "image", "file", "layer", "layer"]
    assert [by_file[f].sha256 for f in layer_files] == [sha(b) for b in img.blobs]
    assert release.needs == {"model": ">=1.3.0"}
    assert release.hardware == ("jetson",)
    assert (out / "container.json").read_bytes() == SETTINGS
    assert (out / "image" / f"{config_sha}.json").read_bytes() == img.config
    assert json.loads((out / "image" / "manifest.json").read_text()) == [
        {
            "Config": f"{config_sha}.json",
            "RepoTags": ["localhost/app:1"],
            "Layers": [f"{sha(b)}.tar" for b in img.blobs],
        }
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.tar", "container.json", "release"]


def test_oci_archive_keeps_gzip_layers_as_stored(tmp_path: Path, settings: Path) -> None:
    img = image("base system", "the app", compress="gzip")
    result = convert_image_archive(
        oci_archive(tmp_path / "app.tar", img), settings, tmp_path / "release"
    )

    assert result.archive_format == "oci-archive"
    assert result.repo_tags == ("localhost/app:1",)
    assert result.config_sha256 == sha(img.config)
    for blob, layer in zip(img.blobs, result.layers, strict=True):
        assert layer.sha256 == sha(blob)
        assert (tmp_path / "release" / layer.file).read_bytes() == blob  # still gzip
    assert result.layer_bytes == sum(len(b) for b in img.blobs)


def test_zstd_and_multi_member_gzip_layers_are_checked_uncompressed(
    tmp_path: Path, settings: Path
) -> None:
    img = image("base system", "the app", compress="zstd")
    half = len(img.tars[1]) // 2
    img.blobs[1] = gzip.compress(img.tars[1][:half]) + gzip.compress(img.tars[1][half:])
    result = convert_image_archive(
        oci_archive(tmp_path / "app.tar", img), settings, tmp_path / "release"
    )
    assert [layer.sha256 for layer in result.layers] == [sha(b) for b in img.blobs]


def test_old_docker_layout_with_linked_layer_files(tmp_path: Path, settings: Path) -> None:
    """docker save before v25 (and podman's extra folders): <id>/layer.tar, maybe a symlink."""
    img = image("base system")
    path = tmp_path / "app.tar"
    manifest = [{"Config": "c.json", "RepoTags": [], "Layers": ["abc/layer.tar"]}]
    with tarfile.open(path, "w") as tar:
        add(tar, "c.json", img.config)
        add(tar, "real.tar", img.blobs[0])
        link = tarfile.TarInfo("abc/layer.tar")
        link.type, link.linkname = tarfile.SYMTYPE, "../real.tar"
        tar.addfile(link)
        add(tar, "./manifest.json", json.dumps(manifest).encode())
    out = convert(path, settings)
    assert json.loads((out / "image" / "manifest.json").read_text())[0]["RepoTags"] == []
    assert (out / "image" / f"{sha(img.blobs[0])}.tar").read_bytes() == img.blobs[0]


def test_a_repeated_layer_is_one_file_listed_twice(tmp_path: Path, settings: Path) -> None:
    img = image("same")
    img.tars *= 2
    img.blobs *= 2
    out = convert(docker_archive(tmp_path / "app.tar", img), settings)
    layer = f"{sha(img.blobs[0])}.tar"
    assert json.loads((out / "image" / "manifest.json").read_text())[0]["Layers"] == [layer] * 2
    assert [f.file for f in load_release(out).files if f.role == "layer"] == [f"image/{layer}"]


def test_layers_are_streamed_not_held_in_memory(tmp_path: Path, settings: Path) -> None:
    size = 48 << 20
    layer = tmp_path / "big-layer.tar"
    with tarfile.open(layer, "w") as tar, (tmp_path / "zeros").open("wb+") as zeros:
        zeros.truncate(size)
        info = tarfile.TarInfo("big.bin")
        info.size = size
        tar.addfile(info, zeros)
    digest = hashlib.sha256()
    with layer.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    config = json.dumps(
        {"rootfs": {"type": "layers", "diff_ids": [f"sha256:{digest.hexdigest()}"]}}
    )
    archive = tmp_path / "app.tar"
    with tarfile.open(archive, "w") as tar:
        add(tar, "c.json", config.encode())
        tar.add(layer, "l.tar")
        add(tar, "manifest.json", b'[{"Config": "c.json", "Layers": ["l.tar"]}]')

    tracemalloc.start()
    try:
        result = convert_image_archive(archive, settings, tmp_path / "release")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.layers[0].length == layer.stat().st_size
    assert peak < 6 << 20, f"peak {peak} bytes for a {size}-byte layer"


# -- is_image_archive ----------------------------------------------------------------------


def test_is_image_archive_tells_archives_from_other_inputs(tmp_path: Path) -> None:
    img = image("x")
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tar:
        add(tar, "model.onnx", b"onnx")
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07onnx-bytes" * 100)
    assert is_image_archive(docker_archive(tmp_path / "d.tar", img))
    assert is_image_archive(oci_archive(tmp_path / "o.tar", img))
    assert not is_image_archive(plain)
    assert not is_image_archive(tmp_path / "model.onnx")
    assert not is_image_archive(tmp_path)
    assert not is_image_archive(tmp_path / "missing.tar")


# -- refusals ------------------------------------------------------------------------------


def test_not_a_tar_is_refused(tmp_path: Path, settings: Path) -> None:
    archive = tmp_path / "app.tar"
    archive.write_bytes(b"definitely not a tar archive" * 40)
    refused(archive, settings, "is not a tar archive.*podman save --format docker-archive")


def test_a_tar_without_manifest_is_refused(tmp_path: Path, settings: Path) -> None:
    archive = tmp_path / "app.tar"
    with tarfile.open(archive, "w") as tar:
        add(tar, "rootfs/bin/sh", b"#!")
    refused(archive, settings, "neither manifest.json .docker-archive. nor oci-layout")


def test_a_layer_listed_but_missing_is_refused(tmp_path: Path, settings: Path) -> None:
    img = image("a", "b")
    archive = docker_archive(tmp_path / "app.tar", img, skip=f"{sha(img.blobs[1])}.tar")
    refused(archive, settings, "layer 2 .* is listed but missing from the archive")


def test_a_layer_that_does_not_match_its_diff_id_is_refused(tmp_path: Path, settings: Path) -> None:
    img = image("a", "b")
    img.blobs[1] = layer_tar({"file1.txt": b"tampered"})
    archive = docker_archive(tmp_path / "app.tar", img)
    refused(archive, settings, "layer 2 .* does not match the image config's diff_id")


def test_a_gzip_layer_that_does_not_match_its_diff_id_is_refused(
    tmp_path: Path, settings: Path
) -> None:
    img = image("a", "b", compress="gzip")
    img.blobs[0] = gzip.compress(layer_tar({"file0.txt": b"tampered"}))
    refused(oci_archive(tmp_path / "app.tar", img), settings, "layer 1 .* diff_id")


def test_a_config_and_manifest_of_different_layer_counts_are_refused(
    tmp_path: Path, settings: Path
) -> None:
    img = image("a", "b")
    img.tars.pop()
    refused(docker_archive(tmp_path / "app.tar", img), settings, "lists 1 layers .* manifest 2")


def test_an_oci_blob_that_does_not_match_its_digest_is_refused(
    tmp_path: Path, settings: Path
) -> None:
    img = image("a", compress="gzip")
    archive = oci_archive(tmp_path / "app.tar", img)
    swapped = tmp_path / "swapped.tar"
    with tarfile.open(archive) as src, tarfile.open(swapped, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == f"blobs/sha256/{sha(img.blobs[0])}":
                data = gzip.compress(img.tars[0], mtime=12345)  # same tar, other blob bytes
            add(dst, member.name, data)
    archive.unlink()
    refused(swapped, settings, "not the digest its name promises")


def test_corrupt_gzip_layer_is_refused(tmp_path: Path, settings: Path) -> None:
    img = image("a" * 5000, compress="gzip")
    docker = docker_archive(tmp_path / "app.tar", img)
    blob = img.blobs[0]
    broken = tmp_path / "broken.tar"
    with tarfile.open(docker) as src, tarfile.open(broken, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            add(dst, member.name, blob[:20] + b"\xff" * 30 + blob[50:] if data == blob else data)
    docker.unlink()
    refused(broken, settings, "layer 1 is not valid gzip")


def test_multi_image_docker_archive_is_refused_naming_the_tags(
    tmp_path: Path, settings: Path
) -> None:
    archive = docker_archive(tmp_path / "app.tar", image("a"), more=1)
    refused(archive, settings, r"holds 2 images \(localhost/app:1, localhost/other0:1\)")


def test_multi_image_oci_archive_is_refused_naming_the_tags(tmp_path: Path, settings: Path) -> None:
    archive = oci_archive(tmp_path / "app.tar", image("a"), extra_manifests=1)
    refused(archive, settings, r"holds 2 images \(localhost/app:1, localhost/o0:2\)")


def test_invalid_settings_are_refused_with_parse_spec_message(tmp_path: Path) -> None:
    settings = tmp_path / "container.json"
    settings.write_text('{"schema": 1, "command": ["/bin/app"]}')
    archive = docker_archive(tmp_path / "app.tar", image("a"))
    refused(archive, settings, '"health" is required')


def test_missing_settings_file_is_refused(tmp_path: Path) -> None:
    archive = docker_archive(tmp_path / "app.tar", image("a"))
    refused(archive, tmp_path / "nope.json", "cannot read the container settings")


def test_an_existing_output_folder_is_refused_untouched(tmp_path: Path, settings: Path) -> None:
    archive = docker_archive(tmp_path / "app.tar", image("a"))
    out = tmp_path / "release"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="exists already"):
        convert_image_archive(archive, settings, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
