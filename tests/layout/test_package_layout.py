"""The package's import structure: what may import what (read from the source, not run)."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipe" / "depo"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function (relative imports resolved)."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join(base + ([node.module] if node.module else [])))
            else:
                names.add(node.module)
    return names


def modules_under(root: Path, skip: tuple[str, ...] = ()) -> dict[str, set[str]]:
    files = sorted(p for p in root.rglob("*.py") if not any(part in skip for part in p.relative_to(root).parts))
    assert files, f"no Python files under {root}"
    return {str(p.relative_to(REPO)): imported_modules(p) for p in files}


def test_recipe_imports_nothing_from_data_prep():
    # data_prep builds parquet files and imports the recipe's text and reward rules; the recipe
    # must not depend back on it (the demo's task lives in recipe/depo/demo/arithmetic_task.py).
    offenders = {
        file: sorted(m for m in mods if m == "data_prep" or m.startswith("data_prep."))
        for file, mods in modules_under(RECIPE).items()
    }
    assert not {f: m for f, m in offenders.items() if m}


def test_the_estimator_text_imports_with_data_prep_blocked():
    # Also at run time: training's and the router's text functions import with data_prep unimportable.
    code = (
        "import sys; sys.modules['data_prep'] = None\n"
        "import recipe.depo.prompt_text, recipe.depo.labels, recipe.depo.intake, recipe.depo.router.problem_text\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]


SIDE_PRODUCTS = ("router", "evaluate", "report", "cpu", "demo")


def core_modules() -> dict[str, set[str]]:
    return {f: m for f, m in modules_under(RECIPE, skip=SIDE_PRODUCTS).items() if not f.endswith("extras.py")}


def test_training_core_imports_no_side_product_nor_its_dependencies():
    from recipe.depo.extras import EXTRAS

    side_modules = {module for deps in EXTRAS.values() for module in deps.values()}
    side_packages = {f"recipe.depo.{name}" for name in SIDE_PRODUCTS}
    offenders = {}
    for file, mods in core_modules().items():
        bad = sorted(
            m
            for m in mods
            if m.split(".")[0] in side_modules or any(m == p or m.startswith(p + ".") for p in side_packages)
        )
        if bad:
            offenders[file] = bad
    assert not offenders
    assert "recipe/depo/trainer.py" in core_modules() and "recipe/depo/estimator/online.py" in core_modules()


def test_side_products_dependencies_are_declared_where_they_are_imported():
    # Each extra's modules are imported by its side product, and by nothing outside the side products.
    from recipe.depo.extras import EXTRAS

    imported = modules_under(RECIPE)
    for extra, deps in EXTRAS.items():
        users = {f for f, mods in imported.items() for m in mods if m.split(".")[0] in deps.values()}
        assert users and all(f.startswith(f"recipe/depo/{extra}/") for f in users), (extra, sorted(users))


def test_a_side_product_without_its_extra_says_what_to_install_in_one_line(tmp_path):
    # matplotlib made unimportable, as on a training-only install
    code = (
        "import sys, runpy; sys.modules['matplotlib'] = None\n"
        f"sys.argv = ['report', '--runs', 'A={tmp_path}', '--output', '{tmp_path / 'out'}']\n"
        "runpy.run_module('recipe.depo.report', run_name='__main__')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert lines == [
        "depo: python -m recipe.depo.report needs the 'report' extra (matplotlib not installed): "
        "pip install 'depo-verl[report]'"
    ], run.stderr[-2000:]
    assert not (tmp_path / "out").exists()
