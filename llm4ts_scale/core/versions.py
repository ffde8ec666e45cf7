"""Refuse, at start, an installed library outside the range this package declares, in one line.

A research environment often carries an older transformers, peft or accelerate than pip would pick; inside
`from_pretrained` that surfaces as a traceback about a keyword argument. The ranges are read from this package's
own metadata (pyproject.toml's dependencies, whose floors tools/check_floors.py keeps true), so they are written
once. Run from a source tree that was never installed, there is no metadata and nothing is checked.
"""

from __future__ import annotations

import importlib.metadata

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

from llm4ts_scale.core.errors import UserError

PACKAGE = "llm4ts-scale"
CHECKED = ("transformers", "peft", "accelerate", "deepspeed", "bitsandbytes")


def declared_ranges(package: str = PACKAGE) -> dict[str, str]:
    """name -> specifier (e.g. '>=4.56') of this package's runtime dependencies; {} when it is not installed."""
    try:
        requires = importlib.metadata.requires(package) or []
    except importlib.metadata.PackageNotFoundError:
        return {}
    out = {}
    for line in requires:
        req = Requirement(line)
        if req.marker is None:  # extras (tests) carry a marker
            out[req.name.lower()] = str(req.specifier)
    return out


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_versions(ranges: dict[str, str] | None = None, installed=installed_version) -> None:
    """UserError naming the first of CHECKED whose installed version lies outside its declared range."""
    ranges = declared_ranges() if ranges is None else ranges
    for name in CHECKED:
        spec, found = ranges.get(name), installed(name)
        if not spec or found is None:
            continue  # not declared, or missing: the import that needs it says so
        try:
            inside = Requirement(f"{name}{spec}").specifier.contains(Version(found), prereleases=True)
        except InvalidVersion:
            continue
        if not inside:
            raise UserError(f"{name} {found} is installed, llm4ts-scale needs {name}{spec}; "
                            f"run: pip install '{name}{spec}'")
