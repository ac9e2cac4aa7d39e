"""completion: shell completion scripts for bash, zsh and fish; and the hidden
``__complete`` verb those scripts call for script and group names.

The scripts are generated from the command line's own parser, so every verb and
option is offered as ``--help`` lists it.  Verbs and options are completed by the
shell alone; only script and group names need script-monitor: the scripts run
``script-monitor [--config-dir DIR] __complete scripts|groups`` (as typed on the line
being completed), which loads the configuration and prints one name a line.  Nothing
here is imported by any other command, and this module does not import ``cli``: the
``completion`` verb's arguments carry the function that builds the whole parser.

A positional argument is completed as script names when its help says "script name",
as group names when it says "group name" (or its dest is ``group``), as check names
when it says "check name", as setting keys
when its dest is ``key``, and as directories when its dest is ``directory``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import NamedTuple

from ..errors import EXIT_OK

NAMED = ("scripts", "groups", "checks")  # positionals completed by `__complete KIND`


class Option(NamedTuple):
    flags: list[str]
    help: str
    value: str | None  # None: a flag; "dir", "any", or "choices:a b c"


class Verb(NamedTuple):
    name: str
    help: str
    options: list[Option]
    positionals: list[str]  # scripts, groups, settings, dir, any, choices:a b c


def _option(action: argparse.Action) -> Option | None:
    if action.help == argparse.SUPPRESS:
        return None
    value = None
    if action.nargs != 0:
        if action.choices:
            value = "choices:" + " ".join(str(c) for c in action.choices)
        elif action.metavar == "DIR" or action.dest in ("directory", "output"):
            value = "dir"
        else:
            value = "any"
    return Option(list(action.option_strings), _plain(action.help or ""), value)


def _positional(action: argparse.Action) -> str:
    text = (action.help or "").lower()
    if action.choices:
        return "choices:" + " ".join(str(c) for c in action.choices)
    if "group name" in text or action.dest == "group":
        return "groups"
    if "script name" in text:
        return "scripts"
    if "check name" in text:
        return "checks"
    if action.dest == "key":
        return "settings"
    if action.dest == "directory":
        return "dir"
    return "any"


def _plain(text: str) -> str:
    return " ".join(text.replace("%(default)s", "").split())


Spec = tuple[list[Option], list[Verb]]


def spec(parser: argparse.ArgumentParser) -> Spec:
    """The global options and every verb (in ``--help``'s order), as ``parser`` defines
    them."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    options = [o for a in parser._actions if a.option_strings and (o := _option(a))]
    verbs = []
    for choice in sub._choices_actions:  # the listed verbs, with their help
        verb_parser = sub.choices[choice.dest]
        opts = [o for a in verb_parser._actions if a.option_strings and (o := _option(a))]
        pos = [_positional(a) for a in verb_parser._actions if not a.option_strings]
        verbs.append(Verb(choice.dest, _plain(choice.help or ""), opts, pos))
    return options, verbs


def setting_keys() -> list[str]:
    """Every dotted key ``get-setting`` takes."""
    import msgspec

    from ..config import Settings

    keys: list[str] = []

    def walk(struct: type, prefix: str) -> None:
        for field in msgspec.structs.fields(struct):
            key = prefix + field.name
            keys.append(key)
            kind = field.type
            if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
                walk(kind, key + ".")

    walk(Settings, "")
    return keys


# ---------------------------------------------------------------- commands


def cmd_completion(args: argparse.Namespace) -> int:
    described = spec(args.command_line())
    sys.stdout.write({"bash": bash, "zsh": zsh, "fish": fish}[args.shell](described))
    return EXIT_OK


def cmd_complete(args: argparse.Namespace) -> int:
    """The names the completion scripts offer: one a line, nothing else."""
    from . import load

    config = load(args, warn=False)
    if args.kind == "checks":
        names = list(config.checks)
    else:
        names = list(config.scripts if args.kind == "scripts" else config.groups)
    sys.stdout.write("".join(f"{n}\n" for n in names))
    return EXIT_OK


# ---------------------------------------------------------------- bash


def _words(values: Iterable[str]) -> str:
    return " ".join(values)


def bash(described: Spec) -> str:
    """The bash completion script."""
    options, verbs = described
    global_opts = _words(f for o in options for f in o.flags)
    takes_value = {v.name: [f for o in v.options if o.value for f in o.flags] for v in verbs}
    value_cases = []
    for v in verbs:
        for o in v.options:
            if o.value is None:
                continue
            pattern = "|".join(f'"{v.name} {f}"' for f in o.flags)
            value_cases.append(f"            {pattern}) {_bash_values(o.value)}; return ;;")
    verb_cases = []
    pos_cases = []
    for v in verbs:
        opts = _words(f for o in v.options for f in o.flags)
        takes = " ".join(takes_value[v.name])
        verb_cases.append(f'            {v.name}) opts="{opts}"; takes=" {takes} " ;;')
        for i, kind in enumerate(v.positionals):
            pos_cases.append(f'            "{v.name} {i}") {_bash_values(kind)}; return ;;')
    return BASH.format(
        verbs=_words(v.name for v in verbs),
        global_opts=global_opts,
        value_cases="\n".join(value_cases),
        verb_cases="\n".join(verb_cases),
        pos_cases="\n".join(pos_cases),
    )


def _bash_values(kind: str) -> str:
    if kind == "dir":
        return 'COMPREPLY=($(compgen -d -- "$cur")); compopt -o filenames 2>/dev/null'
    if kind in NAMED:
        return f"_script_monitor_names {kind}"
    if kind == "settings":
        return f'COMPREPLY=($(compgen -W "{_words(setting_keys())}" -- "$cur"))'
    if kind.startswith("choices:"):
        return f'COMPREPLY=($(compgen -W "{kind[8:]}" -- "$cur"))'
    return "COMPREPLY=()"  # a value only the user knows (a number, a run id)


BASH = r"""# bash completion for script-monitor (generated by `script-monitor completion bash`)
#
# Install it for your user (bash-completion loads it on first use):
#   script-monitor completion bash > ~/.local/share/bash-completion/completions/script-monitor
# or load it from ~/.bashrc:
#   eval "$(script-monitor completion bash)"
#
# Script and group names come from `script-monitor [--config-dir DIR] __complete scripts`.

_script_monitor_names() {{
    local prog=${{COMP_WORDS[0]/#\~/$HOME}}
    COMPREPLY=($(compgen -W "$("$prog" "${{cfg[@]}}" __complete "$1" 2>/dev/null)" -- "$cur"))
}}

_script_monitor() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}}
    local i=1 word verb="" verb_at=0 opts takes n=0
    local -a cfg=()
    COMPREPLY=()
    # bash splits --option=value at the "=": complete the value of --option
    if [[ $cur == = ]]; then
        cur=""
    elif [[ $prev == = ]]; then
        prev=${{COMP_WORDS[COMP_CWORD-2]}}
    fi
    while (( i < COMP_CWORD )); do
        word=${{COMP_WORDS[i]}}
        case $word in
            --config-dir)
                if [[ ${{COMP_WORDS[i+1]}} == = ]]; then ((i++)); fi
                if (( i + 1 < COMP_CWORD )); then
                    cfg=(--config-dir "${{COMP_WORDS[i+1]/#\~/$HOME}}")
                fi
                ((i += 2)); continue ;;
            --config-dir=*) cfg=(--config-dir "${{word#--config-dir=}}") ;;
            -*) ;;
            *) verb=$word; verb_at=$i; break ;;
        esac
        ((i++))
    done
    if [[ $prev == --config-dir && -z $verb ]]; then
        COMPREPLY=($(compgen -d -- "$cur")); compopt -o filenames 2>/dev/null; return
    fi
    if [[ -z $verb ]]; then
        if [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W "{global_opts}" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "{verbs}" -- "$cur"))
        fi
        return
    fi
    if [[ $prev == -* ]]; then
        case "$verb $prev" in
{value_cases}
        esac
    fi
    case $verb in
{verb_cases}
        *) return ;;
    esac
    for (( i = verb_at + 1; i < COMP_CWORD; i++ )); do
        word=${{COMP_WORDS[i]}}
        if [[ $word == -* ]]; then
            if [[ $takes == *" $word "* ]]; then
                if [[ ${{COMP_WORDS[i+1]}} == = ]]; then ((i++)); fi
                ((i++))
            fi
            continue
        fi
        ((n++))
    done
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return
    fi
    case "$verb $n" in
{pos_cases}
    esac
}}

complete -F _script_monitor script-monitor
"""


# ---------------------------------------------------------------- zsh


def _zq(text: str) -> str:
    """Text for inside an _arguments spec's [...] or a _describe item, single-quoted."""
    text = text.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]").replace(":", "\\:")
    return text.replace("'", "'\\''")


def _zsh_action(kind: str) -> str:
    if kind == "dir":
        return "_directories"
    if kind in NAMED:
        return f"_script_monitor_{kind}"
    if kind == "settings":
        return f"({' '.join(setting_keys())})"
    if kind.startswith("choices:"):
        return f"({kind[8:]})"
    return " "


def _zsh_option(o: Option) -> str:
    if len(o.flags) > 1:
        excl = f"'({' '.join(o.flags)})'"
        names = "{" + ",".join(o.flags) + "}"
    else:
        excl, names = "", o.flags[0]
    if o.value is None:
        return f"{excl}{names}'[{_zq(o.help)}]'"
    equals = "=" if names.startswith("--") else ""
    label = o.value if o.value in ("dir", "any") else "value"
    return f"{excl}{names}'{equals}[{_zq(o.help)}]:{label}:{_zsh_action(o.value)}'"


def zsh(described: Spec) -> str:
    """The zsh completion script."""
    options, verbs = described
    global_specs = []
    for o in options:
        if o.flags[0] in ("-h", "--version"):
            names = "{" + ",".join(o.flags) + "}" if len(o.flags) > 1 else o.flags[0]
            global_specs.append(f"'(- :)'{names}'[{_zq(o.help)}]'")
        else:
            global_specs.append(_zsh_option(o))
    items = "\n".join(f"    '{v.name}:{_zq(v.help)}'" for v in verbs)
    cases = []
    for v in verbs:
        specs = [_zsh_option(o) for o in v.options]
        specs += [
            f"'{i + 1}:{k.split(':')[0]}:{_zsh_action(k)}'" for i, k in enumerate(v.positionals)
        ]
        body = " \\\n            ".join(specs)
        cases.append(
            f"        ({v.name})\n          _arguments -s \\\n            {body} && ret=0 ;;"
        )
    return ZSH.format(
        global_specs=" \\\n    ".join(global_specs), items=items, cases="\n".join(cases)
    )


ZSH = r"""#compdef script-monitor
# zsh completion for script-monitor (generated by `script-monitor completion zsh`)
#
# Install it into a directory of your $fpath, e.g.:
#   mkdir -p ~/.zfunc && script-monitor completion zsh > ~/.zfunc/_script-monitor
#   # in ~/.zshrc, before compinit:  fpath=(~/.zfunc $fpath)
# or load it from ~/.zshrc, after compinit:
#   source <(script-monitor completion zsh)
#
# Script and group names come from `script-monitor [--config-dir DIR] __complete scripts`.

_script_monitor_verbs() {{
  local -a verbs
  verbs=(
{items}
  )
  _describe -t commands 'script-monitor command' verbs
}}

# _arguments calls these with options for compadd: they pass them on
_script_monitor_scripts() {{ _script_monitor_names scripts script "$@" }}
_script_monitor_groups() {{ _script_monitor_names groups group "$@" }}
_script_monitor_checks() {{ _script_monitor_names checks check "$@" }}

_script_monitor_names() {{
  local kind=$1 what=$2 expl
  shift 2
  local -a names
  names=(${{(f)"$(${{~_sm_prog}} $_sm_cfg __complete $kind 2>/dev/null)"}})
  _wanted $kind expl $what compadd "$@" -a names
}}

_script_monitor() {{
  local curcontext=$curcontext state line ret=1 i
  local _sm_prog=${{words[1]}}
  local -a _sm_cfg
  for (( i = 2; i < CURRENT; i++ )); do
    case ${{words[i]}} in
      (--config-dir) _sm_cfg=(--config-dir ${{~words[i+1]}}) ;;
      (--config-dir=*) _sm_cfg=(--config-dir ${{~words[i]#--config-dir=}}) ;;
    esac
  done
  _arguments -C \
    {global_specs} \
    '1:command:_script_monitor_verbs' \
    '*::argument:->verb' && ret=0
  case $state in
    (verb)
      curcontext=${{curcontext%:*:*}}:script-monitor-${{words[1]}}:
      case ${{words[1]}} in
{cases}
      esac ;;
  esac
  return ret
}}

if [[ ${{zsh_eval_context[-1]}} == loadautofunc ]]; then
  _script_monitor "$@"
else
  compdef _script_monitor script-monitor
fi
"""


# ---------------------------------------------------------------- fish


def _fq(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish_option(o: Option, condition: str) -> str:
    parts = ["complete -c script-monitor", f"-n {_fq(condition)}"]
    for f in o.flags:
        parts.append(f"-l {f[2:]}" if f.startswith("--") else f"-s {f[1:]}")
    if o.value is not None:
        parts.append("-x")
        action = _fish_action(o.value)
        if action:
            parts.append(f"-a {_fq(action)}")
    parts.append(f"-d {_fq(o.help)}")
    return " ".join(parts)


def _fish_action(kind: str) -> str:
    if kind == "dir":
        return "(__fish_complete_directories (commandline -ct))"
    if kind in NAMED:
        return f"(__script_monitor_names {kind})"
    if kind == "settings":
        return " ".join(setting_keys())
    if kind.startswith("choices:"):
        return kind[8:]
    return ""


def fish(described: Spec) -> str:
    """The fish completion script."""
    options, verbs = described
    lines = []
    for o in options:
        lines.append(_fish_option(o, "__script_monitor_needs_verb"))
    for v in verbs:
        cond = "__script_monitor_needs_verb"
        lines.append(f"complete -c script-monitor -n {cond} -a {v.name} -d {_fq(v.help)}")
    takes = []
    for v in verbs:
        for o in v.options:
            lines.append(_fish_option(o, f"__script_monitor_at {v.name}"))
        for i, kind in enumerate(v.positionals):
            action = _fish_action(kind)
            if action:
                cond = f"__script_monitor_positional {v.name} {i}"
                lines.append(f"complete -c script-monitor -n {_fq(cond)} -a {_fq(action)}")
        flags = [f for o in v.options if o.value for f in o.flags]
        if flags:
            takes.append(f"        case {v.name}\n            set takes {' '.join(flags)}")
    return FISH.format(takes="\n".join(takes), completions="\n".join(lines))


FISH = r"""# fish completion for script-monitor (generated by `script-monitor completion fish`)
#
# Install it for your user (fish loads it on first use):
#   script-monitor completion fish > ~/.config/fish/completions/script-monitor.fish
#
# Script and group names come from `script-monitor [--config-dir DIR] __complete scripts`.

# The words before the cursor: prints the verb's index (0: none yet) and the config dir.
function __script_monitor_scan
    set -l words (commandline -opc)
    set -l cfg
    set -l i 2
    while test $i -le (count $words)
        set -l word $words[$i]
        switch $word
            case --config-dir
                set i (math $i + 1)
                set cfg $words[$i]
            case '--config-dir=*'
                set cfg (string replace -- --config-dir= '' $word)
            case '-*'
            case '*'
                echo $i
                echo $cfg
                return
        end
        set i (math $i + 1)
    end
    echo 0
    echo $cfg
end

function __script_monitor_needs_verb
    test (__script_monitor_scan)[1] -eq 0
end

function __script_monitor_at --argument-names verb
    set -l at (__script_monitor_scan)[1]
    set -l words (commandline -opc)
    test $at -gt 0; and test $words[$at] = $verb
end

# True when the verb is $verb and $index positional arguments come before the cursor.
function __script_monitor_positional --argument-names verb index
    set -l at (__script_monitor_scan)[1]
    test $at -gt 0; or return 1
    set -l words (commandline -opc)
    test $words[$at] = $verb; or return 1
    set -l takes
    switch $verb
{takes}
    end
    set -l n 0
    set -l skip 0
    for word in $words[(math $at + 1)..-1]
        if test $skip -eq 1
            set skip 0
        else if string match -q -- '-*' $word
            contains -- $word $takes; and set skip 1
        else
            set n (math $n + 1)
        end
    end
    test $n -eq $index
end

function __script_monitor_names --argument-names kind
    set -l prog (string replace -r '^~' $HOME -- (commandline -opc)[1])
    set -l cfg (__script_monitor_scan)[2]
    if test -n "$cfg"
        $prog --config-dir (string replace -r '^~' $HOME -- $cfg) __complete $kind 2>/dev/null
    else
        $prog __complete $kind 2>/dev/null
    end
end

complete -c script-monitor -f
{completions}
"""
