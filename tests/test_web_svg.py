"""The drawings of web/svg.py: the layered layout, the timeline, the graph and the chart,
parsed back as XML (so every one is well-formed and every text escaped)."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import pytest

pytest.importorskip("markupsafe")

from script_monitor.web import svg

NS = "{http://www.w3.org/2000/svg}"


def parse(markup) -> ET.Element:
    text = str(markup).replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1)
    return ET.fromstring(text)


def find(root: ET.Element, tag: str, cls: str | None = None) -> list[ET.Element]:
    found = root.iter(NS + tag)
    return [e for e in found if cls is None or cls in (e.get("class") or "").split()]


def test_round_steps_cut_a_span_into_few_parts():
    assert svg.nice_step(1.6) == 0.2 and svg.nice_step(1.6, 4) == 0.5
    assert svg.nice_step(70) == 10
    assert svg.nice_step(3600) == 600
    assert svg.ticks(1.6, 4) == [0, 0.5, 1.0, 1.5]
    assert svg.nice_step(0) == 1.0 and svg.nice_step(float("nan")) == 1.0
    assert len(svg.ticks(10 * 86400 * 365)) <= 9


def test_layers_follow_the_dependencies_and_order_reduces_crossings():
    nodes = ["a", "b", "c", "d", "e"]
    edges = [("a", "c"), ("b", "c"), ("c", "d"), ("a", "e")]
    lay = svg.layered(nodes, edges)
    assert lay.layer == {"a": 0, "b": 0, "c": 1, "e": 1, "d": 2}
    assert [sorted(col) for col in lay.order] == [["a", "b"], ["c", "e"], ["d"]]
    # a chain and a separate node: the chain's end is deepest, the loner stays in layer 0
    assert svg.layered(["x", "y", "z", "w"], [("x", "y"), ("y", "z")]).layer["z"] == 2


def test_a_cycle_or_an_unknown_name_does_not_hang_or_fail():
    lay = svg.layered(["a", "b", "c"], [("a", "b"), ("b", "a"), ("c", "nope"), ("c", "c")])
    assert set(lay.layer) == {"a", "b", "c"}
    assert sum(len(col) for col in lay.order) == 3


def test_two_hundred_scripts_lay_out_quickly():
    nodes = [f"s{i:03d}" for i in range(200)]
    edges = [(nodes[i], nodes[j]) for j in range(1, 200) for i in {j - 1, j // 2}]
    start = time.perf_counter()
    root = parse(svg.graph(nodes, edges, {n: "success" for n in nodes}))
    assert time.perf_counter() - start < 0.5
    assert len(find(root, "g", "node")) == 200
    assert len(find(root, "path", "edge")) == len(edges)


def test_the_graph_has_a_node_per_script_and_an_edge_per_dependency():
    nodes = ["fetch", "flaky", "build", "<b>report</b>"]
    edges = [("fetch", "build"), ("flaky", "build"), ("build", "<b>report</b>")]
    root = parse(svg.graph(nodes, edges, {"fetch": "success", "flaky": "failed"}))
    groups = {g.get("data-script"): g for g in find(root, "g", "node")}
    assert list(groups) == nodes
    assert "s-success" in groups["fetch"].get("class")
    assert "s-never" in groups["build"].get("class")  # not run: no colour of an outcome
    texts = ["".join(t.itertext()) for t in find(groups["flaky"], "text")]
    assert texts == ["flaky", "✗ failed"]  # the outcome is written, not only coloured
    paths = find(root, "path", "edge")
    assert [(p.get("data-from"), p.get("data-to")) for p in paths] == edges
    assert root.get("data-nodes") == "4" and root.get("data-edges") == "3"


def test_the_timeline_draws_a_bar_per_attempt_the_waits_and_the_skips():
    t0 = 1_700_000_000.0
    rows = [
        svg.Row("fetch", [svg.Bar(1, 1, "success", t0, t0 + 0.3)]),
        svg.Row(
            "flaky",
            [
                svg.Bar(2, 1, "failed", t0, t0 + 0.2),
                svg.Bar(3, 2, "failed", t0 + 0.7, t0 + 0.9),
                svg.Bar(4, 3, "running", t0 + 1.4, None),
            ],
        ),
        svg.Row("build", skipped="needs flaky & <more>"),
    ]
    root = parse(svg.timeline(rows, t0, t0 + 2.0))
    attempts = find(root, "a", "attempt")
    assert [(a.get("href"), a.get("data-attempt")) for a in attempts] == [
        ("/runs/1", "1"),
        ("/runs/2", "1"),
        ("/runs/3", "2"),
        ("/runs/4", "3"),
    ]
    assert len(find(root, "line", "wait")) == 2  # the gaps before attempts 2 and 3
    marks = ["".join(t.itertext()) for t in find(root, "text", "mark")]
    assert marks == ["✓", "✗1", "✗2", "▶3"]
    skip = "".join(find(root, "text", "skip")[0].itertext())
    assert "skipped: needs flaky & <more>" in skip
    ticks = ["".join(t.itertext()) for t in find(root, "text", "tick")]
    assert ticks[0] == "0s" and len(ticks) >= 3
    running = [r for r in find(root, "rect", "bar") if "s-running" in r.get("class")]
    assert float(running[0].get("width")) > 100  # it reaches up to now


def test_the_chart_has_labelled_axes_the_band_and_marked_failures():
    t0 = 1_700_000_000.0
    points = [svg.Point(i, "success", t0 + 60 * i, 10.0 + i % 3) for i in range(12)]
    points.append(svg.Point(99, "failed", t0 + 60 * 13, 4.0))
    points.append(svg.Point(100, "timeout", t0 + 60 * 14, 30.0))
    root = parse(svg.duration_chart(points, (11.0, 2.2, 33.0)))
    assert len(find(root, "rect", "bar")) == 14
    y_labels = ["".join(t.itertext()) for t in find(root, "text", "y")]
    assert y_labels[0] == "0s" and len(y_labels) >= 3
    x_labels = ["".join(t.itertext()) for t in find(root, "text", "x")]
    assert x_labels and all(x_labels)
    assert len(find(root, "rect", "band")) == 1 and len(find(root, "line", "median")) == 1
    marks = ["".join(t.itertext()) for t in find(root, "text", "mark")]
    assert marks == ["✗", "◔"]
    tips = ["".join(t.itertext()) for r in find(root, "rect", "bar") for t in r.iter(NS + "title")]
    assert tips[-1].startswith("#100 timeout 30")
    # no band: no shaded rectangle, still a median; no runs: still a valid drawing
    root = parse(svg.duration_chart(points, (11.0, None, None)))
    assert not find(root, "rect", "band") and find(root, "line", "median")
    assert parse(svg.duration_chart([])).tag == NS + "svg"
