"""The bundled examples run end to end through the real CLI."""

import shutil

from helpers import ROOT, cli


def test_examples_validate_and_run(tmp_path):
    conf = tmp_path / "examples"
    shutil.copytree(ROOT / "examples", conf, ignore=shutil.ignore_patterns("logs", ".script-*"))
    r = cli("--config-dir", str(conf), "validate")
    assert r.returncode == 0, r.stderr
    r = cli("--config-dir", str(conf), "run-group", "production_deploy")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Running production_deploy...\nRunning run_tests... ✓\n")
    assert "Traceback" not in r.stderr


def test_the_guide_the_tests_run_is_the_one_in_docs():
    """tests/test_guide.py runs every example of docs/EXECUTION_MODES.md, the published
    guide, and nothing outside the repository."""
    from helpers import GUIDE

    assert GUIDE == ROOT / "docs" / "EXECUTION_MODES.md"
    assert "## Parallel Execution" in GUIDE.read_text()
