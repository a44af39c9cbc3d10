"""AlumConfig validation: every bad value is rejected with the field's name."""
import pytest

from alum import PRESETS, AlumConfig

BAD = [("alpha", -1.0), ("alpha", float("nan")), ("noise_std", -1e-5), ("step_size", "big"),
       ("epsilon", float("inf")), ("steps", 0), ("steps", 1.5), ("steps", True),
       ("norm", "l3"), ("level", "word"), ("update", "pgd"), ("loss", "js"),
       ("start_step", -1), ("detach_embeddings", "yes"),
       ("normalize_radius", 0.0), ("epsilon_scale", "percent")]


@pytest.mark.parametrize("field,value", BAD)
def test_invalid_value_names_the_field(field, value):
    with pytest.raises(ValueError, match=rf"AlumConfig\.{field}\b"):
        AlumConfig(**{field: value})


def test_sign_rule_only_for_normalize():
    with pytest.raises(ValueError, match="norm='l1'"):
        AlumConfig(norm="l1", update="project")
    assert AlumConfig(norm="l1", update="normalize").norm == "l1"


def test_zero_radius_project_rejected():
    with pytest.raises(ValueError, match="epsilon"):
        AlumConfig(epsilon=0.0)


def test_paper_defaults():
    c = AlumConfig()
    assert (c.noise_std, c.epsilon, c.step_size, c.steps, c.norm, c.update) == \
        (1e-5, 1e-5, 1e-3, 1, "inf", "project")
    assert AlumConfig.from_preset("paper-pretrain").alpha == 10.0
    assert AlumConfig.from_preset("paper-finetune").alpha == 1.0
    released = AlumConfig.from_preset("released-finetune")
    assert released.update == "normalize" and released.step_size == 1e-5


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_and_round_trip(name):
    c = AlumConfig.from_preset(name)
    assert AlumConfig.from_dict(c.to_dict()) == c


def test_unknown_preset_and_field():
    with pytest.raises(ValueError, match="unknown ALUM preset"):
        AlumConfig.from_preset("nope")
    with pytest.raises(ValueError, match="unknown AlumConfig fields"):
        AlumConfig.from_dict({"alpah": 1.0})


def test_curriculum():
    c = AlumConfig(start_step=10)
    assert not c.active(9) and c.active(10)
    assert not AlumConfig(alpha=0.0).active(100)
