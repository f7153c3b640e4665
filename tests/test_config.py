import pytest

from nnlab.config import RunConfig, parse_assignment, set_value
from nnlab.errors import NnlabError
from nnlab.experiment import resolve_config


def test_set_value_coerces_and_validates():
    cfg = RunConfig()
    set_value(cfg, "optim.lr", 1)
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    set_value(cfg, "optim.betas", [0.8, 0.9])
    assert cfg.optim.betas == (0.8, 0.9)
    set_value(cfg, "model.dropout", 0.3)
    assert cfg.model.args == {"dropout": 0.3}
    with pytest.raises(NnlabError, match="must be an integer"):
        set_value(cfg, "train.epochs", "ten")
    with pytest.raises(NnlabError, match=r"unknown option 'train\.epoch'"):
        set_value(cfg, "train.epoch", 3)


@pytest.mark.parametrize("text,expected", [
    ("a=1", ("a", 1)), ("a=0.5", ("a", 0.5)), ("a=true", ("a", True)),
    ("a=crop-flip", ("a", "crop-flip")), ("a='x'", ("a", "x")), ("a=[1, 2]", ("a", [1, 2])),
])
def test_parse_assignment(text, expected):
    assert parse_assignment(text) == expected


def test_precedence_recipe_then_file_then_flags_then_set(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[model]\nname = "cnn"\n[optim]\nlr = 0.5\nmomentum = 0.1\n'
                    '[train]\nepochs = 3\n')
    cfg = resolve_config("image", None, str(toml), epochs=7, sets=["optim.lr=0.25"])
    assert cfg.optim.name == "rmsprop"  # from the cnn recipe
    assert cfg.optim.momentum == 0.1  # file beats recipe
    assert cfg.train.epochs == 7  # flag beats file
    assert cfg.optim.lr == 0.25  # --set beats everything


def test_bad_choice_and_bad_toml(tmp_path):
    with pytest.raises(NnlabError, match=r"data\.augment: unknown value 'flips'"):
        resolve_config("image", "cnn", sets=["data.augment=flips"])
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim\nlr=1")
    with pytest.raises(NnlabError, match=r"bad\.toml: invalid TOML"):
        resolve_config("image", "cnn", str(bad))
    with pytest.raises(NnlabError, match="unknown task"):
        resolve_config("sound", "cnn")


def test_every_experiment_config_resolves():
    from pathlib import Path

    root = Path(__file__).parents[1] / "experiments"
    files = [f for task in ("image", "keyphrase", "similarity") for f in sorted((root / task).glob("*.toml"))
             if f.name != "ensemble.toml"]  # an ensemble file: test_ensemble.py
    assert len(files) > 20
    for f in files:  # experiments/<task>/<variant>.toml; studies are checked in test_studies.py
        cfg = resolve_config(f.parent.name, None, str(f))
        assert cfg.model.name, f


def test_each_task_specific_setting_has_a_task_and_literal_fields_are_its_choices():
    """The [data] table is the common section plus each task's own (config.*DataConfig); no
    setting is read by no task, and a task's choices are its sections' Literal fields."""
    from nnlab import config, tasks

    owners = {key: [n for n in tasks.names() if key in tasks.get(n).reads] for key in config.task_keys()}
    assert [key for key, names in owners.items() if not names] == []
    assert owners["data.cutout"] == ["image"] and owners["data.tag_scheme"] == ["keyphrase"]
    assert set(owners["data.embeddings"]) >= {"keyphrase", "similarity"}
    assert tasks.get("keyphrase").choices["data.encoding"] == ("bio", "bioes")
    assert tasks.get("image").choices["data.augment"] == ("none", "crop-flip", "keras", "airbench")
    assert "data.augment" not in tasks.get("similarity").choices
