"""The fuzzed loader: arbitrary YAML documents and arbitrary structures shaped like the
schema, fed to the loader and to the real `validate` and `run-group`.

The only outcomes allowed are success or a ConfigError (exit 0 or exit 2 with a
message naming a file): never another exception, a traceback, a hang or a file
written by a refused command.  The examples here call config.load_config in-process
(fast); a smaller sample runs the real CLI (test_fuzz_cli.py, with these strategies).

Profiles: ``ci`` (the default: a few thousand examples) and ``dev``
(``HYPOTHESIS_PROFILE=dev``, a quick run).  The profile is applied to these tests
only, never loaded globally, so other modules keep their own settings.
"""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, example, find, given, settings
from hypothesis import strategies as st

from script_monitor.config import load_config
from script_monitor.errors import ConfigError

pytestmark = [pytest.mark.fault, pytest.mark.slow]

settings.register_profile(
    "ci",
    max_examples=2500,
    deadline=timedelta(seconds=10),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    max_examples=200,
    deadline=timedelta(seconds=10),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
if PROFILE not in ("ci", "dev"):
    PROFILE = "ci"
IN_PROCESS = settings(settings.get_profile(PROFILE))
SUBPROCESS = settings(
    settings.get_profile(PROFILE),
    max_examples=150 if PROFILE == "ci" else 20,
    deadline=None,  # a CLI start takes ~0.3 s: a hang is caught by the subprocess timeout
)

FILES = ("config.yaml", "scripts.yaml", "groups.yaml")

# ---------------------------------------------------------------- strategies

YAML_TOKENS = [
    "scripts:",
    "groups:",
    "execution:",
    "paths:",
    "\n",
    "\n  ",
    "\n    ",
    "- ",
    "name: ",
    "command: ",
    "timeout: ",
    "env: ",
    "schedule: ",
    "stop_on_error: ",
    "max_parallel_workers: ",
    ": ",
    "? ",
    "&a ",
    "*a",
    "&b ",
    "*b",
    "!!str ",
    "!!int ",
    "!!binary ",
    "!!python/object ",
    "!!set ",
    "!!omap ",
    "<<: ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "'",
    '"',
    "|",
    ">",
    "#",
    "---",
    "...",
    "%YAML 1.1\n",
    "%TAG ! x\n",
    "\t",
    "\\",
    "\x00",
    "\ufeff",
    "~",
    "null",
    "true",
    "1e400",
    "-0",
    "0x1F",
    "0o7",
    ".inf",
    ".nan",
    "2024-01-01",
    "*/5 * * * *",
    "é",
    "💥",
]

yaml_text = st.lists(st.one_of(st.sampled_from(YAML_TOKENS), st.text(max_size=6)), max_size=60).map(
    "".join
)

NAMES = ["a", "b", "c", "x.y", "_", "-", "..", ".", "a/b", "", "名前", "a" * 129]
NAME = st.one_of(st.sampled_from(NAMES[:6]), st.sampled_from(NAMES), st.text(max_size=8))
scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["true", "1", "-1", "", " ", "0.5", "keep", "serial", "\x00"]),
)
anything = st.recursive(
    scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.text(max_size=8), st.integers(), st.none()), inner, max_size=4
        ),
    ),
    max_leaves=12,
)
env_name = st.one_of(
    st.sampled_from(["A", "PATH_X", "_x1", "1A", "A-B", "A=B", ""]), st.text(max_size=6)
)
small_seconds = st.sampled_from([0, 1, 30, 300.5, 1e10, 1e308, float("inf")])
cron = st.one_of(
    st.sampled_from(
        [
            "*/5 * * * *",
            "0 2 * * mon-fri",
            "@daily",
            "@reboot",
            "61 * * * *",
            "* * * *",
            "0 0 31 2 *",
            "*/0 * * * *",
            "0-59/7 1,2 L * *",
            "",
            "@every 5m",
            "0 0 * * 7",
        ]
    ),
    st.text(max_size=20),
)
timezone = st.one_of(
    st.sampled_from(
        [
            "UTC",
            "Europe/Berlin",
            "local",
            "Mars/Olympus",
            "../../etc/passwd",
            "/etc/localtime",
            "UTC\x00",
            "",
            "Etc/GMT+14",
        ]
    ),
    st.text(max_size=10),
)


def fields_for(safe: bool):
    """(field, mapping) builders: for the CLI sample (``safe``) mostly valid values."""
    n_good = 12 if safe else 2

    def field(good, bad=anything):
        """A key's value: mostly plausible, sometimes anything at all."""
        # one_of would fold repeated branches: pick the branch by a uniform index instead
        return st.sampled_from(range(n_good + 1)).flatmap(lambda i: good if i else bad)

    def mapping(fields: dict, required: tuple = ()):
        """A dict with any subset of ``fields`` and, sometimes, unknown keys."""
        needed = {k: v for k, v in fields.items() if safe and k in required}
        rest = {k: v for k, v in fields.items() if k not in needed}
        base = st.fixed_dictionaries(needed, optional=rest)
        extra = st.dictionaries(st.text(max_size=6), anything, max_size=2)
        extra = st.sampled_from(range(n_good + 1)).flatmap(lambda i: st.just({}) if i else extra)
        return st.tuples(base, extra).map(lambda t: {**t[1], **t[0]})

    return field, mapping


def script_fields(safe: bool) -> dict:
    field, _ = fields_for(safe)
    name = st.sampled_from(["a", "b", "c"]) if safe else NAME
    command = st.sampled_from(["true", ["true"], ": ok", "exit 0"])
    return {
        "name": field(name),
        "command": command if safe else field(command | st.text(max_size=10)),
        "description": field(st.text(max_size=20)),
        "timeout": field(
            small_seconds, st.one_of(st.floats(max_value=-0.001), st.text(max_size=3))
        ),
        "env": field(st.dictionaries(env_name, st.one_of(scalar, st.text(max_size=8)), max_size=3)),
        "cwd": field(st.just(".")) if safe else field(st.text(max_size=10)),
        "log_limit": field(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["count", "age", "size"]), "value": st.integers()}
            )
        ),
        "env_file": field(st.sampled_from(["ok.env", "missing.env", "../ok.env", ""])),
        "secret_env": field(st.lists(env_name, max_size=3)),
        "leftovers": field(st.sampled_from(["keep", "kill", "maybe"])),
    }


def group_fields(safe: bool) -> dict:
    field, _ = fields_for(safe)
    name = st.sampled_from(["g", "h"]) if safe else NAME
    member = st.sampled_from(["a", "b", "c"]) if safe else NAME
    return {
        "name": field(name),
        "description": field(st.text(max_size=20)),
        "execution": field(st.sampled_from(["serial", "parallel", "both"])),
        "stop_on_error": field(st.booleans()),
        "schedule": field(cron),
        "scripts": field(st.lists(member, max_size=4)),
        "max_parallel_workers": field(
            st.one_of(st.integers(min_value=-3, max_value=8), st.sampled_from([10**9, 2**64]))
        ),
        "timezone": field(timezone),
        "overlap": field(st.sampled_from(["skip", "queue", "allow", "never"])),
        "catchup": field(st.sampled_from(["skip", "latest", "all"])),
    }


def settings_fields(safe: bool) -> dict:
    field, mapping = fields_for(safe)
    rel_path = st.sampled_from(["logs", "state", "x/y", "."])
    path = rel_path if safe else st.one_of(rel_path, st.text(max_size=10))
    source = st.sampled_from(["scripts.yaml", "groups.yaml", "other.yaml", "scripts", "."])
    return {
        "execution": field(
            mapping(
                {
                    "max_parallel_workers": field(st.integers(min_value=-2, max_value=10**12)),
                    "default_timeout": field(small_seconds),
                    "kill_grace": field(st.sampled_from([0, 1, 2.5])),
                }
            )
        ),
        "default_log_limit": field(
            mapping(
                {"type": field(st.sampled_from(["count", "age"])), "value": field(st.integers())}
            )
        ),
        "paths": field(
            mapping(
                {
                    "log_dir": field(path),
                    "state_dir": field(path),
                    "scripts_file": field(source),
                    "groups_file": field(source),
                }
            )
        ),
        "scheduling": field(
            mapping({"enabled": field(st.booleans()), "timezone": field(timezone)})
        ),
        "validation": field(
            mapping(
                {
                    "strict": field(st.booleans()),
                    "warn_unused_scripts": field(st.booleans()),
                    "warn_empty_groups": field(st.booleans()),
                }
            )
        ),
        "display": field(
            mapping({"use_colors": field(st.booleans()), "date_format": field(st.text(max_size=8))})
        ),
        "env_file": field(st.sampled_from(["ok.env", "missing.env"])),
        "secret_env": field(st.lists(env_name, max_size=3)),
    }


def items(key: str, fields: dict, safe: bool, required: tuple):
    """The top level of scripts.yaml / groups.yaml: usually right, sometimes not."""
    field, mapping = fields_for(safe)
    unique = (lambda d: str(d.get("name"))) if safe else None  # duplicates: in-process only
    listed = st.lists(mapping(fields, required), max_size=4, unique_by=unique)
    return field(listed.map(lambda xs: {key: xs}))


def shaped(safe: bool):
    """The three files, each present or not, built from schema-shaped data."""
    field, mapping = fields_for(safe)
    return st.fixed_dictionaries(
        {},
        optional={
            "config.yaml": field(mapping(settings_fields(safe))),
            "scripts.yaml": items("scripts", script_fields(safe), safe, ("name", "command")),
            "groups.yaml": items("groups", group_fields(safe), safe, ("name", "scripts")),
        },
    )


# ---------------------------------------------------------------- checks


def write_config(root: Path, files: dict[str, object]) -> None:
    """Write each document as YAML (text documents are written as they are)."""
    (root / "ok.env").write_text("TOKEN=abc123\n")
    for name, doc in files.items():
        if isinstance(doc, bytes):
            (root / name).write_bytes(doc)
        elif isinstance(doc, str):
            (root / name).write_text(doc, encoding="utf-8", errors="surrogatepass")
        else:
            (root / name).write_text(yaml.safe_dump(doc, allow_unicode=True))


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and modification time."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st_ = p.lstat()
            out[str(p.relative_to(root))] = (st_.st_size, st_.st_mtime_ns)
    return out


def load_checked(root: Path) -> bool:
    """load_config either succeeds or raises ConfigError with located messages; no writes."""
    before = snapshot(root.parent)
    try:
        load_config(root)
        ok = True
        event("loader: valid")
    except ConfigError as e:
        assert e.problems, "a ConfigError without a problem"
        for problem in e.problems:
            assert problem.message.strip()
            assert problem.file is not None, f"problem without a file: {problem}"
        ok = False
        event("loader: ConfigError")
    assert snapshot(root.parent) == before, "load_config wrote a file"
    return ok


def fresh_root() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="smfuzz-")


# ---------------------------------------------------------------- in-process


ALIAS_BOMB = "\n".join(
    ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    + ["scripts:", "  - name: a", "    command: *a8"]
)


@IN_PROCESS
@given(
    which=st.sampled_from(FILES),
    text=st.one_of(yaml_text, st.binary(max_size=80)),
)
@example(which="scripts.yaml", text=ALIAS_BOMB)
@example(which="scripts.yaml", text="scripts: &a\n  - *a\n")
@example(which="scripts.yaml", text="scripts:\n" + "  - [" * 2000 + "]" * 2000 + "\n")
@example(which="config.yaml", text="!!python/object/apply:os.system ['touch pwned']")
@example(which="groups.yaml", text="\ufeffgroups: []\n")
@example(which="scripts.yaml", text=b"scripts:\n  - name: \xff\xfe\n")
def test_arbitrary_yaml_text_loads_or_raises_config_error(which, text):
    """Pass: any text or bytes as a config file -> Config or ConfigError; no write, no hang."""
    with fresh_root() as tmp:
        root = Path(tmp) / "conf"
        root.mkdir()
        write_config(root, {which: text})
        load_checked(root)
        assert not (root / "pwned").exists()


@IN_PROCESS
@given(files=shaped(safe=False))
def test_schema_shaped_structures_load_or_raise_config_error(files):
    """Pass: any structure shaped like the schema -> Config or ConfigError; no write, no hang."""
    with fresh_root() as tmp:
        root = Path(tmp) / "conf"
        root.mkdir()
        write_config(root, files)
        load_checked(root)


def first_group(files: dict) -> str:
    doc = files.get("groups.yaml")
    if isinstance(doc, dict) and isinstance(doc.get("groups"), list):
        for g in doc["groups"]:
            # A command line cannot carry a NUL, so no user can ask for such a name.
            if isinstance(g, dict) and isinstance(g.get("name"), str) and "\0" not in g["name"]:
                return g["name"]
    return "no_such_group"


def test_shaped_strategy_reaches_valid_configurations_with_groups():
    """Pass: the schema-shaped strategy also builds valid configs (the fuzzer tests success too)."""

    def valid_with_group(files: dict) -> bool:
        with fresh_root() as tmp:
            root = Path(tmp) / "conf"
            root.mkdir()
            write_config(root, files)
            try:
                return bool(load_config(root).groups)
            except ConfigError:
                return False

    found = find(shaped(safe=True), valid_with_group, settings=settings(max_examples=5000))
    assert first_group(found) != "no_such_group"
