"""Dependencies point one way: app/core (settings, models, jobs, staging, secrets, the OMERO boundary)
imports neither Flask nor the web side nor workers/; workers/ uses the core and converters/ only, never
Flask; the web side (app/ outside core) sends work by task name and never imports workers/; the light
client (app/client) and the grouping rule it uses (with the plugins' declarations, read as text) import only
the standard library and requests.

The web side's house: a blueprint package's __init__ only makes its `bp`; its routes live in named modules the
factory imports, so the web side's imports (the factory, the extensions, auth, the blueprints) form no circle."""
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
    ("app.core.staging", "from app.api.batches import new_batch", "(core) imports app.api"),
    ("workers.pipeline", "from flask import Flask", "(a worker) imports flask"),
    ("workers.tasks", "from app.auth.guards import login_required", "(a worker) imports app.auth"),
    ("app.api.files", "def f():\n    from workers import pipeline", "(the web side) imports workers"),
    ("app.auth.identify", "def f():\n    from app.factory import csrf", "(the web side) imports app.factory"),
    ("app.client.push", "import numpy", "(the light client) imports numpy"),
    ("converters.grouping", "from converters.registry import convert", "(the light client) imports converters.registry"),
    ("converters.declared", "from converters.formats import tia", "(the light client) imports converters.formats.tia"),
])
def test_the_rules_catch_an_import_the_wrong_way(tmp_path, module, source, rule):
    path = tmp_path / "m.py"
    path.write_text(source + "\n")
    assert any(rule in broken for broken in broken_rules(module, imports(path)))


WEB_SIDE_EXCLUDED = ("app.core", "app.client")  # their own rules above; the core's omero package loads its backends lazily


def web_modules() -> dict:
    return {module: path for module, path in modules("app") if not within(module, *WEB_SIDE_EXCLUDED)}


def adds_routes(path) -> bool:
    """Whether a module decorates views or hooks onto a blueprint (`@bp....`)."""
    return any(isinstance(d, ast.Call) and isinstance(d.func, ast.Attribute) and isinstance(d.func.value, ast.Name)
               and d.func.value.id == "bp" or isinstance(d, ast.Attribute) and isinstance(d.value, ast.Name)
               and d.value.id == "bp" for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.FunctionDef) for d in node.decorator_list)


def makes_a_blueprint(path) -> bool:
    return any(isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Blueprint"
               for node in ast.walk(ast.parse(path.read_text())))


def init_problems(source: str) -> list[str]:
    """What a blueprint package's __init__ holds beyond its docstring, `from __future__`, the Blueprint import
    and `bp = Blueprint(...)`."""
    problems = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue
        if isinstance(node, ast.ImportFrom) and (node.module == "__future__" or (
                node.module == "flask" and [a.name for a in node.names] == ["Blueprint"])):
            continue
        if (isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["bp"]
                and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", None) == "Blueprint"):
            continue
        problems.append(f"line {node.lineno}: {ast.unparse(node).splitlines()[0]}")
    return problems


def blueprint_packages() -> list[str]:
    return [module for module, path in web_modules().items() if path.name == "__init__.py" and makes_a_blueprint(path)]


def test_the_blueprint_packages_are_found():
    assert {"app.api", "app.auth", "app.main", "app.staff"} <= set(blueprint_packages())


@pytest.mark.parametrize("package", blueprint_packages())
def test_a_blueprint_package_init_only_makes_its_bp(package):
    assert init_problems(web_modules()[package].read_text()) == []


def test_a_route_outside_its_modules_is_refused():
    assert init_problems('"""Doc."""\nfrom flask import Blueprint\n\nbp = Blueprint("x", __name__)\n') == []
    assert init_problems("from flask import Blueprint\nbp = Blueprint('x', __name__)\n"
                         "@bp.get('/')\ndef index():\n    pass\n") == ["line 4: @bp.get('/')"]
    assert init_problems("from app.x import routes\n") == ["line 1: from app.x import routes"]


def test_the_factory_imports_every_module_that_adds_routes():
    """A route module nobody imports would leave its URLs silently missing."""
    packages = blueprint_packages()
    route_modules = {module for module, path in web_modules().items()
                     if any(within(module, p) for p in packages) and adds_routes(path)}
    assert len(route_modules) >= len(packages)  # the check sees them: every blueprint has routes
    assert route_modules - imports(web_modules()["app.factory"]) == set()


def import_graph(found: dict) -> dict[str, set[str]]:
    """Each module's imports among `found`, top-level or inside functions; importing a.b.c runs a and a.b too."""
    def owners(name: str):
        while name:
            if name in found:
                yield name
            name = name.rpartition(".")[0]
    return {module: {owner for name in imports(path) for owner in owners(name)} - {module}
            for module, path in found.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, done = [], set()

    def visit(module: str, path: list[str]):
        for imported in sorted(graph[module]):
            if imported in path:
                found.append(path[path.index(imported):] + [imported])
            elif imported not in done:
                visit(imported, path + [imported])
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    return found


def test_no_import_circle_on_the_web_side():
    """The factory, the extensions, auth, the blueprints and their modules import each other one way only."""
    assert circles(import_graph(web_modules())) == []


def test_an_import_circle_is_found(tmp_path):
    (tmp_path / "a.py").write_text("from b import f\n")
    (tmp_path / "b.py").write_text("def f():\n    import a\n")
    (tmp_path / "c.py").write_text("import a\n")
    graph = import_graph({name: tmp_path / f"{name}.py" for name in ("a", "b", "c")})
    assert graph == {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert circles(graph) == [["a", "b", "a"]]
