"""The word-level attack through TextAttack, offline (the optional ``attack`` extra)."""
import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from alum.finetune import word_attack

from .conftest import FIXTURES

pytestmark = pytest.mark.skipif(not word_attack.available(),
                                reason="textattack (the optional 'attack' extra) is not "
                                       "installed: pip install -e .[attack]")


class KeywordClassifier(PreTrainedModel):
    """Class 1 iff the token id of ``keyword`` occurs in the input: DeepWordBug must break
    the keyword with a character edit to flip it."""

    config_class = PretrainedConfig

    def __init__(self, keyword_id: int):
        super().__init__(PretrainedConfig())
        self.keyword_id = keyword_id
        self.scale = torch.nn.Parameter(torch.tensor(5.0))  # TextAttack reads the device

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        hit = (input_ids == self.keyword_id).any(dim=-1).float() * 2 - 1
        return SequenceClassifierOutput(logits=torch.stack([-hit, hit], -1) * self.scale)


class InputBlindClassifier(PreTrainedModel):
    """Always class 0, whatever the text: no attack can change a prediction."""

    config_class = PretrainedConfig

    def __init__(self):
        super().__init__(PretrainedConfig())
        self.unused = torch.nn.Parameter(torch.zeros(()))  # TextAttack reads the device

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        logits = torch.tensor([1.0, -1.0]).expand(input_ids.shape[0], 2)
        return SequenceClassifierOutput(logits=logits)


@pytest.fixture(scope="module")
def tokenizer():
    # A real uncased WordPiece vocabulary (the MiniLM package's), where "good" is a token.
    from transformers import AutoTokenizer

    from alum.finetune.demo import demo_model_dir

    return AutoTokenizer.from_pretrained(demo_model_dir())


TEXTS = ["the movie was good and the actors too", "a good plot with a happy ending",
         "nothing here matters at all", "the food was good enough for us"]


def test_deepwordbug_flips_a_keyword_classifier(tokenizer):
    keyword_id = tokenizer.convert_tokens_to_ids("good")
    assert keyword_id != tokenizer.unk_token_id
    model = KeywordClassifier(keyword_id)
    labels = [1, 1, 0, 1]
    out = word_attack.run_word_attack(model, tokenizer, TEXTS, None, labels, "deepwordbug",
                                      num_examples=4)
    assert out["examples"] == 4 and out["clean_accuracy"] == 1.0
    # Each example with one "good" flips when that word gets a character edit; the
    # keyword-free example is class 0 whatever is edited, so it stays correct.
    assert out["accuracy"] == pytest.approx(0.25)
    assert out["mean_queries"] > 0


def test_attack_cannot_beat_an_input_blind_model_and_counts_wrong_examples(tokenizer):
    model = InputBlindClassifier()
    out = word_attack.run_word_attack(model, tokenizer, TEXTS, None, [0, 0, 1, 0],
                                      "deepwordbug", num_examples=3)
    assert out["examples"] == 3
    assert out["clean_accuracy"] == pytest.approx(2 / 3)
    assert out["accuracy"] == pytest.approx(2 / 3)  # skipped (already wrong) count as wrong


def test_unknown_recipe_is_a_clear_error(tokenizer):
    with pytest.raises(RuntimeError, match="unknown TextAttack recipe 'NoSuchRecipe'"):
        word_attack.build_attack("NoSuchRecipe", None)


@pytest.mark.slow
def test_robustness_cli_runs_the_word_attack_offline(tiny_bert_dir, tmp_path):
    from alum.finetune import cli

    model_dir = tmp_path / "sst2"
    cli.run(cli.build_parser().parse_args([
        "--model", tiny_bert_dir, "--train", os.path.join(FIXTURES, "sst2_train.tsv"),
        "--output", str(model_dir), "--epochs", "1", "--batch-size", "8", "--no-alum",
        "--no-progress"]))
    out_json = tmp_path / "r.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", XDG_CACHE_HOME=str(tmp_path / "cache"),
               OMP_NUM_THREADS="1")
    env.pop("TA_CACHE_DIR", None)  # set by the in-process tests above
    proc = subprocess.run(
        [sys.executable, "-m", "alum.finetune.robustness", "--model", str(model_dir),
         "--eval", os.path.join(FIXTURES, "sst2_dev.tsv"), "--word-attack",
         "--word-attack-examples", "6", "--json", str(out_json)],
        capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out_json.read_text())["results"]
    word = [r for r in rows if r["attack"] == "textattack:deepwordbug"]
    assert len(word) == 1 and word[0]["examples"] == 6
    assert 0.0 <= word[0]["accuracy"] <= word[0]["clean_accuracy"] <= 1.0
    assert (tmp_path / "cache" / "alum" / "textattack").is_dir()


@pytest.mark.slow
def test_importing_textattack_leaves_existing_loggers_enabled():
    # TextAttack's import calls logging.config.dictConfig, which disables the loggers that
    # exist; in a fresh process, since this one may have imported it already.
    code = ("import logging\n"
            "lg = logging.getLogger('alum.pretrain')\n"
            "from alum.finetune.word_attack import import_textattack\n"
            "import_textattack()\n"
            "assert 'textattack' in __import__('sys').modules\n"
            "assert not lg.disabled, 'alum.pretrain was disabled'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_renamed_post_install_marker_stops_the_import_with_the_version(monkeypatch):
    """The marker alum writes must be the one the installed TextAttack checks; a release
    that renamed it would download on import: refused, naming the version."""
    import importlib.metadata

    word_attack._check_post_install_marker()  # the installed release checks this marker
    monkeypatch.setattr(word_attack, "POST_INSTALL_MARKER", "post_install_check_99")
    version = importlib.metadata.version("textattack")
    with pytest.raises(RuntimeError, match=rf"^textattack {version}: .*install\.py no longer "
                                           r"checks its post-install marker "
                                           r"'post_install_check_99'"):
        word_attack._check_post_install_marker()
