"""The tiny subset of ``sh`` that the sandbox's SSH server executes.

The admin client sends command lines such as::

    OMCURRENT=sx sudo -n /opt/scalix/bin/omshowu -n 'Kim Lee' -f; echo "@@SXM@@ $?"

This module implements exactly that much of POSIX sh: command sequences separated by ``;``,
leading ``NAME=value`` assignments (accepted and ignored: there is one instance), ``sudo -n``
(and other leading sudo options), absolute or bare command names (the basename selects the
emulated command), ``echo`` and ``$?`` expansion outside single quotes. Quoting follows sh:
single quotes are literal, double quotes allow ``\\"``, ``\\\\``, ``\\$`` and ``\\``` escapes,
a backslash outside quotes escapes the next character. Anything else that would mean more than
a word to a real shell (``|``, ``&``, ``>``, ``<``, ``(``, backquotes, ``$(``, ``${``, an
unquoted newline, glob characters ``*?[``, a word starting with ``#`` or ``~``) is refused with
exit status 2, so a test can never pass on syntax a real sshd would treat differently.

:func:`same_as_sh` tells whether :func:`execute` would do exactly what ``/bin/sh -c`` does with a
line on a host whose ``PATH`` starts with the admin-command wrappers; the sshd test bed's opt-in
benchmark fast path uses it to run a whole batch in one process (``tests/testbed/sshd.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from pathlib import Path

from scalix_migrate.sandbox.admin_commands import COMMAND_NAMES, CommandResult, run

_STATUS = "\x00?"  # a `$?` to expand when the command runs; NUL never comes over SSH
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_OPERATORS = set("|&><()`")
_GLOBS = set("*?[")  # pathname expansion, anywhere in an unquoted word
_WORD_START = set("#~")  # a comment, a tilde expansion: only at the start of a word
# A run of characters that are literal outside quotes ("#"/"~" are checked at a word's start):
# consumed in one step, since batches are tens of kilobytes.
_PLAIN_RUN = re.compile(r"[^ \t\n;'\"\\$|&><()`*?\[]+")


class ShellSyntaxError(ValueError):
    """The line uses sh syntax outside the supported subset."""


def parse(line: str) -> list[list[str]]:
    """Split a command line into commands (lists of words); ``$?`` stays as a marker."""
    commands: list[list[str]] = []
    words: list[str] = []
    word: list[str] = []
    in_word = False
    i = 0
    n = len(line)

    def end_word() -> None:
        nonlocal word, in_word
        if in_word:
            words.append("".join(word))
        word, in_word = [], False

    while i < n:
        plain = _PLAIN_RUN.match(line, i)
        if plain is not None:
            if not in_word and line[i] in _WORD_START:
                raise ShellSyntaxError(f"unsupported shell syntax {line[i]!r}")
            word.append(plain.group())
            in_word, i = True, plain.end()
            continue
        c = line[i]
        if c == "\n":
            raise ShellSyntaxError("a newline separates commands; only ';' is emulated")
        if c in " \t":
            end_word()
        elif c == ";":
            end_word()
            if not words:
                raise ShellSyntaxError("syntax error near unexpected token ';'")
            commands.append(words)
            words = []
        elif c == "'":
            close = line.find("'", i + 1)
            if close < 0:
                raise ShellSyntaxError("unterminated quoted string")
            word.append(line[i + 1 : close])
            in_word, i = True, close
        elif c == '"':
            i = _double_quoted(line, i + 1, word)
            in_word = True
        elif c == "\\":
            if i + 1 < n and line[i + 1] != "\n":
                word.append(line[i + 1])
                in_word = True
            i += 1
        elif c == "$":
            i = _dollar(line, i, word)
            in_word = True
        elif c in _OPERATORS or c in _GLOBS or (c in _WORD_START and not in_word):
            raise ShellSyntaxError(f"unsupported shell syntax {c!r}")
        else:
            word.append(c)
            in_word = True
        i += 1
    end_word()
    if words:
        commands.append(words)
    return commands


def _double_quoted(line: str, i: int, word: list[str]) -> int:
    """Consume a double-quoted string starting after its quote; return the closing index."""
    while i < len(line):
        c = line[i]
        if c == '"':
            return i
        if c == "\\" and i + 1 < len(line) and line[i + 1] in '"\\$`':
            word.append(line[i + 1])
            i += 1
        elif c == "$":
            i = _dollar(line, i, word)
        elif c == "`":
            raise ShellSyntaxError("unsupported shell syntax '`'")
        else:
            word.append(c)
        i += 1
    raise ShellSyntaxError("unterminated quoted string")


def _dollar(line: str, i: int, word: list[str]) -> int:
    nxt = line[i + 1] if i + 1 < len(line) else ""
    if nxt == "?":
        word.append(_STATUS)
        return i + 1
    if nxt and (nxt.isalnum() or nxt in "_{("):
        raise ShellSyntaxError(f"unsupported expansion '${nxt}'")
    word.append("$")
    return i


def execute(
    line: str,
    directory_path: Path,
    *,
    runner: Callable[[list[str], Path], CommandResult] = run,
) -> CommandResult:
    """Run a command line; stdout/stderr are concatenated, the status is the last command's."""
    try:
        commands = parse(line)
    except ShellSyntaxError as exc:
        return CommandResult(2, "", f"sh: {exc}\n")
    return execute_parsed(commands, directory_path, runner=runner)


def execute_parsed(
    commands: list[list[str]],
    directory_path: Path,
    *,
    runner: Callable[[list[str], Path], CommandResult] = run,
) -> CommandResult:
    """:func:`execute` for a line already split by :func:`parse`."""
    out: list[str] = []
    err: list[str] = []
    status = 0
    for words in commands:
        argv = [w.replace(_STATUS, str(status)) for w in words]
        while argv and _ASSIGNMENT.match(argv[0]):
            argv.pop(0)
        if argv and argv[0] == "sudo":
            argv.pop(0)
            while argv and argv[0].startswith("-"):
                argv.pop(0)
        if not argv:
            status = 0
            continue
        result = _one(argv, directory_path, runner)
        out.append(result.stdout)
        err.append(result.stderr)
        status = result.exit_status
    return CommandResult(status, "".join(out), "".join(err))


def _one(
    argv: list[str], directory_path: Path, runner: Callable[[list[str], Path], CommandResult]
) -> CommandResult:
    name = argv[0].rsplit("/", 1)[-1]
    if name == "echo":
        return CommandResult(0, " ".join(argv[1:]) + "\n", "")
    if name in ("true", ":"):
        return CommandResult(0, "", "")
    if name == "false":
        return CommandResult(1, "", "")
    if name not in COMMAND_NAMES:
        return CommandResult(127, "", f"sh: 1: {argv[0]}: not found\n")
    return runner([name, *argv[1:]], directory_path)


# sudo options the test bed's sudo stand-in skips together with their argument.
_SUDO_OPTIONS_WITH_ARGUMENT = frozenset({"-u", "-g", "-C", "--"})


def same_as_sh(line: str, *, bin_dir: str, wrappers: Collection[str]) -> bool:
    """True when :func:`execute` runs ``line`` exactly as ``/bin/sh -c line`` would on a host
    whose ``PATH`` starts with ``bin_dir``, which holds a wrapper per name in ``wrappers`` (each
    running the emulated command) and a ``sudo`` that drops its own flag options.

    Deliberately narrow; anything unusual is False (the caller then uses the real shell):
    every command must be, after ``NAME=value`` words and ``sudo`` with flag-only options, an
    emulated command named bare or as ``<bin_dir>/<name>``, ``true``/``false``/``:``, or an
    ``echo`` whose words have no backslash and no leading ``-`` (dash's echo would interpret
    them)."""
    try:
        commands = parse(line)
    except ShellSyntaxError:
        return False
    return parsed_same_as_sh(commands, bin_dir=bin_dir, wrappers=wrappers)


def parsed_same_as_sh(
    commands: list[list[str]], *, bin_dir: str, wrappers: Collection[str]
) -> bool:
    """:func:`same_as_sh` for a line already split by :func:`parse`."""
    base = bin_dir.rstrip("/")
    for words in commands:
        argv = list(words)
        while argv and _ASSIGNMENT.match(argv[0]):
            argv.pop(0)
        if argv and argv[0] == "sudo":
            argv.pop(0)
            while argv and argv[0].startswith("-"):
                if argv[0] in _SUDO_OPTIONS_WITH_ARGUMENT:
                    return False
                argv.pop(0)
            if not argv:
                return False  # sudo without a command: the stand-in's usage error
        if not argv:
            continue
        head, _, name = argv[0].rpartition("/")
        if "/" in argv[0]:
            if head != base or name not in wrappers or name not in COMMAND_NAMES:
                return False
        elif name == "echo":
            if any("\\" in w or w.startswith("-") for w in argv[1:]):
                return False
        elif name not in ("true", "false", ":") and (
            name not in wrappers or name not in COMMAND_NAMES
        ):
            return False
    return True
