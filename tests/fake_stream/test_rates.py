"""Rate profiles: per-millisecond tweet counts (property-based and worked examples)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fake_stream.rates import (
    MAX_RATE,
    MAX_SEGMENTS,
    PRESETS,
    RateProfile,
    Segment,
    parse_profile,
)

# --- strategies -----------------------------------------------------------------------------

# Rates are held in thousandths of a tweet/s; drawing them as integers of that unit makes
# the expected totals exact integer arithmetic (no float in the oracle).
rate_milli = st.integers(0, 200_000_000)  # up to 200,000 tweets/s


@st.composite
def uniform_profiles(draw: st.DrawFn) -> RateProfile:
    """A step function with 1..5 segments and uniform arrivals."""
    n = draw(st.integers(1, 5))
    starts_ms = sorted(draw(st.sets(st.integers(1, 6000), min_size=n - 1, max_size=n - 1)))
    rates = [draw(rate_milli) / 1000 for _ in range(n)]
    segments = [Segment(s / 1000, r) for s, r in zip([0, *starts_ms], rates, strict=True)]
    return RateProfile(tuple(segments))


@st.composite
def poisson_profiles(draw: st.DrawFn) -> RateProfile:
    """A step function with Poisson arrivals (modest rates keep the draws cheap)."""
    n = draw(st.integers(1, 3))
    starts_ms = sorted(draw(st.sets(st.integers(1, 6000), min_size=n - 1, max_size=n - 1)))
    rates = [draw(st.integers(0, 50_000)) for _ in range(n)]
    segments = [Segment(s / 1000, r, True) for s, r in zip([0, *starts_ms], rates, strict=True)]
    return RateProfile(tuple(segments))


@st.composite
def split_ranges(draw: st.DrawFn) -> tuple[int, int, list[int]]:
    """A range [first, stop) and sorted cut points strictly inside it."""
    first = draw(st.integers(0, 5000))
    stop = first + draw(st.integers(1, 4000))
    cuts = sorted(draw(st.sets(st.integers(first + 1, stop), max_size=8)) - {stop})
    return first, stop, cuts


def pieces(profile: RateProfile, first: int, stop: int, cuts: list[int], seed: int) -> np.ndarray:
    bounds = [first, *cuts, stop]
    parts = [profile.counts(a, b, seed) for a, b in itertools.pairwise(bounds)]
    return np.concatenate(parts)


# --- split independence -----------------------------------------------------------------------


@settings(deadline=None)  # numpy work per example; loaded CI machines
@given(uniform_profiles(), split_ranges(), st.integers(0, 2**32))
def test_uniform_counts_do_not_depend_on_how_the_range_is_split(profile, rng, seed) -> None:
    """The server asks for counts tick by tick, at whatever times its loop wakes up; the
    stream must come out the same however the time axis was cut."""
    first, stop, cuts = rng
    whole = profile.counts(first, stop, seed)
    assert len(whole) == stop - first
    assert np.array_equal(pieces(profile, first, stop, cuts, seed), whole)
    assert (whole >= 0).all()


@settings(max_examples=60, deadline=None)
@given(poisson_profiles(), split_ranges(), st.integers(0, 2**32))
def test_poisson_counts_do_not_depend_on_how_the_range_is_split(profile, rng, seed) -> None:
    """Same for Poisson arrivals, whose draws are seeded per block of milliseconds: a cut
    in the middle of a block must not change that block's draws."""
    first, stop, cuts = rng
    whole = profile.counts(first, stop, seed)
    assert np.array_equal(pieces(profile, first, stop, cuts, seed), whole)


def test_counts_of_an_empty_range_are_empty() -> None:
    """A tick that lands in the same millisecond as the last one asks for nothing."""
    for profile in (parse_profile(1000), parse_profile({"kind": "poisson", "rate": 1000})):
        assert len(profile.counts(7, 7, 0)) == 0


# --- uniform totals ------------------------------------------------------------------------------


@settings(deadline=None)  # numpy work per example; loaded CI machines
@given(rate_milli, st.integers(0, 20_000), st.integers(0, 20_000))
def test_uniform_constant_rate_total_is_exact(milli: int, first: int, length: int) -> None:
    """A constant R tweets/s gives exactly floor(R * N / 1000) tweets in the first N ms,
    and every ms holds floor or ceil of R/1000: arrivals are evenly spread, not lumped."""
    profile = parse_profile(milli / 1000)
    stop = first + length
    counts = profile.counts(0, stop, 0) if stop else np.zeros(0, dtype=np.int64)
    # Exact integer oracle: R * N / 1000 with R = milli / 1000 is milli * N / 10**6.
    assert int(counts.sum()) == milli * stop // 10**6
    assert int(counts[first:].sum()) == milli * stop // 10**6 - milli * first // 10**6
    if stop:
        per_ms = milli / 10**6
        assert counts.min() >= math.floor(per_ms)
        assert counts.max() <= math.ceil(per_ms)


def test_one_thousand_per_second_is_one_per_millisecond() -> None:
    """The module's own example: 1,000/s gives exactly one tweet every millisecond."""
    assert parse_profile(1000).counts(0, 5000, 3).tolist() == [1] * 5000


def test_slow_rate_spreads_tweets_evenly() -> None:
    """4 tweets/s: one every 250 ms, the first once a whole tweet has accumulated."""
    counts = parse_profile(4).counts(0, 2000, 0)
    assert np.flatnonzero(counts).tolist() == [249, 499, 749, 999, 1249, 1499, 1749, 1999]


# --- bursts and piecewise curves ------------------------------------------------------------


def test_burst_integrates_to_its_expected_total() -> None:
    """100/s with a 25x spike for 1 s at 2 s: 200 + 2,500 + 200 tweets in 5 s, the spike's
    2,500 all inside [2 s, 3 s)."""
    profile = parse_profile({"kind": "burst", "rate": 100, "factor": 25, "at": 2, "duration": 1})
    counts = profile.counts(0, 5000, 0)
    assert int(counts[:2000].sum()) == 200
    assert int(counts[2000:3000].sum()) == 2500
    assert int(counts[3000:].sum()) == 200
    assert profile.rate_at(2.5) == 2500
    assert profile.rate_at(3.0) == 100


def test_periodic_burst_repeats() -> None:
    """every=3: spikes at 1, 4, 7 s ..., each of factor x rate for its duration (a day of
    them would be 57,600 segments, beyond MAX_SEGMENTS: the horizon says when they end)."""
    profile = parse_profile(
        {"kind": "burst", "rate": 1000, "factor": 10, "at": 1, "duration": 0.5, "every": 3}
        | {"horizon": 600}
    )
    per_second_half = profile.counts(0, 10_000, 0).reshape(-1, 500).sum(axis=1)
    spikes = {2, 8, 14}  # half-seconds starting at 1 s, 4 s, 7 s
    assert per_second_half.tolist() == [5000 if i in spikes else 500 for i in range(20)]


def test_burst_past_the_horizon_still_happens() -> None:
    """A one-off burst scheduled after the (undocumented) 24 h horizon is not dropped."""
    profile = parse_profile({"kind": "burst", "rate": 10, "factor": 5, "at": 90_000, "duration": 1})
    assert profile.rate_at(90_000.5) == 50


@settings(deadline=None)  # numpy work per example; loaded CI machines
@given(st.lists(st.tuples(st.integers(1, 3000), rate_milli), min_size=0, max_size=5))
def test_piecewise_integrates_to_the_exact_area(steps: list[tuple[int, int]]) -> None:
    """A piecewise curve's total over its span is the integer part of its exact area
    (sum of rate x length), carried across segment boundaries without loss."""
    lengths_ms = [1000] + [length for length, _ in steps]
    rates = [50_000] + [milli for _, milli in steps]
    starts = np.concatenate(([0], np.cumsum(lengths_ms)[:-1])).tolist()
    points = [[s / 1000, m / 1000] for s, m in zip(starts, rates, strict=True)]
    profile = parse_profile({"kind": "piecewise", "points": points})
    end = sum(lengths_ms)
    area_units = sum(m * n for m, n in zip(rates, lengths_ms, strict=True))  # 1e-6 tweets
    assert int(profile.counts(0, end, 0).sum()) == area_units // 10**6


def test_record_2013_preset_peaks_at_143199_per_second() -> None:
    """The preset replays the record: 5,700/s, then exactly 143,199 tweets in the one
    second starting at 10 s, then 5,700/s again."""
    profile = parse_profile("record-2013")
    counts = profile.counts(0, 13_000, 0).reshape(13, 1000).sum(axis=1)
    assert counts.tolist() == [5700] * 10 + [143199] + [5700] * 2
    assert max(s.rate for s in profile.segments) == pytest.approx(143199)
    assert profile.rate_at(10.5) / profile.rate_at(0) == pytest.approx(25.12, abs=0.01)


# --- Poisson ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_poisson_mean_and_dispersion(seed: int) -> None:
    """Poisson arrivals at 5,000/s over 20 s: the total is Poisson(100,000) (sd 316); we
    allow 5 sd, which a correct generator misses with probability 6e-7 per seed. The
    per-ms variance must match the mean (dispersion 1, unlike uniform arrivals' 0): the
    sample variance of 20,000 Poisson(5) draws has sd sqrt((5 + 2*25)/20000) = 0.052, and
    we allow 5 sd = 0.26."""
    counts = parse_profile({"kind": "poisson", "rate": 5000}).counts(0, 20_000, seed)
    assert abs(int(counts.sum()) - 100_000) <= 5 * math.sqrt(100_000)
    assert abs(float(counts.var()) - 5.0) <= 0.26


def test_poisson_seed_matters_and_is_reproducible() -> None:
    """Same seed, same arrivals; another seed, other arrivals. Negative seeds (the CLI
    accepts them) work too."""
    profile = parse_profile({"kind": "poisson", "rate": 2000})
    a = profile.counts(0, 3000, 11)
    assert np.array_equal(a, profile.counts(0, 3000, 11))
    assert not np.array_equal(a, profile.counts(0, 3000, 12))
    assert not np.array_equal(profile.counts(0, 3000, -1), profile.counts(0, 3000, 1))


def test_arrivals_poisson_on_a_burst() -> None:
    """``arrivals: poisson`` randomises a burst too; its spike second still carries about
    factor x rate (Poisson(25,000): 5 sd = 791)."""
    profile = parse_profile(
        {
            "kind": "burst",
            "rate": 1000,
            "factor": 25,
            "at": 1,
            "duration": 1,
            "arrivals": "poisson",
        }
    )
    counts = profile.counts(0, 3000, 5)
    assert abs(int(counts[1000:2000].sum()) - 25_000) <= 5 * math.sqrt(25_000)
    assert counts[1000:2000].var() > 1  # not uniform (which would give 25 every ms)


# --- splicing (rate changes at run time) --------------------------------------------------------


@settings(deadline=None)  # numpy work per example; loaded CI machines
@given(
    uniform_profiles() | poisson_profiles(),
    st.integers(0, 3000),
    st.integers(0, 100_000_000),
    st.booleans(),
    st.integers(0, 2**32),
)
def test_spliced_keeps_the_past_and_follows_the_new_profile(
    old, at_ms, new_milli, new_poisson, seed
) -> None:
    """What was already created never changes; after the splice the rate is the new
    one's, and with uniform arrivals the count over any span from the splice differs from
    the new profile's own by at most the one tweet of carried fraction."""
    new = RateProfile((Segment(0.0, new_milli / 1000, new_poisson),))
    spliced = old.spliced(at_ms / 1000, new)
    assert np.array_equal(spliced.counts(0, at_ms, seed), old.counts(0, at_ms, seed))
    assert spliced.rate_at(at_ms / 1000 + 0.5) == new_milli / 1000
    if not new_poisson:
        after = spliced.counts(at_ms, at_ms + 2000, seed).cumsum()
        own = new.counts(0, 2000, seed).cumsum()
        assert set((after - own).tolist()) <= {0, 1}


def test_spliced_uniform_with_no_carried_fraction_is_exact() -> None:
    """1,000/s for 3 s leaves no fraction behind, so a switch to 250/s then gives exactly
    the 250/s pattern (one tweet every 4 ms), shifted to the switch."""
    spliced = parse_profile(1000).spliced(3.0, parse_profile(250))
    counts = spliced.counts(0, 5000, 0)
    assert counts[:3000].tolist() == [1] * 3000
    assert counts[3000:].tolist() == parse_profile(250).counts(0, 2000, 0).tolist()


def test_spliced_poisson_follows_new_mean() -> None:
    """A switch to Poisson 5,000/s: the next 10 s hold Poisson(50,000) tweets (5 sd = 1,118)."""
    spliced = parse_profile(100).spliced(1.0, parse_profile({"kind": "poisson", "rate": 5000}))
    total = int(spliced.counts(1000, 11_000, 2).sum())
    assert abs(total - 50_000) <= 5 * math.sqrt(50_000)


# --- parse_profile: accepted specs ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "rate"),
    [(1500, 1500.0), (2.5, 2.5), ("1500", 1500.0), (" 7.25 ", 7.25), ("0", 0.0)],
)
def test_numbers_are_constant_rates(spec: object, rate: float) -> None:
    """A number (or numeric text, as from ``--rate``) is a constant uniform rate."""
    profile = parse_profile(spec)
    assert profile.segments == (Segment(0.0, rate, False),)


def test_presets_by_name() -> None:
    """Every preset name parses, as text or as its dict."""
    for name, spec in PRESETS.items():
        assert parse_profile(name) == parse_profile(dict(spec))


def test_json_text_and_dict_agree() -> None:
    """JSON text (the ``--profile`` option, the control API body) equals the same dict."""
    spec = {"kind": "piecewise", "points": [[0, 100], [5, 2000]], "arrivals": "poisson"}
    from_text = parse_profile(json.dumps(spec))
    assert from_text == parse_profile(spec)
    assert from_text.segments == (Segment(0.0, 100.0, True), Segment(5.0, 2000.0, True))


def test_constant_and_poisson_kinds() -> None:
    """kind constant is uniform unless told otherwise; kind poisson defaults to Poisson."""
    assert parse_profile({"kind": "constant", "rate": 9}).segments == (Segment(0.0, 9.0),)
    assert parse_profile({"kind": "poisson", "rate": 9}).segments == (Segment(0.0, 9.0, True),)
    assert parse_profile({"kind": "constant", "rate": 9, "arrivals": "poisson"}).segments == (
        Segment(0.0, 9.0, True),
    )


def test_csv_file_with_header_and_comments(tmp_path: Path) -> None:
    """A CSV curve: optional header line, ``#`` comments and blank lines skipped."""
    curve = tmp_path / "curve.csv"
    curve.write_text("seconds,rate\n# warm-up\n0,100\n\n2.5,4000\n10,0\n")
    profile = parse_profile({"kind": "piecewise", "file": str(curve)}, allow_files=True)
    assert profile.segments == (Segment(0.0, 100.0), Segment(2.5, 4000.0), Segment(10.0, 0.0))
    assert int(profile.counts(0, 12_000, 0).sum()) == 250 + 30_000


def test_csv_file_relative_to_base_dir(tmp_path: Path) -> None:
    """A relative ``file`` is read from ``base_dir`` (a profile file's own directory)."""
    (tmp_path / "c.csv").write_text("0,10\n1,20\n")
    profile = parse_profile(
        '{"kind": "piecewise", "file": "c.csv"}', base_dir=tmp_path, allow_files=True
    )
    assert [s.rate for s in profile.segments] == [10.0, 20.0]


# --- parse_profile: rejected specs ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"kind": "zigzag", "rate": 1}, "kind"),
        ({"rate": 1}, "kind"),
        ({"kind": ["constant"], "rate": 1}, "kind"),
        ({"kind": "constant"}, "rate"),
        ({"kind": "poisson"}, "rate"),
        ({"kind": "constant", "rate": "fast"}, "rate"),
        ({"kind": "constant", "rate": True}, "rate"),
        ({"kind": "constant", "rate": None}, "rate"),
        ({"kind": "constant", "rate": -1}, "rate"),
        ({"kind": "constant", "rate": MAX_RATE + 1}, "rate"),
        ({"kind": "constant", "rate": 1e300}, "rate"),
        ({"kind": "constant", "rate": 10**400}, "rate"),
        ('{"kind": "constant", "rate": Infinity}', "rate"),
        ('{"kind": "constant", "rate": NaN}', "rate"),
        ({"kind": "constant", "rate": 5, "arrivals": "bursty"}, "arrivals"),
        ({"kind": "constant", "rate": 5, "rat": 6}, "rat"),
        ({"kind": "poisson", "rate": 5, "factor": 3}, "factor"),
        ({"kind": "piecewise", "points": [[0, 1]], "every": 3}, "every"),
        ({"kind": "burst", "rate": 5, "factor": 2, "at": 1, "duration": 1, "x": 0}, "x"),
        ({"kind": "burst", "factor": 2, "at": 1, "duration": 1}, "rate"),
        ({"kind": "burst", "rate": 5, "at": 1, "duration": 1}, "factor"),
        ({"kind": "burst", "rate": 5, "factor": 2, "duration": 1}, "at"),
        ({"kind": "burst", "rate": 5, "factor": 2, "at": 1}, "duration"),
        ({"kind": "burst", "rate": 5, "factor": "2", "at": 1, "duration": 1}, "factor"),
        ({"kind": "burst", "rate": 5, "factor": 2, "at": -1, "duration": 1}, "at"),
        ({"kind": "burst", "rate": 5, "factor": 2, "at": 1, "duration": 0}, "duration"),
        ({"kind": "burst", "rate": 5, "factor": -2, "at": 1, "duration": 1}, "factor"),
        ({"kind": "burst", "rate": 5, "factor": 2, "at": 1, "duration": 1, "every": 1}, "every"),
        # 43 million repeats in a day would hang the server building segments.
        (
            {"kind": "burst", "rate": 5, "factor": 2, "at": 0, "duration": 0.001, "every": 0.002},
            "every",
        ),
        ({"kind": "burst", "rate": 10**6, "factor": 100, "at": 1, "duration": 1}, "rate"),
        ({"kind": "burst", "rate": 1, "factor": 2, "at": 0, "duration": 1e300}, "duration"),
        # 1e308 s overflowed to infinity on its way to milliseconds: a 500 over HTTP.
        ({"kind": "burst", "rate": 1, "factor": 2, "at": 0, "duration": 1e308}, "duration"),
        ({"kind": "burst", "rate": 1, "factor": 2, "at": 1e9, "duration": 1e10}, "starts at"),
        ({"kind": "piecewise", "points": [[0, 1], [1e300, 2]]}, "points[1]"),
        ({"kind": "piecewise", "points": [[0, 1], [1e10, 2]]}, "starts at"),
        ({"kind": "piecewise"}, "points"),
        ({"kind": "piecewise", "points": 5}, "points"),
        ({"kind": "piecewise", "points": []}, "points"),
        ({"kind": "piecewise", "points": [[0, "x"]]}, "points[0]"),
        ({"kind": "piecewise", "points": [[0, 1], [2, "100"]]}, "points[1]"),
        ({"kind": "piecewise", "points": [[0, 1], [2]]}, "points[1]"),
        ({"kind": "piecewise", "points": [[0, 1]], "file": "c.csv"}, "points"),
        ({"kind": "piecewise", "file": 7}, "file"),
        ({"kind": "piecewise", "file": "/nonexistent/curve.csv"}, "file"),
        ("fast", "rate profile"),
        ("[1, 2]", "rate profile"),
        (None, "rate profile"),
        (True, "rate profile"),
    ],
)
def test_bad_specs_raise_value_error_naming_the_field(spec: object, field: str) -> None:
    """Every bad spec is a ValueError (the CLI and the control API turn it into exit 2 /
    HTTP 400) whose message names the offending field; never a TypeError, OverflowError
    or a silently different profile."""
    with pytest.raises(ValueError, match=r"rate profile") as excinfo:
        parse_profile(spec)
    assert field in str(excinfo.value)


def test_bad_points_order_and_start() -> None:
    """A curve must start at 0 s and go forward in time."""
    with pytest.raises(ValueError, match="start at 0"):
        parse_profile({"kind": "piecewise", "points": [[1, 5]]})
    with pytest.raises(ValueError, match="increasing"):
        parse_profile({"kind": "piecewise", "points": [[0, 5], [2, 1], [2, 3]]})


@pytest.mark.parametrize(
    "text",
    ["0,100\n1\n", "0,100\n1,fast\n", "seconds,rate\nzero,100\n"],
)
def test_bad_csv_rows_name_the_file(tmp_path: Path, text: str) -> None:
    """A malformed CSV row is a ValueError naming the file, not an IndexError."""
    curve = tmp_path / "bad.csv"
    curve.write_text(text)
    with pytest.raises(ValueError, match="rate profile file") as excinfo:
        parse_profile({"kind": "piecewise", "file": str(curve)}, allow_files=True)
    assert "bad.csv" in str(excinfo.value)


# --- files only when the caller allows them, and a bounded size --------------------------


@pytest.mark.parametrize(
    "wrap",
    [
        lambda spec: spec,  # an object
        json.dumps,  # JSON text of it (a string body over HTTP)
        lambda spec: json.dumps(json.dumps(spec)),  # JSON text of that JSON text
    ],
)
def test_file_is_refused_unless_allowed_without_touching_the_path(tmp_path: Path, wrap) -> None:
    """Without ``allow_files`` a ``file`` field is refused however the spec is quoted, and
    the answer is the same whether the path exists or not: nothing is read, nothing about
    the file (its content, its existence) leaks into the message."""
    secret = tmp_path / "secret.csv"
    secret.write_text("0,1\nroot:x:0:0:top-secret\n")
    messages = []
    for path in (secret, tmp_path / "missing.csv"):
        with pytest.raises(ValueError, match="rate profile file") as excinfo:
            parse_profile(wrap({"kind": "piecewise", "file": str(path)}))
        messages.append(str(excinfo.value))
    assert messages[0] == messages[1]
    assert "top-secret" not in messages[0]
    assert str(tmp_path) not in messages[0]


def test_profile_segments_are_bounded() -> None:
    """MAX_SEGMENTS points are a profile; one more is refused (a 108-byte burst spec once
    expanded to 200,000 segments and blocked the server for 1.4 s)."""
    points = [[i, i % 7] for i in range(MAX_SEGMENTS)]
    assert len(parse_profile({"kind": "piecewise", "points": points}).segments) == MAX_SEGMENTS
    with pytest.raises(ValueError, match=f"more than {MAX_SEGMENTS}"):
        parse_profile({"kind": "piecewise", "points": [*points, [MAX_SEGMENTS, 1]]})
    with pytest.raises(ValueError, match="every"):
        parse_profile(
            {"kind": "burst", "rate": 1, "factor": 2, "at": 0, "duration": 0.1} | {"every": 1}
        )


def test_splicing_cannot_grow_a_profile_past_the_bound() -> None:
    """Rate changes at run time keep the past segments: the sum is bounded too."""
    half = parse_profile({"kind": "piecewise", "points": [[i, 1] for i in range(6000)]})
    with pytest.raises(ValueError, match=f"more than {MAX_SEGMENTS}"):
        half.spliced(7000, half)
    assert len(half.spliced(3000, half).segments) == 3000 + 6000


@pytest.mark.parametrize("text", ["inf", "-inf", "nan", "1e400", "Infinity"])
def test_non_finite_numbers_in_text_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="rate profile"):
        parse_profile(text)
