"""Downloading a catalogued file (pretrained encoder weights) into a cache, checked (issue 15).

:func:`fetch` downloads ``url`` to ``<cache>/<filename>``: into ``<filename>.part`` first, which
a later call resumes with an HTTP ``Range`` request, reporting progress and polling a cancel
callback between blocks; the finished file's sha256 must match the catalogue's (all 64 digits,
or the leading digits a publisher puts in the file name) before it is renamed into place. A
file already in the cache with the right sha256 is not downloaded again. Standard library only.

:func:`encoder_file` resolves what a user gave as an encoder start (a file, or a catalogue key
of :mod:`landfuse.models.encoders`) to a local file.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional

from ..models.encoders import catalogue_key
from .errors import CancelledError, RequestError

__all__ = ["DownloadError", "cache_dir", "encoder_file", "fetch", "file_sha256"]

#: The folder of downloaded encoders unless a surface gives another (the dock: the QGIS
#: profile); ``LANDFUSE_CACHE`` overrides it.
DEFAULT_CACHE = Path.home() / ".cache" / "landfuse" / "encoders"
BLOCK = 1 << 20


class DownloadError(RequestError):
    """A download failed or gave another file than the catalogue's; the message says which."""


def cache_dir(folder: Optional[Path] = None) -> Path:
    return Path(folder or os.environ.get("LANDFUSE_CACHE") or DEFAULT_CACHE)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _matches(path: Path, sha256: str) -> bool:
    return file_sha256(path).startswith(sha256.lower())


def fetch(
    url: str,
    filename: str,
    sha256: str,
    folder: Optional[Path] = None,
    progress: Callable[[int, Optional[int]], None] = lambda done, total: None,
    cancel: Callable[[], bool] = lambda: False,
    timeout: float = 60.0,
) -> Path:
    """The cached file, downloaded (or resumed) and checked when needed.

    Raises:
        DownloadError: the server failed, or the file's sha256 differs (the file is removed).
        CancelledError: ``cancel`` returned True (the partial file stays, to resume).
    """
    folder = cache_dir(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / filename
    if target.is_file():
        if _matches(target, sha256):
            return target
        target.unlink()  # another file under this name: fetched again
    part = target.with_name(target.name + ".part")
    done = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and done:  # the part is complete already
            response = None
        else:
            raise DownloadError(
                f"Downloading {url} failed: HTTP {error.code} {error.reason}."
            ) from None
    except (urllib.error.URLError, OSError) as error:
        raise DownloadError(
            f"Cannot reach {url} ({getattr(error, 'reason', error)}): check the network, or "
            "download the file by hand and give its path instead."
        ) from None
    if response is not None:
        with response:
            resumed = done and response.status == 206
            length = response.headers.get("Content-Length")
            total = (int(length) + (done if resumed else 0)) if length else None
            mode = "ab" if resumed else "wb"
            done = done if resumed else 0
            with open(part, mode) as handle:
                while True:
                    if cancel():
                        raise CancelledError(
                            f"The download of {filename} was cancelled; it resumes next time."
                        )
                    block = response.read(BLOCK)
                    if not block:
                        break
                    handle.write(block)
                    done += len(block)
                    progress(done, total)
    if not _matches(part, sha256):
        found = file_sha256(part)
        part.unlink()
        raise DownloadError(
            f"{url} gave a file whose sha256 is {found}, not the catalogue's {sha256}: it was "
            "removed. The server may have changed the file; nothing was loaded from it."
        )
    os.replace(part, target)
    return target


def encoder_file(
    value: str,
    folder: Optional[Path] = None,
    progress: Callable[[int, Optional[int]], None] = lambda done, total: None,
    cancel: Callable[[], bool] = lambda: False,
) -> str:
    """A local file for an encoder start: the file itself, or a catalogue key's download."""
    row = catalogue_key(value)
    if row is None:
        if not Path(value).is_file():
            raise RequestError(
                f"{value} is neither a file nor a pretrained encoder of the catalogue "
                "(`landfuse encoders` lists them)."
            )
        return value
    return str(fetch(row.url, row.filename, row.sha256, folder, progress, cancel))
