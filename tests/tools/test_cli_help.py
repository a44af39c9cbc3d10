"""`--help` of both tools explains every option (each has help text and is listed)."""
import subprocess

import pytest

from alum.tools import preprocess, train_tokenizer


@pytest.mark.parametrize("module", [preprocess, train_tokenizer])
def test_help_lists_and_explains_every_option(module, capsys):
    parser = module.build_parser()
    with pytest.raises(SystemExit):
        module.main(["--help"])
    text = capsys.readouterr().out
    for action in parser._actions:
        assert action.help, action.option_strings
        for option in action.option_strings:
            assert option in text


def test_preprocess_help_states_bad_input_policy_and_formats(capsys):
    with pytest.raises(SystemExit):
        preprocess.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for phrase in ("truncated", "invalid UTF-8", "malformed JSON", "missing key", "Empty documents",
                   "--strict", "WikiExtractor", "OpenWebText", "parquet", "save_to_disk", ".zst",
                   "temporary names", "resumes"):
        assert phrase in text, phrase


def test_console_scripts_are_installed():
    for script in ("alum-preprocess", "alum-tokenizer"):
        out = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "--input" in out.stdout
