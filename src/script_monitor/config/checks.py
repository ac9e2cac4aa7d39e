"""Checks across items and files: names, members, dependencies, schedules, time zones,
channels, env files and the permissions of the files that hold secrets."""

import os
import re
from pathlib import Path

from ..errors import Problem
from .schema import (
    CHECKS_FILE,
    DEFAULT_ON,
    AnomalyRule,
    AnomalySpec,
    Check,
    Config,
    Group,
    NotifySpec,
    Script,
    Settings,
    parse_size,
)
from .yamlread import Document


def _check_item(
    obj: Script | Group, doc: Document, base: tuple, label: str, problems: list
) -> None:
    if isinstance(obj, Script):
        if isinstance(obj.command, list) and any(not a for a in obj.command[:1]):
            problems.append(
                Problem.error(doc.path, doc.line((*base, "command")), f"{label}: empty program")
            )
        limits = obj.limits
        if limits is not None and limits.max_rss is not None and parse_size(limits.max_rss) is None:
            problems.append(
                Problem.error(
                    doc.path,
                    doc.line((*base, "limits", "max_rss")),
                    f"{label}: key 'limits.max_rss': not a size: {limits.max_rss!r}"
                    " (a number of bytes, or with a unit: 512K, 100M, 2G, 1T)",
                )
            )
        if obj.anomaly is not None:
            _check_anomaly(obj.anomaly, doc, (*base, "anomaly"), label, problems)
        return
    where = doc.line(base)
    _check_when(obj, doc, base, label, problems)
    if obj.execution == "parallel" and obj.stop_on_error:
        problems.append(
            Problem.warning(
                doc.path,
                doc.line((*base, "stop_on_error")) or where,
                f"{label}: stop_on_error has no effect on a parallel group",
            )
        )


def _check_when(
    obj: Group | Check, doc: Document, base: tuple, label: str, problems: list[Problem]
) -> None:
    """A group's or a check's cron expression and time zone are valid."""
    if obj.schedule is not None:
        reason = cron_problem(obj.schedule)
        if reason:
            problems.append(
                Problem.error(
                    doc.path,
                    doc.line((*base, "schedule")),
                    f"{label}: invalid cron expression {obj.schedule!r}: {reason}",
                )
            )
    if obj.timezone is not None and not valid_timezone(obj.timezone):
        problems.append(
            Problem.error(
                doc.path,
                doc.line((*base, "timezone")),
                f"{label}: unknown timezone {obj.timezone!r}",
            )
        )


def _check_check_fields(
    obj: Check, doc: Document, base: tuple, label: str, problems: list[Problem]
) -> None:
    """A check has exactly one of schedule and period; its cron and time zone are valid."""
    if (obj.schedule is None) == (obj.period is None):
        problems.append(
            Problem.error(
                doc.path, doc.line(base), f"{label}: give exactly one of schedule or period"
            )
        )
    _check_when(obj, doc, base, label, problems)


def _check_anomaly(
    rule: AnomalyRule | AnomalySpec, doc: Document, base: tuple, label: str, problems: list
) -> None:
    """``fast`` below ``slow``; a ``window`` that can hold ``min_runs`` runs.  Only the keys
    given here are compared (a script's others come from the global rule)."""
    if rule.fast is not None and rule.slow is not None and rule.fast >= rule.slow:
        problems.append(
            Problem.error(
                doc.path,
                doc.line((*base, "fast")),
                f"{label}: key 'anomaly.fast' ({rule.fast:g}) must be below anomaly.slow"
                f" ({rule.slow:g})",
            )
        )
    if rule.window is not None and rule.min_runs is not None and rule.window < rule.min_runs:
        problems.append(
            Problem.error(
                doc.path,
                doc.line((*base, "window")),
                f"{label}: key 'anomaly.window' ({rule.window}) must be at least"
                f" anomaly.min_runs ({rule.min_runs}): no run would ever be judged",
            )
        )


def _check_checks(config: Config, problems: list[Problem]) -> None:
    """Checks share the scripts' namespace (a ping names one), and no key is a name."""
    names = set(config.checks)
    keys: dict[str, str] = {}
    for check in config.checks.values():
        file, line = config.origin[f"check:{check.name}"]
        for kind, taken in (("script", config.scripts), ("group", config.groups)):
            if check.name in taken:
                at_file, at_line = config.origin[f"{kind}:{check.name}"]
                problems.append(
                    Problem.error(
                        file,
                        line,
                        f"check '{check.name}': the name is taken by a {kind} (defined in"
                        f" {at_file.name}:{at_line}); checks share the scripts' names",
                    )
                )
        if check.key is None:
            continue
        if check.key in names or check.key in keys:
            other = check.key if check.key in names else keys[check.key]
            problems.append(
                Problem.error(
                    file,
                    line,
                    f"check '{check.name}': its key is the"
                    f" {'name' if check.key in names else 'key'} of check '{other}'",
                )
            )
        keys[check.key] = check.name


def _check_settings(settings: Settings, doc: Document, problems: list) -> None:
    _check_anomaly(settings.anomaly, doc, ("anomaly",), "config", problems)
    celery = settings.celery
    if celery.broker_url.startswith("sentinel://") and not celery.master_name:
        line = doc.line(("celery", "broker_url"))
        problems.append(
            Problem.error(
                doc.path, line, "config: a sentinel:// broker_url needs celery.master_name"
            )
        )
    tz = settings.scheduling.timezone
    if not valid_timezone(tz):
        line = doc.line(("scheduling", "timezone"))
        problems.append(Problem.error(doc.path, line, f"config: unknown timezone {tz!r}"))


def _check_web_tokens(settings: Settings, doc: Document, problems: list, origin: dict) -> None:
    seen: set[str] = set()
    origin["setting:web.token"] = (doc.path, doc.line(("web", "token")) or 1)
    for i, entry in enumerate(settings.web.tokens):
        line = doc.line(("web", "tokens", i))
        origin[f"web.tokens:{i}"] = (doc.path, line)
        label = f"web.tokens[{i}] '{entry.name}'"
        if entry.name in seen:
            problems.append(Problem.error(doc.path, line, f"{label}: the name is used twice"))
        seen.add(entry.name)
        if (entry.token is None) == (entry.token_file is None):
            problems.append(
                Problem.error(doc.path, line, f"{label}: give exactly one of token or token_file")
            )


def _check_effective_anomaly(config: Config, problems: list[Problem]) -> None:
    """A script's ``anomaly`` over the global one: the pairs its own keys do not settle
    alone (``_check_anomaly`` told those)."""
    for script in config.scripts.values():
        own = script.anomaly
        if own is None:
            continue
        rule = config.anomaly_for(script)
        file, line = config.origin[f"script:{script.name}"]
        label = f"script '{script.name}'"
        if rule.fast >= rule.slow and (own.fast is None or own.slow is None):
            problems.append(
                Problem.error(
                    file,
                    line,
                    f"{label}: anomaly.fast ({rule.fast:g}) must be below anomaly.slow"
                    f" ({rule.slow:g}; one of them from config.yaml)",
                )
            )
        if rule.window < rule.min_runs and (own.window is None or own.min_runs is None):
            problems.append(
                Problem.error(
                    file,
                    line,
                    f"{label}: anomaly.window ({rule.window}) must be at least anomaly.min_runs"
                    f" ({rule.min_runs}; one of them from config.yaml): no run would ever be"
                    " judged",
                )
            )


def _cross_check(config: Config, problems: list[Problem]) -> None:
    _check_effective_anomaly(config, problems)
    used: set[str] = set()
    checks = config.settings.validation
    for group in config.groups.values():
        file, line = config.origin[f"group:{group.name}"]
        for member in group.scripts:
            used.add(member)
            if member not in config.scripts:
                at_file, at_line = config.origin.get(f"member:{group.name}:{member}", (file, line))
                problems.append(
                    Problem.error(
                        at_file, at_line, f"group '{group.name}': unknown script '{member}'"
                    )
                )
        if len(set(group.scripts)) != len(group.scripts):
            problems.append(
                Problem.warning(file, line, f"group '{group.name}': lists a script twice")
            )
        if group.depends_on:
            _check_depends_on(config, group, file, line, problems)
        if not group.scripts and checks.warn_empty_groups:
            problems.append(Problem.warning(file, line, f"group '{group.name}' has no scripts"))
    if checks.warn_unused_scripts and config.groups:
        for name in config.scripts:
            if name not in used:
                file, line = config.origin[f"script:{name}"]
                problems.append(Problem.warning(file, line, f"script '{name}' is not in any group"))


def _check_depends_on(
    config: Config, group: Group, file: Path, line: int, problems: list[Problem]
) -> None:
    """Members only, no cycles, and in a serial group every dependency listed first."""
    label = f"group '{group.name}'"
    where = config.origin.get(f"depends:{group.name}", {})
    members = set(group.scripts)
    if len(members) != len(group.scripts):
        problems.append(
            Problem.error(file, line, f"{label}: a group with depends_on lists a script twice")
        )
    for node in group.depends_on:
        at = where.get(node, line)
        for dep in [node, *group.needs(node)]:
            if dep not in members:
                problems.append(
                    Problem.error(
                        file, at, f"{label}: depends_on names '{dep}', which is not in the group"
                    )
                )
    cycle = find_cycle(group)
    if cycle:
        at = where.get(cycle[0], line)
        problems.append(Problem.error(file, at, f"{label}: dependency cycle {' -> '.join(cycle)}"))
    elif group.execution == "serial":
        order = {name: i for i, name in enumerate(group.scripts)}
        for node in group.depends_on:
            for dep in group.needs(node):
                if dep in order and node in order and order[dep] > order[node]:
                    problems.append(
                        Problem.error(
                            file,
                            where.get(node, line),
                            f"{label}: '{node}' depends on '{dep}', which is listed after it "
                            "(a serial group runs in the listed order)",
                        )
                    )


def find_cycle(group: Group) -> list[str] | None:
    """A dependency cycle of the group as ``[a, b, a]``, or None (iterative: no depth limit)."""
    done: set[str] = set()
    for root in [*group.scripts, *group.depends_on]:
        if root in done:
            continue
        path = [root]
        on_path = {root}
        stack = [iter(group.needs(root))]
        while stack:
            dep = next(stack[-1], None)
            if dep is None:
                stack.pop()
                node = path.pop()
                on_path.discard(node)
                done.add(node)
                continue
            if dep in on_path:
                return [*path[path.index(dep) :], dep]
            if dep not in done:
                path.append(dep)
                on_path.add(dep)
                stack.append(iter(group.needs(dep)))
    return None


def env_files(config: Config) -> list[tuple[str, str, Path]]:
    """(origin key, label, path) of every configured env_file."""
    out = []
    if config.settings.env_file:
        out.append(("setting:env_file", "config", config.path(config.settings.env_file)))
    for s in config.scripts.values():
        if s.env_file:
            out.append((f"script:{s.name}", f"script '{s.name}'", config.path(s.env_file)))
    return out


def read_env_file(path: Path) -> dict[str, str]:
    """Variables from a dotenv file (python-dotenv syntax)."""
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def fingerprint(config: Config) -> tuple:
    """Cheap identity of every file and directory the configuration comes from.

    Not the config directory itself: logs/ and the state directory live there.
    """
    root = config.root
    paths = {root / "config.yaml", *config.files, *(p.parent for p in config.files)}
    paths.discard(root)
    for value, default in (
        (config.settings.paths.scripts_file, "scripts.yaml"),
        (config.settings.paths.groups_file, "groups.yaml"),
        (CHECKS_FILE, CHECKS_FILE),
    ):
        paths.update({config.path(value), root / default, (root / default).with_suffix("")})
    out: list[tuple[str, int | None, int | None, int | None]] = []
    for p in sorted(paths):
        try:
            st = os.stat(p)
            out.append((str(p), st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append((str(p), None, None, None))
    return tuple(out)


def _check_env_files(config: Config, problems: list[Problem]) -> None:
    for key, label, path in env_files(config):
        if not path.is_file():
            file, line = config.origin.get(key, (None, None))
            problems.append(Problem.error(file, line, f"{label}: env_file {path} does not exist"))


def _check_permissions(config: Config, problems: list[Problem]) -> None:
    """Refuse (as root) or warn about files others could change: they run as us.

    cron and job runners refuse such files for the same reason.
    """
    euid = os.geteuid()
    # A YAML file's directory counts too: whoever may write to scripts/ may add a script.
    dirs = sorted({f.parent for f in config.files} - {config.root})
    paths = [config.root, *dirs, *config.files, *(p for _, _, p in env_files(config))]
    make = Problem.error if euid == 0 else Problem.warning
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        if st.st_mode & 0o022:
            problems.append(
                make(
                    path,
                    None,
                    (
                        "writable by group or others, so another user could make script-monitor "
                        f"run their commands; fix with: chmod go-w {path}"
                    ),
                )
            )
        if st.st_uid != euid:
            problems.append(
                make(
                    path,
                    None,
                    (
                        f"owned by uid {st.st_uid}, not by the user running script-monitor (uid "
                        f"{euid}); fix with: chown {euid} {path}"
                    ),
                )
            )


def _check_secret_files(config: Config, problems: list[Problem]) -> None:
    """Warn about files holding secrets that other users may read (docs/SECURITY.md)."""
    web = config.settings.web
    paths = [(p, "holds secrets (env_file)") for _, _, p in env_files(config)]
    paths += [(config.path(t.token_file), "holds a web token") for t in web.tokens if t.token_file]
    keyed = {config.origin[f"check:{c.name}"][0] for c in config.checks.values() if c.key}
    paths += [(file, "holds check keys") for file in sorted(keyed)]
    literal = [t.token for t in web.tokens if t.token and "${" not in t.token]
    if (web.token and "${" not in web.token) or literal:
        paths.append((config.root / "config.yaml", "holds a web token"))
    for path, what in paths:
        try:
            mode = path.stat().st_mode
        except OSError:
            continue
        if mode & 0o004:
            problems.append(
                Problem.warning(
                    path, None, f"{what} and is readable by others; fix with: chmod o-r {path}"
                )
            )


def valid_timezone(name: str) -> bool:
    if name == "local":
        return True
    from zoneinfo import ZoneInfo

    try:
        ZoneInfo(name)
    except (ValueError, OSError, LookupError):
        return False
    return True


def cron_problem(expr: str) -> str | None:
    """Why ``expr`` is not a valid crontab(5) expression, or None when it is."""
    from ..cron import parse_problem

    return parse_problem(expr)


# ------------------------------------------------- notifications (docs/NOTIFICATIONS.md)


def _check_notifications(
    settings: Settings, doc: Document, problems: list[Problem], origin: dict
) -> None:
    """config.yaml: default channels exist; every URL looks like one (``validate`` parses
    it with Apprise: see notify.channels.channel_problems)."""
    section = settings.notifications
    base = ("notifications",)
    if section.default.on is None:
        section.default.on = list(DEFAULT_ON)
    for name, urls in section.channels.items():
        for i, url in enumerate(urls):
            line = doc.line((*base, "channels", name, i))
            origin[f"channel:{name}:{i}"] = (doc.path, line)
            if "://" not in url:
                problems.append(
                    Problem.error(
                        doc.path, line, f"config: channel '{name}': not an Apprise URL: {url!r}"
                    )
                )
    for j, name in enumerate(section.default.channels or []):
        if name not in section.channels:
            line = doc.line((*base, "default", "channels", j))
            problems.append(Problem.error(doc.path, line, f"config: unknown channel '{name}'"))


def _check_notify_fields(
    obj: Script | Group | Check,
    doc: Document,
    base: tuple,
    label: str,
    problems: list,
    origin: dict,
) -> None:
    """Alert patterns compile; note where `notify.channels` is, for _check_notify_channels."""
    kind = {Script: "script", Group: "group"}.get(type(obj), "check")
    if isinstance(obj.notify, NotifySpec) and obj.notify.channels:
        for j, name in enumerate(obj.notify.channels):
            at = (doc.path, doc.line((*base, "notify", "channels", j)) or 1)
            origin[f"notify:{kind}:{obj.name}:{name}"] = at
    for k, alert in enumerate(getattr(obj, "alerts", [])):
        try:
            re.compile(alert.pattern)
        except (re.error, RecursionError, OverflowError) as e:
            line = doc.line((*base, "alerts", k, "pattern"))
            problems.append(
                Problem.error(
                    doc.path, line, f"{label}: invalid alert pattern {alert.pattern!r}: {e}"
                )
            )


def _check_notify_channels(config: Config, problems: list[Problem]) -> None:
    channels = config.settings.notifications.channels
    for key, where in config.origin.items():
        if key.startswith("notify:"):
            (file, line), (_, kind, name, channel) = where, key.split(":", 3)
            if channel not in channels:
                problems.append(
                    Problem.error(file, line, f"{kind} '{name}': unknown channel '{channel}'")
                )
