"""OCI images written by hand (no engine): layouts with deterministic digests, a one-layer
image and a multi-arch index whose amd64 image carries a large layer."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


@dataclass(frozen=True)
class OCIImage:
    """An OCI layout on disk and the digests of what it holds (for an index: its amd64
    image's manifest, config and layer; ``index_digest`` names the index itself)."""

    layout: Path
    manifest_digest: str
    config_digest: str
    layer_digest: str
    index_digest: str | None = None

    @property
    def blob_digests(self) -> set[str]:
        """Config and layer digests."""
        return {self.config_digest, self.layer_digest}

    @property
    def pulled_digest(self) -> str:
        """The digest a client pulling the tag resolves: the index's, or the manifest's."""
        return self.index_digest or self.manifest_digest


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(name: str, content: bytes) -> tuple[bytes, bytes]:
    """(uncompressed tar, gzip of it), both byte-for-byte reproducible."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(content)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(content))
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0, compresslevel=1) as gz:
        gz.write(raw.getvalue())
    return raw.getvalue(), packed.getvalue()


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _put(layout: Path, data: bytes) -> str:
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    digest = _digest(data)
    (blobs / digest.split(":", 1)[1]).write_bytes(data)
    return digest


def _image(layout: Path, architecture: str, name: str, content: bytes
           ) -> tuple[str, int, str, str]:
    """Write one image's blobs: (manifest digest, manifest size, config digest, layer digest)."""
    tar, layer = _layer(name, content)
    config = _json({"architecture": architecture, "os": "linux", "config": {},
                    "rootfs": {"type": "layers", "diff_ids": [_digest(tar)]}})
    manifest = _json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": _digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": _digest(layer), "size": len(layer)}],
    })
    layer_digest, config_digest = _put(layout, layer), _put(layout, config)
    return _put(layout, manifest), len(manifest), config_digest, layer_digest


def _tag(layout: Path, media_type: str, digest: str, size: int, tag: str) -> None:
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (layout / "index.json").write_text(json.dumps({
        "schemaVersion": 2,
        "manifests": [{"mediaType": media_type, "digest": digest, "size": size,
                       "annotations": {"org.opencontainers.image.ref.name": tag}}],
    }))


def write_oci_layout(layout: Path, tag: str = "latest",
                     content: bytes = b"hello from scarfgw\n" * 6) -> OCIImage:
    """Write a one-layer linux/amd64 image under ``layout`` tagged ``tag``, whose one file
    holds ``content`` (images with different content share no digest)."""
    manifest, size, config, layer = _image(layout, "amd64", "hello.txt", content)
    _tag(layout, OCI_MANIFEST, manifest, size, tag)
    return OCIImage(layout, manifest, config, layer)


def write_multiarch_layout(layout: Path, layer_size: int, tag: str = "latest") -> OCIImage:
    """An index of a linux/amd64 image with a ``layer_size``-byte random (incompressible)
    file and a linux/arm64 image with a small one, tagged ``tag``."""
    amd64 = _image(layout, "amd64", "big.bin", os.urandom(layer_size))
    arm64 = _image(layout, "arm64", "small.txt", b"arm64\n")
    index = _json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": digest, "size": size,
         "platform": {"architecture": architecture, "os": "linux"}}
        for architecture, (digest, size, _, _) in (("amd64", amd64), ("arm64", arm64))]})
    index_digest = _put(layout, index)
    _tag(layout, OCI_INDEX, index_digest, len(index), tag)
    return OCIImage(layout, amd64[0], amd64[2], amd64[3], index_digest)
