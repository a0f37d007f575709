"""The package's shape: one subpackage per stage over a ground floor, imports with the data's flow, short
signatures, one definition per name, and registries that equal the schema's enums."""

from __future__ import annotations

import ast
import collections
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "sae_universality"
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"

# The stages in the order the data flows; a stage may import earlier stages and the ground floor only.
STAGES = ["text", "models", "activations", "saes", "matching", "similarity", "causal", "cards", "report", "studies"]
GROUND_FLOOR = {"__init__", "errors", "io", "devices", "tokens", "settings", "config", "entry"}


def package_modules():
    """{dotted name relative to the package: (path, parsed tree)} of every module of the package."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        modules[".".join(parts)] = (path, ast.parse(path.read_text(encoding="utf-8")))
    return modules


def imported_modules(name: str, tree: ast.AST) -> set[str]:
    """Package-relative dotted names a module imports, at top level or inside functions."""
    package_parts = name.split(".")[:-1] if not name.endswith("__init__") else name.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("sae_universality"):
                target = node.module.removeprefix("sae_universality").lstrip(".")
            else:
                continue
            found.add(target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("sae_universality."):
                    found.add(alias.name.removeprefix("sae_universality."))
    return found


def stage_of(dotted: str) -> str | None:
    head = dotted.split(".")[0]
    return head if head in STAGES else None


def test_every_module_is_on_the_ground_floor_or_in_a_stage():
    for name in package_modules():
        parts = name.split(".")
        assert (len(parts) == 1 and parts[0] in GROUND_FLOOR) or parts[0] in STAGES, (
            f"{name} is neither a ground-floor module nor inside a stage subpackage")
    assert {path.name for path in PACKAGE.iterdir() if path.is_dir() and (path / "__init__.py").exists()} == set(STAGES)


def test_the_ground_floor_imports_no_stage_and_no_stage_imports_a_later_one():
    modules = package_modules()
    for name, (path, tree) in modules.items():
        own = stage_of(name)
        for target in imported_modules(name, tree):
            imported = stage_of(target)
            if imported is None:
                continue
            assert own is not None, f"{name} (ground floor) imports the {imported} stage ({target})"
            assert STAGES.index(imported) <= STAGES.index(own), (
                f"{name} (stage {own}) imports {target} of the later stage {imported}")


def _parameters(node) -> int:
    """Parameters of a function, self and cls excluded, *args and **options each counted as one."""
    names = [arg.arg for arg in node.args.posonlyargs + node.args.args]
    count = len(names) + len(node.args.kwonlyargs) + (node.args.vararg is not None) + (node.args.kwarg is not None)
    return count - (1 if names and names[0] in ("self", "cls") else 0)


def test_at_most_three_functions_take_more_than_seven_parameters_and_each_says_why():
    long = []
    for path in sorted([*PACKAGE.rglob("*.py"), *(ROOT / "scripts").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if _parameters(node) > 7:
                    long.append((f"{path.relative_to(ROOT)}:{node.name}", ast.get_docstring(node) or ""))
    assert len(long) <= 3, f"functions with more than 7 parameters: {[name for name, _ in long]}"
    for name, docstring in long:
        assert "parameters" in docstring.lower(), f"{name} takes more than 7 parameters; its docstring must say why"


def test_no_name_is_defined_twice_with_different_bodies():
    """Module-level functions and classes, and methods by class, are unique across the package."""
    bodies = collections.defaultdict(set)
    for name, (path, tree) in package_modules().items():
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bodies[node.name].add((name, ast.dump(node)))
                if isinstance(node, ast.ClassDef):
                    for item in node.body:
                        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and not item.name.startswith("__"):
                            bodies[f"{node.name}.{item.name}"].add((name, ast.dump(item)))
    twice = {name: sorted(module for module, _ in found) for name, found in bodies.items()
             if len({body for _, body in found}) > 1}
    assert not twice, f"names defined more than once with different bodies: {twice}"


# ---------------------------------------------------------------------------------------------------------------
# Registries against the schema


def schema_property(*keys):
    """The schema node at config path `keys` (through properties / additionalProperties / items)."""
    node = yaml.safe_load(SCHEMA.read_text())
    for key in keys:
        if key == "*":
            node = node.get("additionalProperties") or node["items"]
        else:
            node = node["properties"][key]
    return node


def test_the_one_to_one_registry_equals_the_schema_enum():
    from sae_universality.matching.rules import ONE_TO_ONE_RULES
    from sae_universality.settings import MatchSettings

    assert list(ONE_TO_ONE_RULES) == schema_property("matching", "one_to_one")["enum"]
    assert MatchSettings().one_to_one in ONE_TO_ONE_RULES


def test_the_metric_registry_equals_the_schema_enum():
    from sae_universality.similarity import METRICS

    assert sorted(METRICS) == sorted(schema_property("similarity", "metrics")["items"]["enum"])


def test_the_p_adjustments_sae_formats_and_map_layouts_equal_the_schema_enums():
    from sae_universality.cards.layout import LAYOUTS
    from sae_universality.saes.formats import FORMATS
    from sae_universality.similarity import P_ADJUSTMENTS

    assert list(LAYOUTS) == schema_property("cards", "map_layout")["enum"]

    assert sorted(P_ADJUSTMENTS) == sorted(schema_property("similarity", "p_adjust")["enum"])
    assert sorted(FORMATS) == sorted(schema_property("models", "*", "sae", "pretrained", "format")["enum"])


def test_a_rule_registered_in_a_test_is_selectable_from_a_config_section(monkeypatch):
    """A new one-to-one rule: one function and one table entry, nothing else touched."""
    from sae_universality.matching import match_correlation_matrix
    from sae_universality.matching import rules
    from sae_universality.settings import MatchSettings, from_section

    def lowest_a_wins(pairs: rules.ManyToOnePairs) -> rules.OneToOne:
        # Per A feature keep the row with the *lowest* correlation: unlike every shipped rule.
        eligible = np.nonzero(pairs.eligible)[0]
        order = eligible[np.lexsort((pairs.correlation[eligible], pairs.feature_a[eligible]))]
        first = np.ones(len(order), dtype=bool)
        first[1:] = pairs.feature_a[order][1:] != pairs.feature_a[order][:-1]
        passes = np.zeros(len(pairs.feature_b), dtype=bool)
        passes[order[first]] = True
        return rules.OneToOne(passes, pairs.feature_a.copy(), pairs.correlation.copy())

    monkeypatch.setitem(rules.ONE_TO_ONE_RULES, "weakest", rules.OneToOneRule(lowest_a_wins))
    # B0 and B1 both pick A0 (0.9 and 0.5); B2 picks A1 alone.
    correlation = np.array([[0.9, 0.5, 0.1], [0.0, 0.2, 0.7]])
    settings = from_section(MatchSettings, {"one_to_one": "weakest", "junk_filter": False, "threshold": 0.1})
    table = match_correlation_matrix(correlation, settings=settings)
    assert table.attrs["one_to_one"] == "weakest"
    assert table.loc[table["kept"], ["feature_b", "final_a"]].values.tolist() == [[1, 0], [2, 1]]
    highest = match_correlation_matrix(correlation, settings=from_section(
        MatchSettings, {"one_to_one": "highest", "junk_filter": False, "threshold": 0.1}))
    assert highest.loc[highest["kept"], ["feature_b", "final_a"]].values.tolist() == [[0, 0], [2, 1]]
    with pytest.raises(ValueError, match="one_to_one must be one of highest, first, hungarian, sinkhorn, none, weakest"):
        match_correlation_matrix(correlation, settings=from_section(MatchSettings, {"one_to_one": "nearest"}))


def test_paths_the_package_finds_from_its_own_location_exist():
    """Modules moved into subpackages must still find the repository's files."""
    from sae_universality import config
    from sae_universality.report import docs
    from sae_universality.studies import scaling

    assert config.SCHEMA.is_file() and docs.RESULTS.is_file()
    assert scaling.PRESET.is_file() and (scaling.REPO / "Snakefile").is_file()
