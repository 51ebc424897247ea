"""Every `alexnet ...` command in README.md and docs/*.md, and every `torchrun ... -m training ...`, is one
the real command line accepts: its subcommand exists, each option is one that subcommand has, a switch is
not given a value and a choice is one of the choices. The commands are read from the pages (code blocks and
inline code) and checked against click's command tree as `alexnet` builds it (alexnet_cli.py), so neither
side is a copied list and the pages cannot drift from the code again."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer

import alexnet_cli
from common.cli import click_command

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^\s*```")
OPERATORS = {"&&", "||", ";", "|", "&"}
# Languages whose blocks hold no shell commands.
NOT_SHELL = {"python", "json", "yaml", "pbtxt", "text", "toml"}


@dataclass(frozen=True)
class DocCommand:
    page: str
    line: int
    words: list[str]  # starting with "alexnet", or "torchrun" then its own options, "-m", "training"

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {' '.join(self.words)}"


def commands_in(page: Path) -> list[DocCommand]:
    """The `alexnet` and `torchrun -m training` commands of a page: from shell code blocks (a line, with its
    backslash continuations and a synopsis's indented `[--option ...]` lines) and from inline code."""
    name = str(page.relative_to(ROOT))
    found: list[DocCommand] = []
    prose: list[str] = []
    in_block, block_is_shell, pending, pending_line = False, False, "", 0
    for number, line in enumerate(page.read_text().splitlines(), start=1):
        if FENCE.match(line):
            in_block = not in_block
            block_is_shell = line.strip().strip("`").strip().lower() not in NOT_SHELL
            prose.append("")
            continue
        if not in_block:
            prose.append(line)
            continue
        prose.append("")
        if not block_is_shell:
            continue
        if pending and (pending.endswith("\\") or re.match(r"\s+\[", line)):  # a continuation
            pending = pending.removesuffix("\\") + " " + line.strip()
            continue
        if pending:
            found += commands_in_line(pending, name, pending_line)
        pending, pending_line = line, number
    if pending:
        found += commands_in_line(pending, name, pending_line)
    text_outside_blocks = "\n".join(prose)
    for span in re.finditer(r"`([^`]+)`", text_outside_blocks):
        line = text_outside_blocks[: span.start()].count("\n") + 1
        text = " ".join(span.group(1).split())  # inline code may wrap across lines
        if text.startswith(("alexnet ", ".venv/bin/alexnet ", "torchrun ")) or text == "alexnet":
            found += commands_in_line(text, name, line)
    return found


def commands_in_line(line: str, page: str, number: int) -> list[DocCommand]:
    """The commands of one shell line: split at `&&`, `;`, `|` and `&`, comments and `$(...)` left out."""
    line = re.sub(r"\$\([^)]*\)", "VALUE", line)  # `--server-pid $(pgrep -n tritonserver)`
    line = re.sub(r"<[^<>]*>", "VALUE", line)  # `--weights <a state dict of ...>`
    line = re.sub(r"\s\d*>>?\s*(&\d+|\S+)", " ", line)  # a redirection: `2> serve.log`, `2>&1`
    line = re.sub(r"(?<=\S)\[(--)", r" [\1", line)  # `IMAGE...[--url ...]`: keep brackets separate
    try:
        words = shlex.split(line, comments=True)
    except ValueError:  # an unbalanced quote: prose, not a command
        return []
    commands, current = [], []
    for word in [*words, ";"]:
        if word in OPERATORS or word.endswith(";"):
            if word.endswith(";") and word != ";":
                current.append(word.removesuffix(";"))
            commands.append(current)
            current = []
        else:
            current.append(word)
    found = []
    for words in commands:
        words = [word.strip("[]") for word in words if word.strip("[]")]  # a synopsis's [--option VALUE]
        if words and words[0] == ".venv/bin/alexnet":
            words[0] = "alexnet"
        is_output = len(words) > 1 and words[1].endswith(":")  # a log line: `alexnet serve: alexnet: ...`
        if words and words[0] in ("alexnet", "torchrun") and not is_output:
            found.append(DocCommand(page, number, words))
    return found


def is_placeholder(word: str) -> bool:
    """A synopsis's stand-in for a value: DIR, N, HOST:PORT, <name>, {grpc,http}, ..."""
    return bool(re.fullmatch(r"[A-Z][A-Z0-9_:.,-]*|.*[<>{}|].*|\.\.\.", word))


def problems_of(words: list[str], root) -> list[str]:
    """What the real command line would refuse in `words`: `alexnet ...` or `torchrun ... -m training ...`."""
    if words[0] == "torchrun":
        if "-m" not in words or words[words.index("-m") + 1 : words.index("-m") + 2] != ["training"]:
            return []  # torchrun running something else
        command, path, args = training_command(), "python -m training", words[words.index("-m") + 2 :]
    else:
        command, path, args = root, "alexnet", words[1:]
        while hasattr(command, "commands") and args and not args[0].startswith("-"):
            if args[0] not in command.commands:
                return [f"`{path}` has no command {args[0]!r} (it has {', '.join(sorted(command.commands))})"]
            path += f" {args[0]}"
            command, args = command.commands[args[0]], args[1:]
    args = [arg for arg in args if arg != "..."]
    if hasattr(command, "commands"):
        return [f"`{path}` needs a command"] if args and args != ["--help"] else []
    context = typer.Context(command, info_name=path)
    try:
        options, extra, order = command.make_parser(context).parse_args(args=list(args))
    except Exception as error:  # click's NoSuchOption, BadOptionUsage: the mistakes a user would meet
        return [f"`{path}`: {getattr(error, 'message', error)}"]
    found = []
    if extra:
        found.append(f"`{path}` takes no argument {' '.join(extra)!r}{switch_hint(command, args, extra)}")
    for param in {id(param): param for param in order}.values():
        choices = [str(choice) for choice in (param.type_descriptor.choices or ())]
        values = options.get(param.name)
        for value in map(str, values if isinstance(values, (list, tuple)) else [values]):
            if param.type_descriptor.is_choice and not is_placeholder(value) and value not in choices:
                found.append(f"`{path}`: {param.opts[0]} {value}: not one of {', '.join(choices)}")
    return found


def switch_hint(command, args: list[str], extra: list[str]) -> str:
    flags = [param for param in command.params if getattr(param, "is_flag", False)]
    switches = {opt for param in flags for opt in (*param.opts, *param.secondary_opts)}
    before = [a for a, b in zip(args, args[1:], strict=False) if b == extra[0]]
    return f" ({before[0]} is a switch and takes no value)" if before and before[0] in switches else ""


def training_command():
    """What `torchrun ... -m training` runs: training/__main__.py's app."""
    import training.__main__ as entry

    return click_command(entry.app)


@pytest.fixture(scope="module")
def root():
    return click_command(alexnet_cli.app)


@pytest.fixture(scope="module")
def documented() -> list[DocCommand]:
    return [command for page in PAGES for command in commands_in(page)]


def test_the_pages_hold_commands_to_check(documented):
    pages = {command.page for command in documented}
    assert {"README.md", "docs/serving.md", "docs/training.md", "docs/export.md", "docs/demo.md"} <= pages
    assert any(c.words[:2] == ["alexnet", "train"] for c in documented)
    assert any(c.words[0] == "torchrun" for c in documented)
    assert any(" ".join(c.words[:3]) == "alexnet export onnx" for c in documented)
    assert len(documented) > 80, len(documented)


def test_every_documented_command_is_one_the_cli_accepts(documented, root):
    wrong = [f"{cmd}\n    {problem}" for cmd in documented for problem in problems_of(cmd.words, root)]
    assert not wrong, "commands in the pages that the CLI refuses:\n" + "\n".join(wrong)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("alexnet train --data digits --invented-flag 3", "No such option: --invented-flag"),
        ("alexnet serve --int8 true", "--int8 is a switch and takes no value"),
        ("alexnet classify cat.jpg --protocol tcp", "--protocol tcp: not one of grpc, http"),
        ("alexnet deploy --now", "has no command 'deploy'"),
        ("alexnet export onnx --model runs/digits --fp32", "No such option: --fp32"),
        ("torchrun --nproc_per_node=8 -m training --recipe torchvision --lr-step-size 30", "--lr-step-size"),
        ("alexnet classify photos/ -r --json && alexnet bench --made-up", "No such option: --made-up"),
    ],
)
def test_a_command_the_cli_would_refuse_is_caught(line, expected, root):
    commands = commands_in_line(line, "negative case", 1)
    assert commands, line
    problems = [problem for command in commands for problem in problems_of(command.words, root)]
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    "line",
    [
        'alexnet classify photo.jpg --embed features.json   # [{"image": ..., "embedding": [...]}]',
        "alexnet bench --url 127.0.0.1:18101 --soak 10000 --server-pid $(pgrep -n tritonserver)",
        "alexnet serve --repository model_repository &",
        "alexnet export onnx --model runs/digits [--device cpu] [--int8] [--name alexnet]",
        "alexnet train --ten-crop --no-amp --resume",
        "torchrun --standalone --nproc_per_node=8 -m training --recipe paper --data /data/x --batch-size 16",
    ],
)
def test_a_command_the_cli_accepts_passes(line, root):
    (command,) = commands_in_line(line, "positive case", 1)
    assert problems_of(command.words, root) == []


def test_log_lines_and_other_programs_are_not_taken_for_commands():
    assert commands_in_line("alexnet serve: alexnet: now serving version 2 (was 1)", "log", 1) == []
    assert commands_in_line("docker run --rm alexnet-triton:0.1.0 build-plan", "docker", 1) == []
    assert commands_in_line("make run    # = .venv/bin/alexnet quickstart: train, export", "make", 1) == []
