"""Typed settings: the library's defaults are the schema's, and every tunable is reachable from the config."""

import dataclasses
import typing

import pytest
import yaml

from sae_universality import settings as settings_module
from sae_universality.config import SCHEMA, check_config
from sae_universality.models.sources import check_model_entries
from sae_universality.settings import SECTIONS, MatchSettings, SaeSettings, TrainSettings, from_section


def schema_section(path: str) -> dict:
    node = yaml.safe_load(SCHEMA.read_text())
    for key in path.split("."):
        node = node["properties"][key]
    return node


def default_of(item: dataclasses.Field):
    if item.default is not dataclasses.MISSING:
        return item.default
    return item.default_factory()


def as_config(value):
    # How a settings default reads in YAML: tuples are lists, nested settings are mappings.
    if dataclasses.is_dataclass(value):
        return {item.name: as_config(getattr(value, item.name)) for item in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [as_config(item) for item in value]
    return value


@pytest.mark.parametrize("path", sorted(SECTIONS))
def test_every_setting_is_a_config_key_with_the_same_default(path):
    cls, section = SECTIONS[path], schema_section(path)
    fields = {item.name: item for item in dataclasses.fields(cls)}
    # Every config key has a field and every field a config key: nothing the library can tune is out of reach.
    assert set(fields) == set(section["properties"]), path
    for name, item in fields.items():
        schema_default = section["properties"][name].get("default")
        if dataclasses.is_dataclass(default_of(item)):
            continue  # a nested section: checked as a section of its own
        assert as_config(default_of(item)) == schema_default, f"{path}.{name}"
        assert item.metadata == {} and name in settings_docs(cls), f"{path}.{name} needs a docstring"


def settings_docs(cls) -> set[str]:
    """Field names followed by a docstring in the class source (the sparsify convention)."""
    import inspect

    lines = inspect.getsource(cls).splitlines()
    documented = set()
    for line, following in zip(lines, lines[1:]):
        name = line.strip().split(":")[0]
        if ":" in line and following.strip().startswith('"""'):
            documented.add(name)
    return documented


def test_settings_built_from_a_checked_config_equal_the_defaults_and_read_the_users_values():
    config = check_config(yaml.safe_load((SCHEMA.parents[2] / "config.yaml").read_text()),
                          check_models=check_model_entries)
    matching = from_section(MatchSettings, config["matching"])
    assert matching == dataclasses.replace(MatchSettings(), **{
        key: value for key, value in config["matching"].items() if value != getattr(MatchSettings(), key)})
    config["matching"].update(one_to_one="none", n_candidates=3, junk_fraction=0.25)
    changed = from_section(MatchSettings, config["matching"])
    assert (changed.one_to_one_rule, changed.n_candidates, changed.junk_fraction) == (None, 3, 0.25)
    saes = from_section(SaeSettings, config["saes"])
    assert isinstance(saes.train, TrainSettings) and saes.seeds == tuple(config["saes"]["seeds"])
    assert saes.train.batch_size == config["saes"]["train"]["batch_size"]
    hash(saes)  # frozen all the way down: a job cannot change its settings
    with pytest.raises(dataclasses.FrozenInstanceError):
        saes.train.k = 1
    with pytest.raises(TypeError, match="no settings"):
        from_section(MatchSettings, {"treshold": 0.2})


def test_every_settings_class_is_listed_with_its_section():
    classes = {obj for obj in vars(settings_module).values()
               if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == settings_module.__name__}
    assert classes == set(SECTIONS.values())
    hints = typing.get_type_hints(SaeSettings)
    assert hints["train"] is TrainSettings


def test_the_trainer_takes_its_shared_settings_from_train_settings_and_declares_none_again():
    from sae_universality.saes.training import TrainConfig

    run_fields = {item.name for item in dataclasses.fields(TrainConfig)}
    assert not run_fields & {item.name for item in dataclasses.fields(TrainSettings)}
    assert typing.get_type_hints(TrainConfig)["settings"] is TrainSettings
    # A TrainConfig built without settings has the config's defaults; its n_steps are one pass over the data.
    assert TrainConfig().settings == dataclasses.replace(TrainSettings(), epochs=1)


def test_train_settings_are_a_leaf_that_reaches_into_no_stage():
    import inspect

    # The trainer's run (saes.training.TrainConfig.for_rows) and the SAE's width (saes.architectures.d_sae_for)
    # are made in the SAE stage from these settings, not by them.
    methods = {name for name, value in vars(TrainSettings).items() if callable(value) and not name.startswith("__")}
    assert methods == set() and "import" not in inspect.getsource(TrainSettings)


def test_a_latent_is_dead_after_one_epoch_in_a_small_run_and_after_10m_tokens_in_a_large_one():
    from sae_universality.saes.architectures import SaeConfig
    from sae_universality.saes.training import SaeTrainer, TrainConfig

    sae_cfg = SaeConfig(d_in=4, d_sae=8, k=2)
    assert SaeTrainer(sae_cfg, TrainConfig(n_steps=30, settings=TrainSettings(epochs=3), device="cpu")).dead_after(100) == 1000
    assert SaeTrainer(sae_cfg, TrainConfig(n_steps=10**6, device="cpu")).dead_after(100) == 10_000_000
    assert SaeTrainer(sae_cfg, TrainConfig(n_steps=30, settings=TrainSettings(dead_after_tokens=5), device="cpu")).dead_after(100) == 5
