"""The pure part of bench/bench_update.py and bench/bench_move.py: the prober's
samples, the outage they show, sizes and the table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from probestats import (
    Outage,
    Sample,
    intervals,
    ms,
    outage,
    parse_samples,
    parse_size,
    row,
    size_text,
    table,
)


def samples(*pairs: tuple[float, str]) -> list[Sample]:
    return [Sample(t, body) for t, body in pairs]


def test_parse_samples_skips_what_is_not_a_sample() -> None:
    text = "ready\n10.000100 v1\n10.002 !\nnot-a-time v1\n10.0041\n10.006 v2"
    assert parse_samples(text) == samples((10.0001, "v1"), (10.002, "!"), (10.006, "v2"))


def test_update_downtime_is_last_old_answer_to_first_new_one() -> None:
    got = outage(samples((1.0, "v1"), (1.1, "v1"), (1.2, "!"), (1.3, "!"), (1.4, "v2"),
                         (1.5, "v2")), "v1", "v2", since=0.5)  # fmt: skip
    assert got == Outage(last_old=1.1, first_new=1.4, failed=2)
    assert got.downtime == pytest.approx(0.3)


def test_a_seamless_switch_is_one_probe_interval() -> None:
    got = outage(samples((1.0, "v1"), (1.002, "v2")), "v1", "v2", since=0.0)
    assert got.failed == 0 and got.downtime == pytest.approx(0.002)


def test_the_same_page_lost_and_back_is_a_gap() -> None:
    # a failed update: the old page, nothing, the old page again
    got = outage(samples((1.0, "v1"), (1.1, "!"), (1.2, "v1")), "v1", "v1", since=0.0)
    assert got == Outage(1.0, 1.2, 1)


def test_samples_before_since_do_not_count() -> None:
    # an earlier blip (before the update started) is not the update's outage
    got = outage(samples((1.0, "!"), (2.0, "v1"), (3.0, "!"), (4.0, "v2")), "v1", "v2", 1.5)
    assert got == Outage(2.0, 4.0, 1)


@pytest.mark.parametrize(
    "pairs",
    [
        [(1.0, "v1"), (1.1, "v1")],  # not lost yet
        [(1.0, "v1"), (1.1, "!")],  # lost, the new page not there yet
        [(1.0, "!"), (1.1, "v2")],  # the old page never answered
    ],
)
def test_no_switch_yet_is_a_value_error(pairs: list[tuple[float, str]]) -> None:
    with pytest.raises(ValueError):
        outage(samples(*pairs), "v1", "v2", since=0.0)


def test_intervals() -> None:
    assert intervals(samples((1.0, "a"), (1.5, "a"), (1.75, "!"))) == [0.5, 0.25]
    assert intervals([]) == []


@pytest.mark.parametrize(
    ("text", "n"),
    [("100M", 100 << 20), ("1G", 1 << 30), ("1g", 1 << 30), ("512K", 512 << 10),
     ("1GiB", 1 << 30), ("4096", 4096), ("1.5G", 3 << 29)],
)  # fmt: skip
def test_parse_size(text: str, n: int) -> None:
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["", "0", "-1M", "lots"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_size_text() -> None:
    assert [size_text(n) for n in (100 << 20, 1 << 30, 3 << 29, 1000)] == [
        "100M", "1G", "1536M", "1000"]  # fmt: skip


def test_ms_row_and_table() -> None:
    assert [ms(x) for x in (0.0123, 0.285, -0.102, 1.2464)] == [
        "12.3 ms", "285 ms", "-102 ms", "1246 ms"]  # fmt: skip
    assert row("x", [0.3, 0.1, 0.2]) == ["x", "3", "200 ms", "300 ms"]
    assert row("none", []) == ["none", "0", "-", "-"]
    assert table(["a", "bb"], [["ccc", "d"]]) == ["| a   | bb |", "|-----|----|", "| ccc | d  |"]
