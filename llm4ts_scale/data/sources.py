"""Where data comes from: `open_store` turns what a user gives (a store directory, a CSV/Parquet file, or
a dataset NAME looked up in `$LLM4TS_DATA_PATH` and `<cache>/data`) into a SeriesStore, preparing files
once into `<cache>/stores/`, keyed by their bytes and the prepare parameters."""

from __future__ import annotations

import os
from pathlib import Path

from llm4ts_scale.core.cache import cache_root
from llm4ts_scale.core.errors import UserError
from llm4ts_scale.core.io import file_sha256
from llm4ts_scale.data.frame import SUFFIXES, Schema, check_fill
from llm4ts_scale.data.prepare import prepare
from llm4ts_scale.data.splits import resolve_split_rule
from llm4ts_scale.data.store import META_FILE, SeriesStore, store_fingerprint


def data_search_dirs() -> list[Path]:
    """Where a dataset NAME is looked up: `$LLM4TS_DATA_PATH` entries, then `<cache>/data`."""
    dirs = [Path(p).expanduser().resolve() for p in os.environ.get("LLM4TS_DATA_PATH", "").split(os.pathsep) if p]
    return dirs + [cache_root() / "data"]


def find_data_file(name: str) -> Path | None:
    """NAME.csv / NAME.parquet (or NAME itself when it has that suffix) in data_search_dirs(), first hit."""
    candidates = [name] if Path(name).suffix.lower() in SUFFIXES else [name + s for s in SUFFIXES]
    for directory in data_search_dirs():
        for candidate in candidates:
            path = directory / candidate
            if path.is_file():
                return path
    return None


def _prepare_cached(source: Path, split: str, freq: str | None, fill: str, schema: Schema) -> SeriesStore:
    """A CSV/Parquet file prepared into `<cache>/stores/`, keyed by its bytes and the parameters."""
    from llm4ts_scale.data.calendar import normalize_freq

    sha = file_sha256(source)
    rule = resolve_split_rule(split, source.stem)
    freq = normalize_freq(freq) if freq is not None else None
    fingerprint = store_fingerprint(sha, rule, freq, fill, schema.identity())
    target = cache_root() / "stores" / f"{source.stem}-{fingerprint[:16]}"
    if (target / META_FILE).is_file():
        store = SeriesStore(target)
        if store.fingerprint == fingerprint:
            return store
    return prepare(source, target, split=rule, freq=freq, fill=fill, name=source.stem, source_sha256=sha, schema=schema)


def _check_store_params(store: SeriesStore, split: str, freq: str | None, schema: Schema) -> SeriesStore:
    from llm4ts_scale.data.calendar import normalize_freq

    if split != "auto":
        rule = resolve_split_rule(split, store.name)
        if rule != store.split_rule:
            raise UserError(
                f"store {store.path} was prepared with split rule {store.split_rule}, not {rule}; "
                "prepare the source again with that rule or use split auto"
            )
    if freq is not None and normalize_freq(freq) != store.freq:
        raise UserError(
            f"store {store.path} was prepared with frequency {store.freq}, not {freq}; prepare the source again"
        )
    covariates = {"known": store.known, "past": store.past}
    if schema.covariates and covariates != {"known": list(schema.known), "past": list(schema.past)}:
        raise UserError(f"store {store.path} was prepared with covariates {covariates}, not known={list(schema.known)} "
                        f"past={list(schema.past)}; prepare the source again with them")
    return store


def open_store(path_or_name: str | os.PathLike, *, split: str = "auto", freq: str | None = None,
               fill: str = "none", schema: Schema = Schema()) -> SeriesStore:
    """Resolve data given as a store dir, a CSV/Parquet file (prepared on the fly into the cache),
    or a dataset NAME found as NAME.csv/NAME.parquet in `$LLM4TS_DATA_PATH` or `<cache>/data`. `schema`
    (data/frame.py:Schema) says how to read a file: wide or long, which columns are targets and covariates."""
    resolve_split_rule(split, "")  # refuse an unknown rule before any work
    check_fill(fill)
    path = Path(path_or_name).expanduser()
    if path.is_dir():
        return _check_store_params(SeriesStore(path), split, freq, schema)
    if path.is_file():
        return _prepare_cached(path, split, freq, fill, schema)
    name = str(path_or_name)
    found = find_data_file(name) if os.sep not in name and (os.altsep is None or os.altsep not in name) else None
    if found is not None:
        return _prepare_cached(found, split, freq, fill, schema)
    searched = ", ".join(str(d) for d in data_search_dirs())
    raise UserError(
        f"data {name!r} not found: it is not a file or store directory, and no {name}.csv/{name}.parquet is in "
        f"{searched}; run `python tools/fetch_data.py {name}` or set LLM4TS_DATA_PATH to the folder holding it"
    )


def open_run_store(data, path: str | os.PathLike | None = None) -> SeriesStore:
    """The store a run's `data` config (core/config.py:DataConfig) describes; `path` in place of data.path."""
    return open_store(path or data.path, split=data.split, freq=data.freq, fill=data.fill, schema=Schema.of(data))
