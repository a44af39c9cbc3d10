"""``alum-convert --help`` covers the three commands; each command documents every option."""
import subprocess

import pytest

from alum.tools.convert.cli import build_parser, main


def test_top_level_help_names_the_three_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in ("to-hf SRC DST", "from-hf SRC DST [--tp N] [--pp N]",
                    "reshape SRC DST --tp N --pp N", "docs/convert.md"):
        assert command in text, command


@pytest.mark.parametrize("command", ["to-hf", "from-hf", "reshape"])
def test_each_command_documents_every_option(command, capsys):
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    assert sub.description.split()[0] in text
    for action in sub._actions:
        assert action.help, (command, action.dest)
        for option in action.option_strings:
            assert option in text, (command, option)


def test_console_script_is_installed():
    out = subprocess.run(["alum-convert", "reshape", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "optimizer state is not converted" in out.stdout
