"""Calendar attributes: which ones a frequency resolves, and their integer values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llm4ts_scale.core.errors import UserError
from llm4ts_scale.data.calendar import CALENDAR_SIZES, calendar_attributes, calendar_marks, infer_freq


@pytest.mark.parametrize("freq, attrs", [
    ("h", ["month", "day", "weekday", "hour"]),
    ("H", ["month", "day", "weekday", "hour"]),  # pre-pandas-3 spelling
    ("15min", ["month", "day", "weekday", "hour", "minute"]),
    ("t", ["month", "day", "weekday", "hour", "minute"]),  # Time-Series-Library's minutely alias
    ("s", ["month", "day", "weekday", "hour", "minute", "second"]),
    ("D", ["month", "day", "weekday"]),
    ("W-TUE", ["month", "day"]),
    ("MS", ["month"]),
    ("YS", []),
])
def test_attributes_per_frequency(freq, attrs):
    assert calendar_attributes(freq) == attrs


def test_unknown_frequency_is_a_user_error():
    with pytest.raises(UserError, match="not a pandas alias"):
        calendar_attributes("fortnightly")


@pytest.mark.parametrize("freq", ["h", "15min", "D", "W-TUE", "MS"])
def test_infer_freq_round_trips(freq):
    stamps = pd.date_range("2021-03-02", periods=50, freq=freq).to_numpy()
    assert calendar_attributes(infer_freq(stamps)) == calendar_attributes(freq)


def test_irregular_timestamps_name_the_gap():
    stamps = pd.date_range("2021-01-01", periods=10, freq="h").delete(4).to_numpy()
    with pytest.raises(UserError, match=r"irregular frequency: .*rows 3 and 4"):
        infer_freq(stamps)


def test_marks_are_integers_within_table_sizes():
    stamps = pd.date_range("2020-02-28 22:59:58", periods=5000, freq="s").to_numpy()
    attrs = calendar_attributes("s")
    marks = calendar_marks(stamps, attrs)
    assert marks.dtype == np.int64 and marks.shape == (5000, 6)
    assert marks[0].tolist() == [2, 28, 4, 22, 59, 58]  # Friday is 4 (Monday 0)
    assert marks[2].tolist() == [2, 28, 4, 23, 0, 0]
    for j, name in enumerate(attrs):
        assert 0 <= marks[:, j].min() and marks[:, j].max() < CALENDAR_SIZES[name]
