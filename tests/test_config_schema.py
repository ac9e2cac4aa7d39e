"""The JSON Schema of the configuration files: generated from the structures
``validate`` applies, published in docs/schema/, named by the first line of every file
``init`` writes, and satisfied by every example."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from helpers import ROOT, cli, write
from script_monitor.commands.schema import FILE_NAMES, KINDS, json_schema
from script_monitor.config import read_yaml

PUBLISHED = ROOT / "docs" / "schema"
TEMPLATES = ROOT / "src" / "script_monitor" / "templates"
MODELINE = "# yaml-language-server: $schema="


def _validator(kind: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json_schema(kind))


def _load(path: Path):
    """The file as script-monitor reads it (YAML 1.1 keys such as `on:` stay text)."""
    problems: list = []
    doc = read_yaml(path, problems, empty_ok=True)
    assert doc is not None, problems
    return doc.data


def _errors(kind: str, data) -> list[str]:
    return [e.message for e in _validator(kind).iter_errors(data)]


@pytest.mark.parametrize("kind", KINDS)
def test_the_schema_is_valid_draft_2020_12(kind):
    schema = json_schema(kind)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("kind", KINDS)
def test_the_published_schema_is_what_the_command_prints(kind):
    r = cli("schema", kind)
    assert r.returncode == 0, r.stderr
    published = (PUBLISHED / FILE_NAMES[kind]).read_text()
    assert r.stdout == published, (
        f"docs/schema/{FILE_NAMES[kind]} is stale: "
        f"script-monitor schema {kind} > docs/schema/{FILE_NAMES[kind]}"
    )
    assert json.loads(published) == json_schema(kind)


def test_an_unknown_kind_is_a_usage_error():
    r = cli("schema", "checkz")
    assert r.returncode == 2
    assert "invalid choice" in r.stderr


@pytest.mark.parametrize(
    "path",
    sorted([*ROOT.glob("examples/*.yaml"), *TEMPLATES.glob("*.yaml")]),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_every_example_file_satisfies_its_schema_and_names_it(path):
    kind = path.stem
    assert kind in KINDS
    assert _errors(kind, _load(path)) == []
    first = path.read_text().splitlines()[0]
    assert first.startswith(MODELINE), first
    named = (path.parent / first.removeprefix(MODELINE)).resolve()
    if path.parent == TEMPLATES:  # init writes the schemas beside the files
        assert named == TEMPLATES / ".schema" / FILE_NAMES[kind]
    else:
        assert named == PUBLISHED / FILE_NAMES[kind]
        assert named.is_file()


def test_init_writes_the_schemas_its_files_name(tmp_path):
    target = tmp_path / "monitor"
    r = cli("init", str(target))
    assert r.returncode == 0, r.stderr
    for kind in KINDS:
        first = (target / f"{kind}.yaml").read_text().splitlines()[0]
        named = target / first.removeprefix(MODELINE)
        assert json.loads(named.read_text()) == json_schema(kind)
    assert cli("--config-dir", str(target), "validate").returncode == 0


BROKEN = {
    "scripts": [
        ("scripts:\n  - {name: a, command: x, timeot: 5}\n", "unknown key"),
        ("scripts:\n  - {name: 'a b', command: x}\n", "a bad name"),
        ("scripts:\n  - {name: a}\n", "no command"),
        ("scripts:\n  - {name: a, command: x, leftovers: maybe}\n", "a bad choice"),
        ("scripts:\n  - {name: a, command: x, timeout: -1}\n", "a negative timeout"),
        ("scripts:\n  - {name: a, command: x, retries: {count: 1, backof: 2}}\n", "a typo"),
        ("scripts:\n  - {name: a, command: x}\nextra: 1\n", "an unknown top-level key"),
    ],
    "groups": [
        ("groups:\n  - {name: g, execution: sideways}\n", "a bad mode"),
        ("groups:\n  - {name: g, max_parallel_workers: 0}\n", "a cap of 0"),
        ("groups:\n  - {name: g, overlap: maybe}\n", "a bad overlap"),
    ],
    "config": [
        ("execution: {max_parallel_workers: 0}\n", "a cap of 0"),
        ("web: {port: 70000}\n", "a port out of range"),
        ("notifications: {default: {on: [explosion]}}\n", "an unknown event"),
        ("colour: true\n", "an unknown key"),
    ],
    "checks": [
        ("checks:\n  - {name: c, period: 0}\n", "a period of 0"),
        ("checks:\n  - {name: c, period: 60, key: short}\n", "a short key"),
        ("checks:\n  - {name: c, period: 60, grace: -1}\n", "a negative grace"),
        ("checks:\n  - {name: c, priod: 60}\n", "a typo"),
    ],
}
FILE_OF = {
    "scripts": "scripts.yaml",
    "groups": "groups.yaml",
    "config": "config.yaml",
    "checks": "checks.yaml",
}
GOOD = {
    "scripts": "scripts:\n  - {name: a, command: 'true'}\n",
    "groups": "groups:\n  - {name: g, scripts: [a]}\n",
    "config": "",
    "checks": "checks:\n",
}


@pytest.mark.parametrize(
    ("kind", "text", "what"),
    [(kind, text, what) for kind, cases in BROKEN.items() for text, what in cases],
    ids=lambda v: v if isinstance(v, str) and " " in v else None,
)
def test_the_schema_rejects_what_validate_rejects(tmp_path, kind, text, what):
    """Schema and validation agree: each broken file fails both (so neither drifts)."""
    for name, good in GOOD.items():
        write(tmp_path, FILE_OF[name], good)
    path = write(tmp_path, FILE_OF[kind], text)
    assert _errors(kind, _load(path)), f"the schema accepts {what}"
    r = cli("--config-dir", str(tmp_path), "validate")
    assert r.returncode == 2, f"validate accepts {what}: {r.stdout}"


def test_the_schema_accepts_every_form_validate_accepts(tmp_path):
    write(
        tmp_path,
        "scripts.yaml",
        """
        scripts:
          - name: a.b-c_1
            command: [sleep, 1, 0.5]
            env: {A: 1, B: true, C: x, D: 1.5}
            retries: 2
            notify: false
            alerts: [{pattern: ERR}]
          - name: b
            command: 'true'
            retries: {count: 1, delay: 0.5, exit_codes: [75]}
            notify: {channels: [ops], on: [failure, output]}
            log_limit: {type: age, value: 7}
        """,
    )
    write(tmp_path, "groups.yaml", "groups:\n")
    write(
        tmp_path,
        "checks.yaml",
        """
        checks:
          - {name: nightly-backup, schedule: "30 2 * * *", timezone: Europe/Paris, grace: 3600}
          - name: beat
            period: 60.5
            key: 0123456789abcdef-_x
            description: every minute
            notify: {on: [missed, failure, recovery]}
        """,
    )
    write(
        tmp_path,
        "config.yaml",
        """
        notifications:
          channels: {ops: ["json://127.0.0.1:9/x"]}
          default: {channels: [ops], on: [failure]}
        """,
    )
    r = cli("--config-dir", str(tmp_path), "validate")
    assert r.returncode == 0, r.stderr
    for kind in KINDS:
        assert _errors(kind, _load(tmp_path / FILE_OF[kind])) == [], kind
