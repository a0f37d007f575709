"""The profiles name only rules that exist, and the cluster profile sizes every rule."""

import re

import yaml

from conftest import REPO

PROFILES = REPO / "workflow" / "profiles"


def workflow_rules() -> set[str]:
    text = "\n".join(path.read_text() for path in [REPO / "Snakefile", *sorted((REPO / "workflow/rules").glob("*.smk"))])
    return set(re.findall(r"^(?:rule|checkpoint) (\w+):", text, flags=re.MULTILINE))


def rules_named_in(profile: dict) -> set[str]:
    named = set()
    for key in ("set-threads", "set-resources"):
        named |= set(profile.get(key) or {})
    return named


def test_every_rule_a_profile_names_exists():
    rules = workflow_rules()
    assert {"build_corpus", "cache_activations", "train_sae", "verdict"} <= rules
    array_job_lines = 0
    for folder in PROFILES.iterdir():
        profile = yaml.safe_load((folder / "config.yaml").read_text())
        assert rules_named_in(profile) <= rules, f"{folder.name}: {sorted(rules_named_in(profile) - rules)}"
        # The array-jobs line is a comment in the profile: its rules must exist too when someone enables it.
        for line in (folder / "config.yaml").read_text().splitlines():
            listed = {name.strip() for name in line.split(":", 1)[1].split(",")} if "slurm-array-jobs:" in line else set()
            assert listed <= rules, f"{folder.name}: {sorted(listed - rules)}"
            array_job_lines += bool(listed)
    assert array_job_lines == 1, "the slurm profile's commented slurm-array-jobs line was not found"


def test_the_cluster_profile_sizes_every_rule_but_the_target():
    profile = yaml.safe_load((PROFILES / "slurm" / "config.yaml").read_text())
    assert set(profile["set-resources"]) == workflow_rules() - {"all"}
