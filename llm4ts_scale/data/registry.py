"""The paper's benchmark datasets by name: where each one is published and how it is evaluated.

Sources. The four ETT files come from their authors' repository (zhouhaoyi/ETDataset). Weather,
ECL (electricity), Traffic and ILI (national_illness) are only published inside the
Autoformer / Time-Series-Library bundle ("all_six_datasets", on Google Drive and Tsinghua Cloud
as a zip). Those links serve the zip through interstitial pages; the most stable direct per-file
URLs we know are THUML's own Hugging Face mirror of the same bundle
(huggingface.co/datasets/thuml/Time-Series-Library), used below. `--source NAME=URL` overrides any
of them (a mirror, or a `file://` path to a copy you already have).

Checksums. `sha256` pins the exact bytes we evaluated on. ETTh1 and ILI are pinned to the copies
this project's tests use (shared/data/ETTh1.csv and national_illness.csv, hashed locally). The
others are None: this project was built without internet access, so their remote bytes were
never seen and any hash written here would be invented. For those, the fetcher prints the hash it
computed and installs the file with an "unpinned" warning; pin it here once you have verified a copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from llm4ts_scale.core.errors import UserError

_ETT = "https://raw.githubusercontent.com/zhouhaoyi/ETDataset/main/ETT-small/"
_TSLIB = "https://huggingface.co/datasets/thuml/Time-Series-Library/resolve/main/"


@dataclass(frozen=True)
class DatasetInfo:
    name: str  # what users type, and the installed file's stem: <cache>/data/<name>.csv
    url: str  # canonical public location of the CSV
    sha256: Optional[str]  # expected hex digest, or None when unpinned (see module docstring)
    upstream_file: str  # the file's name at its source (national_illness.csv for ILI, ...)
    split: str  # split rule (llm4ts_scale.data.splits): ett-hourly | ett-minute | ratio
    freq: str  # pandas frequency alias
    channels: int  # numeric columns besides the date
    rows: int  # data rows (published sizes; lets tools check a protocol without the file)

    @property
    def file_name(self) -> str:
        return f"{self.name}.csv"


DATASETS: dict[str, DatasetInfo] = {d.name: d for d in (
    DatasetInfo("ETTh1", _ETT + "ETTh1.csv",
                "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066",
                "ETTh1.csv", "ett-hourly", "h", 7, 17420),
    DatasetInfo("ETTh2", _ETT + "ETTh2.csv", None, "ETTh2.csv", "ett-hourly", "h", 7, 17420),
    DatasetInfo("ETTm1", _ETT + "ETTm1.csv", None, "ETTm1.csv", "ett-minute", "15min", 7, 69680),
    DatasetInfo("ETTm2", _ETT + "ETTm2.csv", None, "ETTm2.csv", "ett-minute", "15min", 7, 69680),
    DatasetInfo("Weather", _TSLIB + "weather/weather.csv", None, "weather.csv", "ratio", "10min", 21, 52696),
    DatasetInfo("ECL", _TSLIB + "electricity/electricity.csv", None, "electricity.csv", "ratio", "h", 321, 26304),
    DatasetInfo("Traffic", _TSLIB + "traffic/traffic.csv", None, "traffic.csv", "ratio", "h", 862, 17544),
    DatasetInfo("ILI", _TSLIB + "illness/national_illness.csv",
                "8594cecb98c6f2f9dc014eca11c4d5d1e38ad5ce6ed0592d4abe65b146fce395",
                "national_illness.csv", "ratio", "W-TUE", 7, 966),
)}

# Other spellings people use for the same data (Time-Series-Library file stems).
ALIASES = {"electricity": "ECL", "national_illness": "ILI", "illness": "ILI"}


def lookup(name: str) -> DatasetInfo:
    """The registry entry for a name (case-insensitive, aliases allowed); UserError listing the names."""
    by_lower = {k.lower(): k for k in DATASETS}
    by_lower.update({alias.lower(): target for alias, target in ALIASES.items()})
    key = by_lower.get(str(name).lower())
    if key is None:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[key]
