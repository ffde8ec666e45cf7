"""Download benchmark datasets into the data cache, verified and atomically.

Why this shape: a half-downloaded or tampered CSV would silently change every number a run reports,
so a file is streamed into a temp file next to its destination, hashed while it streams, checked
(size, sha256 when the registry pins one, CSV header), and only then renamed over the target. A
refused download leaves no temp file behind and never touches a good file already installed.
Standard library urllib only (http, https and file:// URLs, the latter for offline copies and tests).
"""

from __future__ import annotations

import hashlib
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

from llm4ts_scale.core.cache import cache_root
from llm4ts_scale.core.errors import UserError
from llm4ts_scale.core.io import atomic_writer, file_sha256
from llm4ts_scale.core.log import get_logger
from llm4ts_scale.data.registry import DATASETS, DatasetInfo, lookup

log = get_logger(__name__)

CHUNK = 1 << 16
USER_AGENT = "llm4ts-scale-fetch/1 (+python urllib)"


@dataclass
class FetchResult:
    name: str
    path: Path
    sha256: str
    pinned: bool  # the registry holds a hash and the file matched it
    downloaded: bool  # False when a verified copy was already installed


def default_dest() -> Path:
    """`<cache>/data`, the last directory `open_store` searches for a dataset name."""
    return cache_root() / "data"


def parse_sources(items: list[str]) -> dict[str, str]:
    """`["ETTh1=file:///x.csv"]` -> {"ETTh1": "file:///x.csv"} with names resolved through the registry."""
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, url = item.partition("=")
        if not sep or not name.strip() or not url.strip():
            raise UserError(f"--source {item!r} is not NAME=URL; write e.g. --source ETTh1=file:///data/ETTh1.csv")
        out[lookup(name.strip()).name] = url.strip()
    return out


def resolve_names(names: list[str]) -> list[DatasetInfo]:
    """Registry entries for the requested names, in order, without repeats; `all` means every dataset."""
    infos: list[DatasetInfo] = []
    for name in names:
        for info in (DATASETS.values() if name.lower() == "all" else [lookup(name)]):
            if info not in infos:
                infos.append(info)
    return infos


def _check_header(first_line: bytes, info: DatasetInfo, url: str) -> None:
    """A cheap guard for unpinned files: an HTML error page or another dataset has the wrong header."""
    try:
        columns = first_line.decode("utf-8").strip().split(",")
    except UnicodeDecodeError:
        columns = []
    if not columns or columns[0].strip().lower() != "date" or len(columns) != info.channels + 1:
        shown = first_line[:60].decode("utf-8", "replace").strip()
        raise UserError(f"{url} does not look like {info.name} (expected a 'date' column and {info.channels} "
                        f"channels, first line {shown!r}); check the URL or pass --source {info.name}=URL")


def _open(url: str):
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        return urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as err:
        raise UserError(f"download of {url} failed: HTTP {err.code} {err.reason}; "
                        "check the URL or pass --source NAME=URL with a mirror") from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise UserError(f"cannot open {url} ({reason}); check the network or pass --source NAME=URL "
                        "with a mirror or a file:// copy") from None


def _download(url: str, out, label: str, progress: bool) -> tuple[str, bytes]:
    """Stream `url` into the open file `out`; returns (sha256, first line)."""
    digest = hashlib.sha256()
    first_line = b""
    with _open(url) as response:
        total = response.headers.get("Content-Length") if response.headers else None
        total = int(total) if total and total.isdigit() else None
        received = 0
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                  disable=None if progress else True, file=sys.stderr, leave=False) as bar:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except OSError as err:
                    raise UserError(f"download of {url} broke off after {received} bytes ({err}); retry") from None
                if not chunk:
                    break
                if len(first_line) < 4096 and b"\n" not in first_line:
                    first_line = (first_line + chunk)[:4096]
                digest.update(chunk)
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if total is not None and received != total:
            raise UserError(f"download of {url} is truncated ({received} of {total} bytes); retry")
    return digest.hexdigest(), first_line.split(b"\n", 1)[0]


def fetch_dataset(info: DatasetInfo, dest: Path | None = None, url: Optional[str] = None, *,
                  force: bool = False, progress: bool = True) -> FetchResult:
    """Install `info` as `dest/<NAME>.csv` from `url` (default: the registry's canonical URL)."""
    dest = Path(dest) if dest is not None else default_dest()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create {dest} ({err.strerror}); pass --dest with a writable directory") from None
    target = dest / info.file_name
    url = url or info.url
    if target.is_file() and not force:
        current = file_sha256(target)
        if info.sha256 is None or current == info.sha256:
            note = "" if info.sha256 else " (unpinned; --force to download again)"
            log.info(f"{info.name}: already installed at {target}{note}")
            return FetchResult(info.name, target, current, info.sha256 is not None, False)
        log.info(f"{info.name}: {target} does not match the pinned sha256, downloading again")
    with atomic_writer(target) as out:  # installed only if every check below passes
        sha, first_line = _download(url, out, info.name, progress)
        if info.sha256 is not None and sha != info.sha256:
            raise UserError(f"{info.name} from {url} is corrupted or a different file: sha256 {sha}, expected "
                            f"{info.sha256}; nothing installed, retry or use another --source")
        _check_header(first_line, info, url)
    if info.sha256 is None:
        log.warning(f"warning: {info.name} is unpinned (no sha256 in llm4ts_scale/data/registry.py); accepted "
                    f"sha256 {sha}; pin it there once you have verified this copy")
    log.info(f"{info.name}: installed {target} (sha256 {sha[:16]}...{', verified' if info.sha256 else ''})")
    return FetchResult(info.name, target, sha, info.sha256 is not None, True)


def fetch(names: list[str], dest: Path | None = None, sources: list[str] | None = None, *,
          force: bool = False, progress: bool = True) -> list[FetchResult]:
    """Fetch several datasets; every name and --source is validated before any download starts."""
    if not names:
        raise UserError(f"name at least one dataset: {', '.join(DATASETS)} or all")
    infos = resolve_names(names)
    urls = parse_sources(sources or [])
    stray = sorted(set(urls) - {info.name for info in infos})
    if stray:
        raise UserError(f"--source given for {stray[0]} but {stray[0]} is not among the datasets to fetch; add it")
    return [fetch_dataset(info, dest, urls.get(info.name), force=force, progress=progress)
            for info in infos]
