"""Plugins add commands to ``steer`` through ``steer_register_commands``, as llm's plugins do;
one that fails there is reported and the command line still works."""

from __future__ import annotations

import pytest
from support.cli_helpers import call
from support.plugin_project import install_plugin

HELLO = """
import typer

from steer import hookimpl


def hello(name: str = typer.Option("world", help="Who to greet.")):
    \"\"\"Say hello from a plugin.\"\"\"
    typer.echo(f"hello, {name}")


@hookimpl
def steer_register_commands(cli):
    cli.command("hello")(hello)
"""

BROKEN = """
from steer import hookimpl


@hookimpl
def steer_register_commands(cli):
    raise RuntimeError("cannot add my commands")
"""


@pytest.fixture
def hello(tmp_path, monkeypatch):
    return install_plugin(tmp_path, monkeypatch, "helloplugin", HELLO)


def test_a_plugin_command_runs_and_is_listed(hello, capsys):
    code, out, _ = call(["hello", "--name", "steer"], capsys)
    assert code == 0 and out.strip() == "hello, steer"
    code, out, _ = call(["--help"], capsys)
    assert code == 0 and "hello" in out and "Say hello from a plugin." in out
    code, out, _ = call(["plugins"], capsys)
    assert code == 0 and "helloplugin" in out and "commands" in out


def test_a_plugin_that_fails_to_add_commands_is_reported_and_skipped(
    hello, tmp_path, monkeypatch, capsys
):
    install_plugin(tmp_path, monkeypatch, "brokencommands", BROKEN)
    code, out, _ = call(["hello"], capsys)
    assert code == 0 and out.strip() == "hello, world"  # the other plugin's command still works
    code, _, err = call(["plugins"], capsys)
    assert code == 0
    assert "failed to load" in err and "brokencommands" in err
    assert "cannot add my commands" in err
