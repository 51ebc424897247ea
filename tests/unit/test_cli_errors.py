"""A user's mistakes at the command line, each answered by one `error:` line that says how to fix it, and exit
status 2, before any slow work: a taken port, no server to talk to, a switch given a value, a model that has
no image or embedding companion. And `--help` in a user's words: switches without values, an example on every
command and group. No server runs here: these are the paths where there is none, or where none is needed."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import typer
from fixtures_training import alexnet_in_process

import alexnet_cli
from common.cli import click_command
from serving.server import free_port


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something listens on, as a user's other server would."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def assert_one_error_line(result, *expected: str) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = error_lines(result)
    for text in expected:
        assert text in line, line
    assert "Traceback" not in result.stderr
    return line


def test_serve_on_a_taken_port_says_so_before_loading_anything(taken_port, tmp_path):
    repository = tmp_path / "model_repository"  # empty: the ports are checked before the repository
    result = alexnet_in_process("serve", "--repository", str(repository), "--grpc-port", str(taken_port))
    assert_one_error_line(
        result, f"port {taken_port} (--grpc-port) is taken", "choose another with --grpc-port"
    )
    assert "tritonserver" not in result.stderr and "alexnet serve:" not in result.stderr


def test_serve_refuses_one_port_for_two_uses(tmp_path):
    port = free_port()
    result = alexnet_in_process("serve", "--repository", str(tmp_path), "--http-port", str(port),
                                "--grpc-port", str(port))  # fmt: skip
    assert_one_error_line(result, f"--grpc-port {port} is also --http-port")


def test_demo_on_a_taken_port_says_so_before_waiting_for_triton(taken_port):
    nobody = f"127.0.0.1:{free_port()}"
    result = alexnet_in_process("demo", "--port", str(taken_port), "--url", nobody, "--wait", "30")
    assert_one_error_line(result, f"port {taken_port} (--port) is taken", "--port")
    assert "waiting" not in result.stderr  # found before the 30 s wait, not after it


@pytest.mark.parametrize("command", ["classify", "demo"])
def test_without_a_server_it_says_what_it_waits_for_then_one_error(command, tmp_path):
    nobody = f"127.0.0.1:{free_port()}"
    images = [str(tmp_path / "cat.jpg")] if command == "classify" else []
    port = ["--port", str(free_port())] if command == "demo" else []
    result = alexnet_in_process(command, *images, *port, "--url", nobody, "--wait", "1")
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"waiting up to 1 s for Triton at {nobody} (grpc)"), lines
    assert "alexnet serve --repository" in lines[0]
    assert_one_error_line(result, f"no Triton server answers at {nobody}", "alexnet serve --repository")
    assert lines[-1].startswith("error:")  # the wait first, the error last


def test_quickstart_falls_back_from_a_taken_port_before_the_first_step(taken_port, tmp_path):
    broken = tmp_path / "runs" / "digits"
    broken.mkdir(parents=True)
    (broken / "model.json").write_text("{not json")  # fails at step 1, after the ports are settled
    result = alexnet_in_process("quickstart", "--check", "--model-dir", str(broken), "--repository",
                                str(tmp_path / "repo"), "--http-port", str(taken_port), "--port", "0",
                                "--grpc-port", "0", "--metrics-port", "0")  # fmt: skip
    output = result.stdout
    assert f"port {taken_port} is taken: using" in output
    assert output.index(f"port {taken_port} is taken") < output.index("==> 1/5")
    assert_one_error_line(result, "alexnet train")


def test_a_switch_given_a_value_is_one_line_naming_the_switch():
    result = alexnet_in_process("serve", "--int8", "true")
    assert_one_error_line(result, "--int8 is a switch and takes no value", "alexnet serve --help")


def test_an_unknown_option_or_command_is_one_line_pointing_at_help():
    assert_one_error_line(alexnet_in_process("train", "--epoch", "3"), "No such option: --epoch", "--help")
    assert_one_error_line(alexnet_in_process("deploy"), "No such command 'deploy'", "alexnet --help")


@pytest.mark.parametrize(
    ("option", "missing", "instead"),
    [
        (["--send", "bytes"], "alexnet_int8_image", "--model alexnet"),
        (["--embed", "features.npy"], "alexnet_int8_embedding", "--model alexnet --embed features.npy"),
    ],
)
def test_the_int8_model_is_not_asked_for_companions_export_never_writes(option, missing, instead, tmp_path):
    nobody = f"127.0.0.1:{free_port()}"
    result = alexnet_in_process("classify", str(tmp_path / "cat.jpg"), "--model", "alexnet_int8", *option,
                                "--url", nobody, "--wait", "30")  # fmt: skip
    assert_one_error_line(result, f"export writes no {missing}", instead)
    assert "waiting" not in result.stderr  # refused before contacting any server


def every_command(command, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], object]]:
    yield path, command
    for name, subcommand in getattr(command, "commands", {}).items():
        yield from every_command(subcommand, (*path, name))


def help_of(path: tuple[str, ...]) -> str:
    result = alexnet_in_process(*path, "--help")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_help_shows_switches_without_a_value_and_an_example():
    root = click_command(alexnet_cli.app)
    for path, command in every_command(root):
        text = help_of(path)
        assert "<bool>" not in text, path
        assert "Example:" in text, f"`alexnet {' '.join(path)} --help` has no example"
        switches = [p for p in command.get_params(typer.Context(command)) if getattr(p, "is_flag", False)]
        assert all(p.metavar == "" for p in switches), path


def test_help_names_no_internal_fields_or_targets():
    assert "target" not in help_of(("bench-export",)).lower()
    recipe_help = help_of(("train",))
    for field in ("init_scheme", "warmup_epochs", "weight_decay", "batch_size", "ten_crop"):
        assert field not in recipe_help, field
