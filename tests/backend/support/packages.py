"""Audit package archives in tests: read one into its files, write files back as one."""

from __future__ import annotations

import io
import tarfile


def untar(archive: bytes) -> dict[str, bytes]:
    """The archive's files by name."""
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def tar(files: dict[str, bytes]) -> bytes:
    """A gzipped tar of ``files``, in the given order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
