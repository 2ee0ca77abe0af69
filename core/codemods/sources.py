"""Where a script's hyperparameters come from when arx cannot rewrite them.

``config_sources`` names the config loaders, run-time inputs and command-line overrides a script
uses (a YAML file, Hydra, environment variables, ``exec`` of a configurator, ...), so that
``arx init`` can say why a script has nothing to tune, or warn that what it tunes may be
overridden at run time.
"""

from __future__ import annotations

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from arx.core.codemods.common import dotted, excerpt

__all__ = ["config_sources", "imported_modules", "inline_literals", "loaded_files"]

#: dotted call (or its last part after a module alias) -> what it means
_CALLS = {
    "yaml.safe_load": "a YAML file (yaml.safe_load)",
    "yaml.load": "a YAML file (yaml.load)",
    "yaml.full_load": "a YAML file (yaml.full_load)",
    "OmegaConf.load": "an OmegaConf/YAML file (OmegaConf.load)",
    "OmegaConf.create": "an OmegaConf config (OmegaConf.create)",
    "hydra.main": "Hydra (@hydra.main): configs in YAML files and command-line overrides",
    "hydra.compose": "Hydra (hydra.compose)",
    "json.load": "a JSON file (json.load)",
    "json.loads": "JSON text (json.loads)",
    "tomllib.load": "a TOML file (tomllib.load)",
    "toml.load": "a TOML file (toml.load)",
    "configparser.ConfigParser": "an INI file (configparser)",
    "os.environ.get": "environment variables (os.environ.get)",
    "os.getenv": "environment variables (os.getenv)",
    "fire.Fire": "command-line flags (fire.Fire)",
    "tyro.cli": "command-line flags (tyro.cli) over a dataclass",
    "click.option": "command-line options (click.option)",
    "typer.Option": "command-line options (typer.Option)",
}


class _Sources(cst.CSTVisitor):
    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, int] = {}
        self.strings: list[str] = []
        #: calls with positional numbers (``LSTMCell(1, 51)``), with their lines
        self.inline: list[tuple[str, int]] = []

    def visit_SimpleString(self, node: cst.SimpleString) -> None:
        value = node.evaluated_value
        if isinstance(value, str) and value.strip() and len(value) < 200 \
                and not any(c in value for c in "\n\t {}%*?"):
            self.strings.append(value.strip())

    def _note(self, what: str, node: cst.CSTNode) -> None:
        if what not in self.found:
            self.found[what] = self.get_metadata(PositionProvider, node).start.line

    def visit_Call(self, node: cst.Call) -> None:
        name = dotted(node.func)
        numbers = [a for a in node.args if a.keyword is None and not a.star and _number(a.value)]
        if numbers:
            shown = ", ".join(cst.Module([]).code_for_node(a.value)
                              if a in numbers else "..." for a in node.args)
            line = self.get_metadata(PositionProvider, node).start.line
            self.inline.append((f"{(name or 'call').rsplit('.', 1)[-1]}({excerpt(shown)})",
                                line))
        if name in _CALLS:
            self._note(_CALLS[name], node)
        elif name == "exec":
            self._note("exec() of other code (e.g. nanoGPT's configurator.py: command-line "
                       "flags and config files override the constants)", node)

    def visit_Decorator(self, node: cst.Decorator) -> None:
        name = dotted(node.decorator.func if isinstance(node.decorator, cst.Call)
                       else node.decorator)
        if name in _CALLS:
            self._note(_CALLS[name], node)

    def visit_Subscript(self, node: cst.Subscript) -> None:
        name = dotted(node.value)
        if name == "os.environ":
            self._note("environment variables (os.environ[...])", node)
        elif name == "sys.argv":
            self._note("command-line arguments read from sys.argv", node)


def _number(node: cst.BaseExpression) -> bool:
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus):
        node = node.expression
    return isinstance(node, (cst.Integer, cst.Float))


def _visited(source: str, visitor: cst.CSTVisitor) -> bool:
    """Walk ``source`` with ``visitor`` (positions available); False when it does not parse."""
    try:
        module = cst.parse_module(source)
    except cst.ParserSyntaxError:
        return False
    MetadataWrapper(module, unsafe_skip_copy=True).visit(visitor)
    return True


def inline_literals(source: str) -> list[tuple[str, int]]:
    """Calls in ``source`` with positional numbers (``LSTMCell(1, 51)`` with its line): values
    a script writes inline that arx does not tune, as a position is their only name (named
    when init refuses a script; literal keywords are settings). Empty when the source does
    not parse."""
    visitor = _Sources()
    return visitor.inline if _visited(source, visitor) else []


def config_sources(module: cst.Module) -> tuple[list[str], list[str]]:
    """What the script reads its settings from, each with the line of its first use (e.g.
    ``a YAML file (yaml.safe_load) at line 12``), and its string literals that could be paths
    (``data``, ``data/train.bin``), in order of appearance."""
    visitor = _Sources()
    MetadataWrapper(module, unsafe_skip_copy=True).visit(visitor)
    return [f"{what} at line {line}" for what, line in visitor.found.items()], \
        list(dict.fromkeys(visitor.strings))


class _Imports(cst.CSTVisitor):
    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, int] = {}

    def _add(self, name: str, node: cst.CSTNode) -> None:
        self.found.setdefault(name, self.get_metadata(PositionProvider, node).start.line)

    def visit_Import(self, node: cst.Import) -> None:
        for alias in node.names:
            self._add(dotted(alias.name), node)

    def visit_ImportFrom(self, node: cst.ImportFrom) -> None:
        if node.module is not None and not node.relative:
            self._add(dotted(node.module), node)


def imported_modules(source: str) -> list[tuple[str, int]]:
    """Absolute imports of ``source`` (``config``, ``cfg.optim``) with the line of the first,
    so that ``arx init`` can name the ones that are files of the user's own repository."""
    visitor = _Imports()
    return list(visitor.found.items()) if _visited(source, visitor) else []


#: calls that read a config file, by their dotted name's last two parts
_LOADERS = {"yaml.safe_load", "yaml.load", "yaml.full_load", "json.load", "json.loads",
            "tomllib.load", "tomllib.loads", "tomli.load", "toml.load", "OmegaConf.load"}


class _Loads(cst.CSTVisitor):
    """Loader calls whose file is a literal path: ``yaml.safe_load(open("c.yaml"))``,
    ``tomllib.load(open(PATH, "rb"))`` with a module-level ``PATH = "c.toml"``,
    ``with open("c.json") as f: json.load(f)``, ``OmegaConf.load("c.yaml")``,
    ``json.loads(Path("c.json").read_text())``."""

    METADATA_DEPENDENCIES = (PositionProvider,)

    def __init__(self) -> None:
        super().__init__()
        #: module-level ``NAME = "literal"`` strings, read before the walk (``visit_Module``)
        self.constants: dict[str, str] = {}
        #: names bound by ``with open(LITERAL) as NAME``
        self.handles: dict[str, str] = {}
        self.found: dict[str, int] = {}

    def visit_Module(self, node: cst.Module) -> None:
        for line in node.body:
            if isinstance(line, cst.SimpleStatementLine):
                for stmt in line.body:
                    if isinstance(stmt, cst.Assign) and len(stmt.targets) == 1 \
                            and isinstance(stmt.targets[0].target, cst.Name) \
                            and isinstance(stmt.value, cst.SimpleString) \
                            and isinstance(stmt.value.evaluated_value, str):
                        self.constants[stmt.targets[0].target.value] = \
                            stmt.value.evaluated_value

    def _path(self, node: cst.BaseExpression) -> str | None:
        if isinstance(node, (cst.SimpleString, cst.ConcatenatedString)):
            value = node.evaluated_value
            return value if isinstance(value, str) else None
        if isinstance(node, cst.Name):
            return self.constants.get(node.value) or self.handles.get(node.value)
        if isinstance(node, cst.Call) and node.args:
            name = dotted(node.func).rsplit(".", 1)[-1]
            if name in ("open", "Path") and not node.args[0].keyword:
                return self._path(node.args[0].value)
        if isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) \
                and node.func.attr.value in ("read", "read_text", "read_bytes", "open"):
            inner = node.func.value
            return self._path(inner) if isinstance(inner, cst.Call) else None
        return None

    def visit_With(self, node: cst.With) -> None:
        for item in node.items:
            if item.asname is not None and isinstance(item.asname.name, cst.Name):
                path = self._path(item.item)
                if path:
                    self.handles[item.asname.name.value] = path

    def visit_Call(self, node: cst.Call) -> None:
        name = ".".join(dotted(node.func).split(".")[-2:])
        if name in _LOADERS and node.args and node.args[0].keyword is None:
            path = self._path(node.args[0].value)
            if path and path not in self.found:
                self.found[path] = self.get_metadata(PositionProvider, node).start.line


def loaded_files(source: str) -> list[tuple[str, int]]:
    """The config files ``source`` reads through a loader call with a literal path (see
    ``_Loads``), each with the line of its first load; empty when the source does not parse."""
    visitor = _Loads()
    return list(visitor.found.items()) if _visited(source, visitor) else []
