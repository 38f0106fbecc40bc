"""The README's code blocks, run: each ```python block executes as written, and each ``aucgan ...`` command of
a ```bash block parses with the CLI's own parser, its ``key=value`` overrides being keys of the config.

A snippet that breaks (a renamed function, a removed option, a misspelt config key) fails here. The Python
example's ``photo.jpg`` is matplotlib's sample photo of Grace Hopper, which the face detector finds.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import matplotlib
import pytest

from aucgan.cli import parse_args
from aucgan.config import Config, load_config
from aucgan.reconstruct import is_finished

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PHOTO = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
SEPARATORS = {";", "&", "&&", "|", "||"}


def code_blocks(markdown: str, language: str) -> list[str]:
    """The bodies of the fenced ```language blocks of ``markdown``, in order."""
    return re.findall(rf"^```{language}[ \t]*\n(.*?)^```[ \t]*$", markdown, flags=re.MULTILINE | re.DOTALL)


def shell_commands(block: str) -> list[list[str]]:
    """The commands of a shell block, as argument lists: continued lines (``\\`` at the end) joined,
    comments dropped, and lines cut at ``;``, ``&&``, ``||`` and ``|``."""
    commands: list[list[str]] = []
    for line in re.sub(r"\\\n", " ", block).splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        command: list[str] = []
        for word in lexer:
            if word in SEPARATORS:
                commands.append(command)
                command = []
            else:
                command.append(word)
        commands.append(command)
    return [command for command in commands if command]


TEXT = README.read_text(encoding="utf-8")
PYTHON_BLOCKS = code_blocks(TEXT, "python")
AUCGAN_COMMANDS = [
    command[1:]
    for block in code_blocks(TEXT, "bash")
    for command in shell_commands(block)
    if command[0] == "aucgan"
]


def test_the_readme_has_the_blocks_this_file_runs():
    # So that a change of fence style cannot make the tests below pass by running nothing.
    assert len(PYTHON_BLOCKS) >= 1
    assert {command[0] for command in AUCGAN_COMMANDS} >= {"demo", "reconstruct", "edit", "evaluate", "train"}


def test_shell_commands_are_split_as_a_shell_would():
    block = (
        "pip install -e '.[test]' && aucgan demo   # a comment with aucgan x=1\n"
        "aucgan train detail c.yaml a=1 \\\n    b=2 ; aucgan doctor\n"
        "# aucgan commented out\n"
    )
    assert shell_commands(block) == [
        ["pip", "install", "-e", ".[test]"],
        ["aucgan", "demo"],
        ["aucgan", "train", "detail", "c.yaml", "a=1", "b=2"],
        ["aucgan", "doctor"],
    ]


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[f"block{i}" for i in range(len(PYTHON_BLOCKS))])
def test_python_block_runs(block, tmp_path, monkeypatch):
    assert PHOTO.is_file(), f"{PHOTO}: matplotlib's sample photo, the README example's photo.jpg"
    shutil.copyfile(PHOTO, tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    exec(compile(block, f"{README}, a python block", "exec"), {"__name__": "__readme__"})
    # What the block wrote lies in its working directory; every face folder it wrote is whole.
    for codes in tmp_path.rglob("codes.npz"):
        assert is_finished(codes.parent), codes.parent


def resolved_config(name: str | None) -> str | Path | None:
    """A command's config as the README means it: a file path relative to the repository root, else the
    argument as given (a preset's name, which :func:`~aucgan.config.load_config` resolves as the CLI does)."""
    if name is None:
        return None
    in_repo = REPO / name
    return in_repo if in_repo.is_file() else name


@pytest.mark.parametrize("argv", AUCGAN_COMMANDS, ids=" ".join)
def test_aucgan_command_parses_and_its_overrides_are_config_keys(argv):
    try:
        args = parse_args(argv)
    except SystemExit as error:  # argparse printed the reason to stderr
        pytest.fail(f"`aucgan {shlex.join(argv)}` does not parse (exit status {error.code})")
    overrides = list(getattr(args, "overrides", None) or [])
    # Keys and value types are checked; values that name paths need not exist.
    load_config(Config, resolved_config(getattr(args, "config", None)), overrides)
