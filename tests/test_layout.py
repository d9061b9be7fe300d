"""The two rooms of the code (README, "How the code is laid out"): the library (convtri/, kernels/)
never imports the application (convtri/lenet/), the application uses the library's public names
alone, and the README's map names every library file and only names that exist."""
import ast
import importlib
import importlib.util
import pathlib
import re
import subprocess
import sys
import types

import torch

import convtri

ROOT = pathlib.Path(__file__).resolve().parent.parent
APP = "convtri.lenet"
DOOR = "convtri.__main__"  # `python -m convtri`: the application's door, in the library's folder
MAP_TITLE = "## How the code is laid out"


def library_files():
    return sorted((ROOT / "convtri").glob("*.py")) + sorted((ROOT / "kernels").glob("*.py"))


def app_files():
    return sorted((ROOT / "convtri" / "lenet").glob("*.py"))


def module_name(path):
    """The dotted name a file of the package is imported as (kernels/ is installed as convtri.kernels)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "kernels":
        parts = ["convtri", *parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def library_modules():
    return [module_name(path) for path in library_files() if module_name(path) != DOOR]


def imports(path):
    """(line, module, names) for every import of a file, at any depth (imports inside functions too)."""
    package = module_name(path) if path.stem == "__init__" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            module = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            yield node.lineno, module, tuple(alias.name for alias in node.names)


def in_app(module, names=()):
    return module == APP or module.startswith(APP + ".") or (module == "convtri" and "lenet" in names)


def test_library_never_imports_the_application():
    # in its source, at any depth: an import inside a function would load the application only when called
    found = [f"{path.relative_to(ROOT)}:{line}: {module}" for path in library_files() if module_name(path) != DOOR
             for line, module, names in imports(path) if in_app(module, names)]
    assert not found, found
    # and when imported, in a fresh interpreter: each module in turn, the package's __init__ first
    check = ("import importlib, sys\n"
             f"for name in {library_modules()!r}:\n"
             "    importlib.import_module(name)\n"
             f"    loaded = sorted(m for m in sys.modules if m == {APP!r} or m.startswith({APP + '.'!r}))\n"
             "    if loaded:\n"
             "        sys.exit(f'importing {name} loaded the application: {loaded}')\n")
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def public_modules():
    return {f"convtri.{name}" for name in convtri.__all__ if isinstance(getattr(convtri, name), types.ModuleType)}


def test_the_application_uses_the_library_public_names_alone():
    public = public_modules()
    assert {"convtri.nn", "convtri.graphs"} <= public
    wrong = []
    for path in app_files():
        where = path.relative_to(ROOT)
        for line, module, names in imports(path):
            if module.partition(".")[0] != "convtri" or in_app(module, names):
                continue
            if module == "convtri":
                wrong += [f"{where}:{line}: from convtri import {name}" for name in names if name not in convtri.__all__]
            elif module not in public:
                wrong.append(f"{where}:{line}: {module} is not one of the library's public modules {sorted(public)}")
            else:
                wrong += [f"{where}:{line}: {module}.{name}" for name in names if name.startswith("_")]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):  # convtri.<name> after `import convtri`
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "convtri"
                    and node.attr not in convtri.__all__ and not node.attr.startswith("__")):
                wrong.append(f"{where}:{node.lineno}: convtri.{node.attr}")
    assert not wrong, wrong


# ----------------------------------------------------------------------------- the README's map

PATH = re.compile(r"(convtri|kernels|tests|perf)/([\w.]+/?)*")
NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
OP = "torch.ops.convtri."


def map_section():
    readme = (ROOT / "README.md").read_text()
    start = readme.index(MAP_TITLE)
    end = readme.find("\n## ", start + len(MAP_TITLE))
    return readme[start:end if end >= 0 else None]


def resolve(owner, dotted):
    """The object ``dotted`` names in ``owner`` (a module, or a folder whose names are its files)."""
    if isinstance(owner, pathlib.Path):
        first, _, rest = dotted.partition(".")
        assert (owner / f"{first}.py").is_file() or (owner / first).is_dir(), f"no {first} in {owner}"
        assert not rest, f"{dotted}: only file names are checked in a folder"
        return
    obj = owner
    for part in dotted.split("."):
        assert hasattr(obj, part), f"{getattr(owner, '__name__', owner)} has no {dotted}"
        obj = getattr(obj, part)


def check_cell(cell):
    """Each backticked name refers to the last file or folder named before it in the cell (the
    public package ``convtri`` before any); ``convtri.*`` to the package, ``torch.ops.convtri.*``
    to a registered op."""
    owner = convtri
    for token in re.findall(r"`([^`]+)`", cell):
        if PATH.fullmatch(token):
            path = ROOT / token
            assert path.exists(), f"{token} does not exist"
            if path.is_dir():
                owner = path
            elif path.suffix == ".py" and path.parent.name in ("convtri", "kernels") and module_name(path) != DOOR:
                owner = importlib.import_module(module_name(path))
            else:
                owner = convtri
        elif token.startswith(OP):
            assert token == OP + "*" or hasattr(torch.ops.convtri, token[len(OP):]), f"no custom op {token}"
        elif token == "convtri" or token.startswith("convtri."):  # the package, wherever it is named
            resolve(convtri, token.partition(".")[2] or "__name__")
        elif NAME.fullmatch(token):
            resolve(owner, token)


def test_readme_map_names_every_library_file_once():
    bullets = [line for line in map_section().splitlines() if line.startswith("- `")]
    firsts = [re.match(r"- `([^`]+)`", line).group(1) for line in bullets]
    library = [str(path.relative_to(ROOT)) for path in library_files()]
    named = [first for first in firsts if first in library]
    assert sorted(named) == library, (f"not named: {sorted(set(library) - set(named))}; "
                                      f"named twice: {sorted({f for f in named if named.count(f) > 1})}")
    assert "convtri/lenet/" in firsts  # the application's one line


def test_readme_map_names_only_what_exists():
    lines = [line for line in map_section().splitlines()[1:] if "`" in line]
    assert len(lines) > 20
    for line in lines:
        for cell in line.split("|"):
            check_cell(cell)
