"""The package's shape, as docs/architecture.md draws it: imports go downward only, every module says its job
in its first line, and the training package keeps to small modules and functions."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "omni_gpt2o"

# Bottom first: a module may import only modules listed before it (docs/architecture.md draws these layers).
LAYERS = [
    # foundations: no model library needed for most of them
    "fileio", "options", "config", "utils", "bars", "drafts", "scheduler",
    # data
    "data", "data.dataset", "data.coco", "data.photos", "data.shapes", "data.wordings", "data.emoji", "data.text_cache",
    "data.cache",
    # the model: frozen backbones, trained glue, checkpoints
    "backbones", "decoder", "palette", "reader", "model", "checkpoint", "sd_drafts",
    # using a model
    "pipeline", "judge", "emoji_judge", "evaluate", "generate", "serve",
    # training, bottom first
    "train.config", "train.schedule", "train.ema", "train.learner", "train.step", "train.data", "train.validation",
    "train.plots", "train.record", "train.loop", "train",
    # jobs made of the above, and the command line
    "compute", "demo", "cli", "__main__",
]
# Imports made inside a function that point up, each with its reason.
UPWARD_EXCEPTIONS = {
    ("data.shapes", "data.wordings"),  # make_shapes(wording="unseen") captions with the words shapes' grammar lacks
}


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
        if name != "__init__":  # the package root: __version__ and lazy names only
            found[name] = ast.parse(path.read_text())
    return found


def imported(tree: ast.Module) -> set[str]:
    """The omni_gpt2o modules a module imports, anywhere in it (a name imported from a package counts as its
    submodule when there is one)."""
    out = set()
    known = set(LAYERS)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("omni_gpt2o"):
            base = node.module.removeprefix("omni_gpt2o").removeprefix(".")
            subs = {f"{base}.{a.name}".lstrip(".") for a in node.names} & known
            out |= subs or ({base} if base else set())
        elif isinstance(node, ast.Import):
            out |= {a.name.removeprefix("omni_gpt2o.") for a in node.names if a.name.startswith("omni_gpt2o.")}
    return out


def test_every_module_has_its_place_in_the_layers():
    assert sorted(modules()) == sorted(LAYERS), "place a new module in LAYERS (and docs/architecture.md)"


def test_imports_go_downward_only():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = [(name, dep) for name, tree in modules().items() for dep in imported(tree)
              if rank[dep] >= rank[name] and (name, dep) not in UPWARD_EXCEPTIONS]
    assert upward == []


def test_every_module_opens_with_one_sentence_saying_its_job():
    for name, tree in modules().items():
        doc = ast.get_docstring(tree)
        assert doc, f"{name} has no docstring"
        assert len(doc.split("\n\n")[0]) <= 330, f"{name}: say the job in a sentence, the rest after a blank line"


def test_the_training_package_keeps_small_modules_and_functions():
    for path in sorted((PACKAGE / "train").glob("*.py")):
        lines = path.read_text().splitlines()
        assert len(lines) <= 300, f"{path.name}: {len(lines)} lines"
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, ast.FunctionDef):
                assert node.end_lineno - node.lineno < 62, f"{path.name}: {node.name}"
