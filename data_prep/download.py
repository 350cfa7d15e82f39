"""Corpus downloads: fetch a published file resumably, verify it, unpack it atomically.

    fetch_and_unpack(Remote(base, name, size=..., md5=... | sha256=...), dest, local_hint)

Why urllib and not a library: lhotse's `resumable_download` is the model (an HTTP Range request
continues a partial file), but lhotse 1.33 requires an unpinned `torch` (a CUDA build on a fresh
machine), and that helper appends a full `200` reply to the partial file when a server ignores
Range (Python's own `http.server` does). wget/curl may not be installed. So this module, on urllib:
- a download goes to `<file>.part`; after an interruption the next call asks for the rest
  (`Range: bytes=N-`), or starts over when the server answers the whole file;
- the finished file is checked against its publisher's checksum (or exact size where none is
  published: each corpus module says which and where from) before it is renamed into place, so
  a file under its final name is always whole; a mismatch deletes the part and says so;
- a tarball is unpacked into a temporary dir beside its destination and moved into place entry
  by entry (dirs that several tarballs share, like LibriSpeech/, are merged), then a marker
  `.<archive>.unpacked` is written: a killed unpack leaves no marker and is redone.

Environment:
- ASR_KD_DOWNLOAD_URL replaces every default base URL (a mirror, or the tests' loopback server);
  the publisher's relative names are kept (OpenSLR `12/dev-clean.tar.gz`, CMU `an4_sphere.tar.gz`).
- ASR_KD_DOWNLOAD_SHA256 names a file of `sha256sum` lines (`<hex>  <name>`): for the files it
  lists, that sha256 replaces the built-in checksum and size (a mirror serving re-packed bytes).
"""
from __future__ import annotations

import http.client
import logging
import os
import re
import shutil
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from asr_kd.errors import AsrKdError
from asr_kd.io import hash_file, make_temp_dir, write_text

log = logging.getLogger(__name__)

BASE_URL_ENV = "ASR_KD_DOWNLOAD_URL"
SHA256_ENV = "ASR_KD_DOWNLOAD_SHA256"
TIMEOUT_S = 60  # per socket operation: a stalled server fails the download (resumable) instead of hanging
BLOCK = 1 << 20


@dataclass(frozen=True)
class Remote:
    """One published file: `<base>/<name>` and what a whole copy of it is (size and/or checksums)."""
    base: str
    name: str
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None

    def __post_init__(self):
        if self.size is None and self.md5 is None and self.sha256 is None:
            raise ValueError(f"{self.name}: a download needs a checksum or a size to be verified")

    @property
    def filename(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    @property
    def url(self) -> str:
        return f"{(os.environ.get(BASE_URL_ENV) or self.base).rstrip('/')}/{self.name}"


# ---------------------------------------------------------------- fetch and verify

def fetch(remote: Remote, dest: str | Path, local_hint: str) -> Path:
    """`dest/<filename>`, downloaded (or resumed) and verified; errors say how to give a local copy."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / remote.filename
    expected = expected_of(remote)
    if target.exists():
        problem = mismatch(target, expected)
        if problem:
            raise AsrKdError(f"{target} is not the published file ({problem}): delete it to download it again")
        log.info("%s already downloaded and verified", target)
        return target
    partial = target.with_name(target.name + ".part")
    try:
        transfer(remote.url, partial)
    except (OSError, http.client.HTTPException) as e:  # URLError and timeouts are OSErrors
        kept = partial.stat().st_size if partial.exists() else 0
        resume = f"; {kept} bytes kept in {partial}, re-run to resume" if kept else ""
        raise AsrKdError(f"cannot download {remote.url} ({reason(e)}{resume}); give a local copy instead: "
                         f"{local_hint}, or a mirror in ${BASE_URL_ENV}") from None
    problem = mismatch(partial, expected)
    if problem:
        partial.unlink()
        raise AsrKdError(f"{remote.url} arrived corrupt ({problem}); deleted, re-run to download it again, or give "
                         f"a local copy: {local_hint} (a copy you trust with other bytes: list its sha256 in "
                         f"${SHA256_ENV})")
    os.replace(partial, target)
    log.info("%s downloaded and verified", target)
    return target


def transfer(url: str, partial: Path) -> None:
    """Download `url` into `partial`, continuing from its current length where the server allows."""
    have = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code != 416 or not have:
            raise
        if e.headers.get("Content-Range") == f"bytes */{have}":
            return  # the part is already whole (a run killed before its rename)
        partial.unlink()  # the part is longer than the file: start over
        return transfer(url, partial)
    with response:
        start = resume_offset(response, have, url)
        length = int(response.headers.get("Content-Length") or 0)
        with open(partial, "r+b" if start else "wb") as out, tqdm(
                total=start + length or None, initial=start, unit="B", unit_scale=True, desc=partial.name) as bar:
            out.seek(start)
            out.truncate()
            received = 0
            while block := response.read(BLOCK):
                out.write(block)
                received += len(block)
                bar.update(len(block))
    if length and received < length:  # read(n) returns b"" at a closed connection instead of raising
        raise http.client.IncompleteRead(b"", length - received)


def resume_offset(response, have: int, url: str) -> int:
    """Where the reply's body starts in the file: `have` for a 206 that continues it, else 0."""
    if response.status != 206:
        if have:
            log.info("%s: the server sent the whole file (no Range support); downloading it again", url)
        return 0
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    if not match or int(match.group(1)) != have:
        raise http.client.HTTPException(f"asked for bytes {have}- but got Content-Range "
                                        f"'{response.headers.get('Content-Range')}'")
    return have


def reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    if isinstance(error, http.client.IncompleteRead):
        return "connection closed early"
    return str(error) or type(error).__name__


@dataclass(frozen=True)
class Expected:
    size: int | None
    digests: dict[str, str]  # hashlib algorithm -> hex


def expected_of(remote: Remote) -> Expected:
    """The built-in size/checksums, or the sha256 the user's ASR_KD_DOWNLOAD_SHA256 file gives."""
    override = user_sha256().get(remote.filename)
    if override:
        return Expected(None, {"sha256": override})
    digests = {algo: value for algo, value in (("md5", remote.md5), ("sha256", remote.sha256)) if value}
    return Expected(remote.size, digests)


def user_sha256() -> dict[str, str]:
    path = os.environ.get(SHA256_ENV)
    if not path:
        return {}
    sums = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise AsrKdError(f"${SHA256_ENV}={path}: {e.strerror}") from None
    for number, line in enumerate(lines, start=1):
        match = re.fullmatch(r"([0-9a-fA-F]{64}) [ *]?(\S+)", line.strip())
        if line.strip() and not match:
            raise AsrKdError(f"{path}:{number}: expected `<sha256 hex>  <file name>` (sha256sum's format)")
        if match:
            sums[match.group(2).rsplit("/", 1)[-1]] = match.group(1).lower()
    return sums


def mismatch(path: Path, expected: Expected) -> str | None:
    """What differs between `path` and the expected file, or None when it is the expected file."""
    size = path.stat().st_size
    if expected.size is not None and size != expected.size:
        return f"{size} bytes, expected {expected.size}"
    for algorithm, want in expected.digests.items():
        got = hash_file(path, algorithm)
        if got != want.lower():
            return f"{algorithm} {got}, expected {want}"
    return None


# ---------------------------------------------------------------- unpack

def fetch_and_unpack(remote: Remote, dest: str | Path, local_hint: str) -> None:
    """Download, verify and unpack a tarball into `dest` once (a marker records a finished unpack)."""
    dest = Path(dest)
    marker = dest / f".{remote.filename}.unpacked"
    if marker.is_file():
        log.info("%s already unpacked in %s", remote.filename, dest)
        return
    unpack(fetch(remote, dest, local_hint), dest)
    write_text(marker, f"{remote.url}\n")


def unpack(archive: Path, dest: Path) -> None:
    """Extract into a temporary dir beside the result, then move it into place; the 'data' filter
    refuses absolute paths and links that leave `dest`."""
    log.info("unpacking %s into %s", archive, dest)
    tmp = make_temp_dir(dest / f"{archive.name}.unpack")
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        merge_into(tmp, dest)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise AsrKdError(f"{archive}: cannot unpack ({e}); delete it to download it again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def merge_into(src: Path, dest: Path) -> None:
    """Move every entry of `src` into `dest` (one rename each), descending into dirs both have."""
    for entry in sorted(src.iterdir()):
        target = dest / entry.name
        if entry.is_dir() and target.is_dir():
            merge_into(entry, target)
            continue
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(entry, target)
