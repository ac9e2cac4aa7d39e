"""Every YAML example of the user's guide loads and behaves as the guide says.

The examples are extracted from the guide itself (conftest.GUIDE), written verbatim
into a config directory with harmless probe scripts for every script they name, and
run through the real CLI from that directory, exactly as the guide's commands show.
"""

from __future__ import annotations

import itertools
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml

from helpers import (
    GUIDE,
    ROOT,
    cli,
    cli_json,
    events,
    hash_tree,
    make_config,
    max_overlap,
    probe,
)

GUIDE_TEXT = GUIDE.read_text()


def yaml_blocks() -> list[str]:
    """Every ```yaml block of the guide, in order."""
    return re.findall(r"```yaml\n(.*?)```", GUIDE_TEXT, re.S)


def fenced_after(heading: str) -> str:
    """The first plain ``` block after ``heading`` in the guide."""
    start = GUIDE_TEXT.index(heading)
    match = re.compile(r"```\n(.*?)```", re.S).search(GUIDE_TEXT, start)
    assert match, heading
    return match.group(1)


def documents(block: str) -> list[str]:
    """Split a block that shows alternatives (a top-level key repeated) into documents."""
    docs: list[list[str]] = [[]]
    seen: set[str] = set()
    for line in block.splitlines(keepends=True):
        key = re.match(r"^([A-Za-z_]+):", line)
        if key and key.group(1) in seen:
            # Leading comment lines belong to the next alternative ("# New ...").
            tail = []
            while docs[-1] and docs[-1][-1].lstrip().startswith("#"):
                tail.insert(0, docs[-1].pop())
            docs.append(tail)
            seen = set()
        if key:
            seen.add(key.group(1))
        docs[-1].append(line)
    return ["".join(d) for d in docs]


def guide_documents() -> list[str]:
    return [doc for block in yaml_blocks() for doc in documents(block)]


def group_docs() -> list[str]:
    return [d for d in guide_documents() if "groups" in yaml.safe_load(d)]


def doc_groups(doc: str) -> list[dict]:
    return yaml.safe_load(doc)["groups"]


def doc_with_group(name: str, **match) -> str:
    """The first guide document defining group ``name`` with the given field values."""
    for doc in group_docs():
        for g in doc_groups(doc):
            if g["name"] == name and all(g.get(k) == v for k, v in match.items()):
                return doc
    raise AssertionError(f"the guide has no group {name} {match}")


def setup_guide(conf: Path, doc: str, seconds: float = 0.1, failing: tuple = ()) -> Path:
    """A config dir: the guide's groups verbatim, a probe script per member."""
    names = [s for g in doc_groups(doc) for s in g["scripts"]]
    make_config(conf, {n: probe(n, seconds, 1 if n in failing else 0) for n in names})
    (conf / "groups.yaml").write_text(doc)
    return conf


def run_group(conf: Path, name: str):
    """``python main.py run-group NAME`` from the config directory, as the guide shows."""
    return cli("run-group", name, cwd=conf)


def assert_serial_order(conf: Path, names: list[str]) -> None:
    spans = events(conf)
    assert list(spans) == names, spans
    for before, after in itertools.pairwise(names):
        assert spans[after][0] >= spans[before][1], f"{after} started before {before} ended"


# ---------------------------------------------------------------- the extraction itself


def test_guide_yaml_blocks_are_all_found():
    blocks = yaml_blocks()
    # 3 serial/parallel configurations, the config.yaml block, 4 real-world examples,
    # 2 migration blocks that each show an old and a new form.
    assert len(blocks) == 10
    docs = guide_documents()
    assert len(docs) == 12
    for doc in docs:
        assert isinstance(yaml.safe_load(doc), dict), doc


def test_migration_block_as_one_file_is_refused_with_its_line(config_dir):
    """Both alternatives in one file repeat 'groups:': a clear error, not a silent pick."""
    block = next(b for b in yaml_blocks() if "# Old (implicit serial)" in b)
    setup_guide(config_dir, documents(block)[0])
    (config_dir / "groups.yaml").write_text(block)
    r = cli("validate", cwd=config_dir)
    assert r.returncode == 2
    second = block.splitlines().index("groups:", 2) + 1
    assert f"groups.yaml:{second}: error: duplicate key 'groups'" in r.stderr
    assert "Traceback" not in r.stderr


# ---------------------------------------------------------------- every document


@pytest.mark.parametrize("index", range(12))
def test_every_guide_document_validates_and_runs_in_its_mode(tmp_path, index):
    doc = guide_documents()[index]
    conf = tmp_path / "conf"
    data = yaml.safe_load(doc)
    if "groups" not in data:  # the config.yaml block
        make_config(conf, {"one": "true"})
        (conf / "config.yaml").write_text(doc)
        assert cli("validate", cwd=conf).returncode == 0
        r = cli("get-setting", "execution.max_parallel_workers", cwd=conf)
        assert (r.returncode, r.stdout) == (0, "5\n")
        return
    setup_guide(conf, doc, seconds=0.1 if "parallel" not in doc else 0.4)
    r = cli("validate", cwd=conf)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    before = hash_tree(conf)
    for group in data["groups"]:
        (conf / "events.log").unlink(missing_ok=True)
        r = run_group(conf, group["name"])
        assert r.returncode == 0, r.stdout + r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] == f"Running {group['name']}..."
        runs = [f"Running {s}... ✓" for s in group["scripts"]]
        if group.get("execution", "serial") == "serial":
            assert lines[1:] == runs
            assert_serial_order(conf, group["scripts"])
        else:
            n = len(group["scripts"])
            assert sorted(lines[1 : n + 1]) == sorted(runs)
            assert lines[n + 1 :] == [
                "Parallel execution summary:",
                f"  Completed: {n}/{n}",
                f"  Successful: {n}/{n}",
            ]
            assert 1 < max_overlap(events(conf)) <= 5
    after = hash_tree(conf)
    assert {k: v for k, v in after.items() if k.endswith(".yaml")} == {
        k: v for k, v in before.items() if k.endswith(".yaml")
    }


# ---------------------------------------------------------------- the guide's texts


def test_serial_without_stop_on_error_prints_the_guide_text(config_dir):
    doc = doc_with_group("deployment", stop_on_error=None)
    setup_guide(config_dir, doc, failing=("build_app",))
    r = run_group(config_dir, "deployment")
    expected = fenced_after("**With `stop_on_error: false` (default):**")
    assert r.stdout == expected.replace(" (still runs)", "")
    assert r.returncode == 1
    assert_serial_order(
        config_dir, ["pre_deploy_check", "build_app", "deploy_app", "post_deploy_test"]
    )


def test_serial_with_stop_on_error_prints_the_guide_text_and_skips_the_rest(config_dir):
    doc = doc_with_group("deployment", stop_on_error=True)
    setup_guide(config_dir, doc, failing=("build_app",))
    r = run_group(config_dir, "deployment")
    assert r.stdout == fenced_after("**With `stop_on_error: true`:**")
    assert "⚠️  Script build_app failed. Stopping group execution\n" in r.stdout
    assert r.returncode == 1
    assert list(events(config_dir)) == ["pre_deploy_check", "build_app"]
    for name in ("deploy_app", "post_deploy_test"):
        runs = cli_json("history", name, "--json", cwd=config_dir)
        assert [x["status"] for x in runs] == ["skipped"]


def test_parallel_summary_is_the_guide_text(config_dir):
    doc = doc_with_group("monitoring", execution="parallel")
    setup_guide(config_dir, doc, seconds=1, failing=("check_database",))
    started = time.monotonic()
    r = run_group(config_dir, "monitoring")
    took = time.monotonic() - started
    assert r.returncode == 1
    summary = fenced_after("Parallel execution shows a summary at the end:")
    assert r.stdout.endswith(summary), r.stdout
    assert "Running check_database... ✗ FAILED\n" in r.stdout
    # "Total time: ~10 seconds" instead of 40: four 1 s checks overlap.
    assert took < 3.5
    assert max_overlap(events(config_dir)) == 4


def test_list_groups_shows_the_guide_lines(config_dir):
    monitoring = doc_groups(doc_with_group("monitoring", execution="parallel"))
    deployment = doc_groups(doc_with_group("deployment", stop_on_error=True))
    names = [s for g in monitoring + deployment for s in g["scripts"]]
    make_config(config_dir, {n: probe(n) for n in names}, monitoring + deployment)
    r = cli("list-groups", cwd=config_dir)
    assert r.returncode == 0, r.stderr
    expected = fenced_after("Output shows execution mode:").splitlines()
    headings = [line for line in r.stdout.splitlines() if line.startswith("Group:")]
    assert headings == expected


def test_get_setting_reads_the_configured_and_default_cap(config_dir):
    make_config(config_dir, {"one": "true"})
    r = cli("get-setting", "execution.max_parallel_workers", cwd=config_dir)
    assert (r.returncode, r.stdout) == (0, "5\n")
    block = next(b for b in yaml_blocks() if b.startswith("execution:"))
    (config_dir / "config.yaml").write_text(block.replace(": 5 ", ": 3 "))
    r = cli("get-setting", "execution.max_parallel_workers", cwd=config_dir)
    assert (r.returncode, r.stdout) == (0, "3\n")


def test_serial_is_slower_than_parallel_as_the_performance_example_shows(tmp_path):
    serial = tmp_path / "serial"
    parallel = tmp_path / "parallel"
    doc = doc_with_group("monitoring", execution="parallel")
    setup_guide(parallel, doc, seconds=0.5)
    setup_guide(serial, doc.replace("execution: parallel", "execution: serial"), seconds=0.5)
    assert run_group(serial, "monitoring").returncode == 0
    assert run_group(parallel, "monitoring").returncode == 0
    s, p = events(serial), events(parallel)
    assert max_overlap(s) == 1 and max_overlap(p) == 4
    total = {
        k: max(e for _, e in v.values()) - min(b for b, _ in v.values())
        for k, v in (("serial", s), ("parallel", p))
    }
    assert total["serial"] >= 2.0
    assert total["parallel"] < total["serial"] / 2


# ---------------------------------------------------------------- the real-world examples


def test_example_1_seven_checks_in_parallel_capped_at_the_default_five(config_dir):
    doc = doc_with_group("infrastructure_check")
    setup_guide(config_dir, doc, seconds=1)
    started = time.monotonic()
    r = run_group(config_dir, "infrastructure_check")
    took = time.monotonic() - started
    assert r.returncode == 0, r.stderr
    assert "  Completed: 7/7\n  Successful: 7/7\n" in r.stdout
    assert max_overlap(events(config_dir)) == 5
    assert took < 5  # two waves of 1 s, not seven


@pytest.mark.parametrize(
    ("failing", "ran"),
    [
        ("run_tests", ["run_tests"]),  # "If tests fail, nothing else runs"
        ("backup_database", ["run_tests", "backup_database"]),  # "deploy is skipped"
        (
            "deploy_new_version",
            ["run_tests", "backup_database", "stop_application", "deploy_new_version"],
        ),  # "migrations don't run"
    ],
)
def test_example_2_production_deploy_stops_at_the_first_failure(config_dir, failing, ran):
    doc = doc_with_group("production_deploy")
    members = doc_groups(doc)[0]["scripts"]
    setup_guide(config_dir, doc, seconds=0.05, failing=(failing,))
    r = run_group(config_dir, "production_deploy")
    assert r.returncode == 1
    assert list(events(config_dir)) == ran
    skipped = members[len(ran) :]
    assert f"⚠️  Script {failing} failed. Stopping group execution\n" in r.stdout
    for name in skipped:
        assert f"Running {name}..." not in r.stdout
        assert cli_json("history", name, "--json", cwd=config_dir)[0]["status"] == "skipped"


def test_example_3_data_import_continues_and_still_reports(config_dir):
    doc = doc_with_group("data_import")
    members = doc_groups(doc)[0]["scripts"]
    setup_guide(config_dir, doc, seconds=0.05, failing=("import_from_source_b",))
    r = run_group(config_dir, "data_import")
    assert r.returncode == 1
    assert_serial_order(config_dir, members)
    assert "Running import_from_source_b... ✗ FAILED\n" in r.stdout
    assert r.stdout.endswith("Running generate_report... ✓\n")
    assert "Stopping group execution" not in r.stdout


def test_example_4_mixed_groups_each_keep_their_mode(config_dir):
    doc = doc_with_group("health_checks")
    setup_guide(config_dir, doc, seconds=0.5, failing=("build_api",))
    r = cli("list-groups", cwd=config_dir)
    assert "Group: health_checks [execution: parallel]" in r.stdout
    assert "Group: deploy_api [execution: serial, stop_on_error]" in r.stdout
    assert "Group: metrics_collection [execution: parallel]" in r.stdout
    assert "  Schedule: */10 * * * * (local)" in r.stdout

    r = run_group(config_dir, "health_checks")
    assert r.returncode == 0 and max_overlap(events(config_dir)) == 3
    (config_dir / "events.log").unlink()
    r = run_group(config_dir, "deploy_api")
    assert r.returncode == 1
    assert list(events(config_dir)) == ["run_api_tests", "build_api"]
    assert r.stdout.endswith(
        "⚠️  Script build_api failed. Stopping group execution\n"
        "(deploy_api and verify_api are skipped)\n"
    )


def test_migration_old_forms_default_to_serial_continue_on_error(config_dir):
    blocks = [b for b in yaml_blocks() if b.startswith("# Old")]
    old_monitoring, new_monitoring = documents(blocks[0])
    old_deploy, new_deploy = documents(blocks[1])

    setup_guide(config_dir, old_monitoring, seconds=0.3)
    assert "Group: monitoring [execution: serial]" in cli("list-groups", cwd=config_dir).stdout
    assert run_group(config_dir, "monitoring").returncode == 0
    assert max_overlap(events(config_dir)) == 1

    (config_dir / "events.log").unlink()
    setup_guide(config_dir, new_monitoring, seconds=0.5)
    assert "Group: monitoring [execution: parallel]" in cli("list-groups", cwd=config_dir).stdout
    assert run_group(config_dir, "monitoring").returncode == 0
    assert max_overlap(events(config_dir)) == 2

    for doc, ran, heading in (
        (old_deploy, ["build", "deploy"], "[execution: serial]"),
        (new_deploy, ["build"], "[execution: serial, stop_on_error]"),
    ):
        (config_dir / "events.log").unlink()
        setup_guide(config_dir, doc, seconds=0.05, failing=("build",))
        assert f"Group: deployment {heading}" in cli("list-groups", cwd=config_dir).stdout
        assert run_group(config_dir, "deployment").returncode == 1
        assert list(events(config_dir)) == ran


# ---------------------------------------------------------------- the bundled examples


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    conf = tmp_path / "examples"
    shutil.copytree(ROOT / "examples", conf, ignore=shutil.ignore_patterns("logs", ".script-*"))
    return conf


def test_bundled_examples_hold_every_guide_group(examples):
    """Each group of the guide (not the migration snippets) is runnable in examples/."""
    groups = yaml.safe_load((examples / "groups.yaml").read_text())["groups"]
    migration = [d for b in yaml_blocks() if b.startswith("# Old") for d in documents(b)]
    shape = [
        (g["scripts"], g.get("execution", "serial"), bool(g.get("stop_on_error"))) for g in groups
    ]
    checked = 0
    for doc in group_docs():
        if doc in migration:
            continue
        for g in doc_groups(doc):
            want = (g["scripts"], g.get("execution", "serial"), bool(g.get("stop_on_error")))
            assert want in shape, g["name"]
            checked += 1
    assert checked == 9


@pytest.mark.slow
def test_bundled_examples_run_as_the_guide_says(examples):
    assert cli("validate", cwd=examples).returncode == 0
    before = {k: v for k, v in hash_tree(examples).items() if k.endswith(".yaml")}
    r = run_group(examples, "deployment")
    assert r.returncode == 1
    assert r.stdout == fenced_after("**With `stop_on_error: true`:**")
    r = run_group(examples, "deployment_continue")
    assert r.returncode == 1
    assert "Running build_app... ✗ FAILED\nRunning deploy_app... ✓\n" in r.stdout
    r = run_group(examples, "monitoring")
    assert r.returncode == 1
    assert r.stdout.endswith(fenced_after("Parallel execution shows a summary at the end:"))
    for name in (
        "infrastructure_check",
        "production_deploy",
        "health_checks",
        "deploy_api",
        "metrics_collection",
    ):
        r = run_group(examples, name)
        assert r.returncode == 0, (name, r.stdout, r.stderr)
    assert run_group(examples, "data_import").returncode == 1
    after = {k: v for k, v in hash_tree(examples).items() if k.endswith(".yaml")}
    assert after == before
