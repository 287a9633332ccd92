"""Command lines taken out of deployment files, parsed by the real `migrator` parser.

- parse(argv): argparse Namespace from migrator.cli.build_parser(), or AssertionError with
  argparse's own message. TLS flags are dropped only while the parser does not know them yet.
- compose_interpolate(text): compose's ${VAR:-default} forms, with no variable set.
- systemd_exec(line, env): an ExecStart= line split and expanded as systemd does.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from functools import cache

from migrator.cli import build_parser

TLS_FLAGS = ("--tls-cert", "--tls-key", "--tls-ca")


@cache
def _parser() -> argparse.ArgumentParser:
    return build_parser()


def _subparser(words: list[str]) -> argparse.ArgumentParser:
    parser = _parser()
    for word in words:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        if word not in sub.choices:
            return parser
        parser = sub.choices[word]
        if not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            return parser
    return parser


def knows(command: list[str], flag: str) -> bool:
    return flag in _subparser(command)._option_string_actions


def _without(argv: list[str], flags: set[str]) -> list[str]:
    out, skip = [], False
    for word in argv:
        if skip:
            skip = False
            continue
        name = word.split("=", 1)[0]
        if name in flags:
            skip = "=" not in word
            continue
        out.append(word)
    return out


def parse(argv: list[str]) -> argparse.Namespace:
    unknown_tls = {f for f in TLS_FLAGS if not knows(argv[:2], f)}
    argv = _without(argv, unknown_tls)
    # argparse would take `--mod` for `--mode`; a deployment file must spell flags out.
    spelled = _subparser(argv[:2])._option_string_actions
    for word in argv:
        name = word.split("=", 1)[0]
        assert not name.startswith("--") or name in spelled, (
            f"`migrator {shlex.join(argv)}`: {name} is not a flag of this command")
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return _parser().parse_args(argv)
    except SystemExit:
        raise AssertionError(f"`migrator {shlex.join(argv)}` is refused by the CLI:\n"
                             f"{err.getvalue()}") from None


def option(argv: list[str], flag: str) -> str | None:
    """The value of --flag VALUE or --flag=VALUE in argv, as written."""
    for i, word in enumerate(argv):
        if word == flag:
            return argv[i + 1]
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
    return None


_COMPOSE_VAR = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$(\w+)")


def compose_interpolate(text: str, env: dict[str, str] | None = None) -> str:
    env = env or {}

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, default = m.group(2), m.group(3)
        value = env.get(name)
        if op in (":-", ":?") and not value or op in ("-", "?") and value is None:
            if op and op.endswith("?"):
                raise AssertionError(f"compose needs ${name}: {default}")
            return default or ""
        return value or ""

    return _COMPOSE_VAR.sub(sub, text)


def env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines of an EnvironmentFile= (comments and blank lines skipped)."""
    env = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"not KEY=VALUE: {line!r}"
            env[key.strip()] = value.strip()
    return env


_UNIT_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def systemd_exec(line: str, env: dict[str, str]) -> list[str]:
    """Split like systemd: a word that is exactly ${VAR} stays one word, $VAR splits at spaces."""
    argv = []
    for word in shlex.split(line):
        whole = _UNIT_VAR.fullmatch(word)
        if whole and whole.group(2):
            argv += env.get(whole.group(2), "").split()
            continue
        argv.append(_UNIT_VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), word))
    return argv


def listen_port(args: argparse.Namespace) -> int:
    """The port of a parsed --listen, whichever shape the daemon's parser gives it."""
    listen = args.listen
    return listen.port if hasattr(listen, "port") else int(listen[1])


def default_ports() -> dict[str, int]:
    """The daemons' default --listen ports, from their parsers."""
    return {"source": listen_port(parse(["source"])),
            "dest": listen_port(parse(["dest", "--source", "http://s:1", "--mode", "hgm",
                                       "--guest-socket", "/g"]))}
