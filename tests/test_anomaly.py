"""The duration band: its median, its limits and the runs outside it."""

from script_monitor.anomaly import Anomaly, classify, duration_band


def test_no_band_before_min_runs() -> None:
    assert duration_band([1.0] * 9, min_runs=10) is None
    assert duration_band([], min_runs=0) is None


def test_band_is_the_median_times_the_factors() -> None:
    band = duration_band([1.0, 2.0, 3.0, 100.0, 2.0], slow=3.0, fast=0.2, min_runs=5)
    assert band is not None
    assert (band.median, band.low, band.high, band.runs) == (2.0, 0.4, 6.0, 5)


def test_classify() -> None:
    band = duration_band([10.0] * 10)
    assert classify(31.0, band) is Anomaly.SLOW
    assert classify(1.9, band) is Anomaly.FAST
    assert classify(10.0, band) is None
    assert classify(1000.0, None) is None


def test_the_median_is_the_statistics_one_for_odd_and_even_counts() -> None:
    import random
    import statistics

    rng = random.Random(7)
    for n in range(1, 60):
        values = [rng.uniform(0, 100) for _ in range(n)]
        band = duration_band(list(values), min_runs=1)
        assert band is not None and band.median == statistics.median(values)
        assert band.runs == n
    assert duration_band([None, -1.0, 2.0], min_runs=1) == duration_band([2.0], min_runs=1)  # type: ignore[list-item]
