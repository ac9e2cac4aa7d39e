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


def test_docs_guide_is_the_users_guide():
    """docs/EXECUTION_MODES.md is the user's guide word for word (when the original is here)."""
    from helpers import SHARED_GUIDE

    shipped = (ROOT / "docs" / "EXECUTION_MODES.md").read_text()
    assert "## Parallel Execution" in shipped
    if SHARED_GUIDE.exists():
        assert shipped == SHARED_GUIDE.read_text()
