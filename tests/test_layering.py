"""Dependencies point one way: app/core (settings, models, jobs, staging, secrets, the OMERO boundary)
imports neither Flask nor the web side nor workers/; workers/ uses the core and converters/ only, never
Flask; the web side (app/ outside core) sends work by task name and never imports workers/; the light
client (app/client) and the grouping rule it uses (with the plugins' declarations, read as text) import only
the standard library and requests."""
import ast
import sys

import pytest

from tests.helpers import ROOT

CLIENT_ALLOWED = {"requests", "app", "converters"}  # app.client and the CLIENT_CONVERTERS only, checked below
CLIENT_CONVERTERS = ("converters.grouping", "converters.declared")
CLIENT_MODULES = ("app.client", *CLIENT_CONVERTERS)
APP_PACKAGE = ("app", "app.__version__")  # app/__init__.py holds the version and imports nothing


def modules(package: str):
    """(module name, path) of every module under a top-level folder of the checkout."""
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imports(path) -> set[str]:
    """Every module a file imports, at the top or inside a function, absolute names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}  # `from app import core`
    return found


def within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def broken_rules(module: str, imported: set[str]) -> list[str]:
    if within(module, "app.core"):
        bad = [i for i in imported if within(i, "flask", "flask_wtf", "werkzeug", "workers")
               or (within(i, "app") and not within(i, "app.core") and i not in APP_PACKAGE)]
        return [f"{module} (core) imports {i}" for i in bad]
    if within(module, "workers"):
        bad = [i for i in imported if within(i, "flask", "flask_wtf", "werkzeug")
               or (within(i, "app") and not within(i, "app.core") and i not in APP_PACKAGE)]
        return [f"{module} (a worker) imports {i}" for i in bad]
    if within(module, *CLIENT_MODULES):
        bad = [i for i in imported if i.split(".")[0] not in sys.stdlib_module_names | CLIENT_ALLOWED
               or (within(i, "app") and not within(i, "app.client", "app.__version__"))
               or (within(i, "converters") and not within(i, *CLIENT_CONVERTERS))]
        return [f"{module} (the light client) imports {i}" for i in bad]
    if within(module, "app"):
        # only the entry points build an app: a blueprint importing the factory makes an import circle
        return [f"{module} (the web side) imports {i}" for i in imported if within(i, "workers")
                or (within(i, "app.factory") and not within(module, "app.cli"))]
    return []


def test_every_module_keeps_its_side_of_the_dependency_rules():
    broken = [rule for package in ("app", "workers", "converters")
              for module, path in modules(package) for rule in broken_rules(module, imports(path))]
    assert broken == []


@pytest.mark.parametrize("module, source, rule", [
    ("app.core.jobs", "from flask import current_app", "(core) imports flask"),
    ("app.core.models", "import workers.pipeline", "(core) imports workers.pipeline"),
    ("app.core.staging", "from app.api import bp", "(core) imports app.api"),
    ("workers.pipeline", "from flask import Flask", "(a worker) imports flask"),
    ("workers.tasks", "from app.auth import login_required", "(a worker) imports app.auth"),
    ("app.api", "def f():\n    from workers import pipeline", "(the web side) imports workers"),
    ("app.auth", "def f():\n    from app.factory import csrf", "(the web side) imports app.factory"),
    ("app.client.push", "import numpy", "(the light client) imports numpy"),
    ("converters.grouping", "from converters.registry import convert", "(the light client) imports converters.registry"),
    ("converters.declared", "from converters.formats import tia", "(the light client) imports converters.formats.tia"),
])
def test_the_rules_catch_an_import_the_wrong_way(tmp_path, module, source, rule):
    path = tmp_path / "m.py"
    path.write_text(source + "\n")
    assert any(rule in broken for broken in broken_rules(module, imports(path)))
