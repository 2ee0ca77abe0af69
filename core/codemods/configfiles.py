"""Config files as the target: the settings of a YAML, TOML or JSON file, found and rewritten
with parsers made for the format, never with regular expressions.

A setting is a leaf of the file's nested mappings, named by its path (``optim.lr``): a number,
bool, string or null, or a flow list of those (``[0.9, 0.95]``). Each format keeps what the
user wrote:

- YAML: ruamel.yaml composes the file into nodes that know where each value starts and ends;
  the new value is written over exactly that span, so comments, order, quoting and indentation
  stay byte for byte. A value that YAML 1.1 (PyYAML's ``yaml.safe_load``) and YAML 1.2 read
  differently (``1e-3``, ``yes``), an anchored value, a merge key or Hydra's ``defaults`` list
  is skipped with the reason; floats are written as both read them (``1.0e-05``).
- TOML: tomlkit sets the value in its document, which keeps comments and layout.
- JSON: the file is rewritten with its own indentation (JSON holds no comments).

Every rewrite is read back: the new value must be there and every other leaf unchanged.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from pathlib import PurePosixPath

import tomlkit
import yaml as pyyaml
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, ScalarNode, SequenceNode

from arx.core.codemods.records import Constant, Scan, Skipped
from arx.core.codemods.values import kind_of
from arx.core.errors import PatchError, close_hint

__all__ = ["FORMATS", "apply_config", "config_format", "scan_config"]

#: suffix -> format (also the ``Constant.surface`` of its settings)
FORMATS = {".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".json": "json"}
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")


def config_format(path: str | None) -> str | None:
    """The config format a target's suffix says (``yaml``, ``toml``, ``json``), else None."""
    return FORMATS.get(PurePosixPath(path).suffix.lower()) if path else None


def _plain(value: object) -> object:
    """A parsed value as plain Python (ruamel and tomlkit subclass int, float, str, list)."""
    if isinstance(value, bool):
        return bool(value)
    for kind in (int, float, str):
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _leaf(value: object) -> bool:
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, list) and all(_leaf(v) and not isinstance(v, list) for v in value)


def _leaves(data: Mapping, prefix: str = "") -> Iterator[tuple[str, object, str | None]]:
    """(path, value, why it is skipped or None) of every leaf, in the file's order."""
    for key, value in data.items():
        name = f"{prefix}{key}"
        if not isinstance(key, str) or not _KEY.match(key):
            yield name, value, "the key is not a plain name"
        elif isinstance(value, Mapping):
            yield from _leaves(value, f"{name}.")
        elif _leaf(value):
            yield name, value, None
        else:
            yield name, value, "not a number, bool, string, null or flat list"


# -- YAML: spans of composed nodes ---------------------------------------------------------------


def _yaml_data(source: str) -> tuple[dict, dict]:
    """The file read as YAML 1.2 (ruamel.yaml, OmegaConf) and as YAML 1.1 (PyYAML's
    ``yaml.safe_load``, what most scripts call)."""
    try:
        new, old = YAML(typ="safe", pure=True).load(source), pyyaml.safe_load(source)
    except (YAMLError, pyyaml.YAMLError) as e:
        raise PatchError(f"the YAML file does not parse: {e}") from None
    if not isinstance(new, Mapping):
        raise PatchError("the YAML file is not a mapping of settings")
    return _plain(new), _plain(old)  # type: ignore[return-value]


def _yaml_nodes(node, prefix: str = "") -> Iterator[tuple[str, object, str | None]]:
    """(path, value node, why skipped) for the composed mapping ``node``."""
    for key, value in node.value:
        name = f"{prefix}{key.value}"
        if key.value == "<<":
            yield name, value, "a merge key (<<): its values belong to another mapping"
        elif not prefix and key.value == "defaults" and isinstance(value, SequenceNode):
            yield name, value, "Hydra's defaults list composes configs; it is not a value"
        elif value.anchor is not None:
            yield name, value, f"anchored (&{value.anchor}): other keys refer to it"
        elif isinstance(value, MappingNode):
            yield from _yaml_nodes(value, f"{name}.")
        elif isinstance(value, SequenceNode) and not value.flow_style:
            yield name, value, "a block list (write it as [a, b] to tune it)"
        else:
            yield name, value, None


def _get(data: Mapping, name: str) -> object:
    for part in name.split("."):
        data = data[part]  # type: ignore[assignment,index]
    return data


def _set(data: dict, name: str, value: object) -> None:
    *parents, last = name.split(".")
    for part in parents:
        data = data[part]
    data[last] = value


def _render_yaml(value: object, like: ScalarNode | None) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise PatchError(f"{value!r} cannot be written as a YAML number both versions read")
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        if "." not in mantissa:
            mantissa += ".0"  # YAML 1.1 reads 1e-05 as a string
        if e and exponent[0] not in "+-":
            exponent = "+" + exponent
        return mantissa + e + exponent
    if isinstance(value, str):
        style = like.style if isinstance(like, ScalarNode) else '"'
        if style is None and _PLAIN.match(value):
            return value
        if style == "'":
            return "'" + value.replace("'", "''") + "'"
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_render_yaml(v, None) for v in value) + "]"
    raise PatchError(f"a {type(value).__name__} value ({value!r}) cannot be written in YAML")


def _yaml_scan(source: str) -> tuple[list[Constant], list[Skipped], dict]:
    new, old = _yaml_data(source)
    root = YAML().compose(source)
    found, skipped, spans = [], [], {}
    for name, node, why in _yaml_nodes(root) if root is not None else ():
        line = node.start_mark.line + 1
        value = _get(new, name)
        if why is None and not _leaf(value):
            why = "not a number, bool, string, null or flat list"
        if why is None:
            try:
                other = _get(old, name)
            except (KeyError, TypeError):
                other = "another key"
            if other != value or type(other) is not type(value):
                why = (f"YAML 1.1 (PyYAML) reads it as {other!r} and YAML 1.2 as {value!r}: "
                       "quote it or write it as both read it")
        if why is not None:
            skipped.append(Skipped(name, line, why))
            continue
        text = source[node.start_mark.index:node.end_mark.index]
        found.append(Constant(name, _tuple_free(value), kind_of(_tuple_free(value)), text, None,
                              line, None, surface="yaml"))
        spans[name] = node
    return found, skipped, spans


def _tuple_free(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


# -- TOML and JSON: whole documents --------------------------------------------------------------


def _toml_doc(source: str):
    try:
        return tomlkit.parse(source)
    except Exception as e:  # tomlkit raises its own ParseError subclasses
        raise PatchError(f"the TOML file does not parse: {e}") from None


def _json_data(source: str) -> dict:
    try:
        data = json.loads(source)
    except json.JSONDecodeError as e:
        raise PatchError(f"the JSON file does not parse (line {e.lineno}): {e.msg}") from None
    if not isinstance(data, dict):
        raise PatchError("the JSON file is not an object of settings")
    return data


def _json_dump(data: Mapping, source: str) -> str:
    """``data`` as JSON in the file's own indentation (and final newline)."""
    indent = next((len(line) - len(line.lstrip(" ")) for line in source.splitlines()[1:]
                   if line.strip() and line.startswith(" ")), None)
    if indent is None and "\t" in source:
        text = json.dumps(data, indent="\t", ensure_ascii=False)
    else:
        text = json.dumps(data, indent=indent, ensure_ascii=False)
    return text + ("\n" if source.endswith("\n") else "")


def _document(source: str, fmt: str) -> dict:
    return _toml_doc(source).unwrap() if fmt == "toml" else _json_data(source)


def _write(source: str, fmt: str, changes: Mapping[str, object]) -> str:
    if fmt == "toml":
        doc = _toml_doc(source)
        for name, value in changes.items():
            *parents, last = name.split(".")
            table = doc
            for part in parents:
                table = table[part]
            table[last] = list(value) if isinstance(value, tuple) else value
        return tomlkit.dumps(doc)
    data = _json_data(source)
    for name, value in changes.items():
        _set(data, name, list(value) if isinstance(value, tuple) else value)
    return _json_dump(data, source)


def _lines(source: str, fmt: str, names: list[str]) -> dict[str, int]:
    """The line of each setting: where the file changes when only that value does."""
    before = source.splitlines()
    out = {}
    for name in names:
        after = _write(source, fmt, {name: "\u2063arx-probe\u2063"}).splitlines()
        out[name] = next((k + 1 for k, (a, b) in enumerate(zip(before, after)) if a != b), 0)
    return out


def _document_scan(source: str, fmt: str, lines_too: bool = True
                   ) -> tuple[list[Constant], list[Skipped]]:
    data = _document(source, fmt)
    leaves = list(_leaves(data))
    names = [n for n, _, why in leaves if why is None]
    lines = _lines(source, fmt, names) if lines_too else dict.fromkeys(names, 0)
    found, skipped = [], []
    for name, value, why in leaves:
        if why is not None:
            skipped.append(Skipped(name, 0, why))
        else:
            text = json.dumps(value) if fmt == "json" else tomlkit.item(value).as_string()
            found.append(Constant(name, value, kind_of(value), text, None, lines[name], None,
                                  surface=fmt))
    return found, skipped


# -- the interface -------------------------------------------------------------------------------


def scan_config(source: str, fmt: str, lines_too: bool = True) -> Scan:
    """The settings of a config file (see the module docstring) and what was skipped, why;
    ``lines_too`` False: TOML and JSON settings without their lines (one rewrite per setting
    finds them), for a patch that only needs the names."""
    if fmt == "yaml":
        found, skipped, _ = _yaml_scan(source)
    else:
        found, skipped = _document_scan(source, fmt, lines_too)
    return Scan(found=tuple(found), skipped=tuple(skipped), sources=())


def apply_config(source: str, changes: Mapping[str, object], fmt: str) -> str:
    """``source`` with the named settings set; every other byte kept (YAML, TOML) or the
    file rewritten in its own indentation (JSON). Raises ``PatchError`` for a name that is not
    a setting or a result that does not read back as asked."""
    if not changes:
        return source
    scan = scan_config(source, fmt, lines_too=False)
    by_name = {c.name: c for c in scan.found}
    for name in changes:
        if name not in by_name:
            skip = next((s for s in scan.skipped if s.name == name), None)
            raise PatchError(f"{name} is not a setting arx can rewrite in this {fmt.upper()} "
                             f"file" + (f": {skip.reason}" if skip else close_hint(name, by_name)))
    if fmt == "yaml":
        _, _, spans = _yaml_scan(source)
        edits = sorted(((spans[n].start_mark.index, spans[n].end_mark.index,
                         _render_yaml(v, spans[n])) for n, v in changes.items()), reverse=True)
        result = source
        for start, end, text in edits:  # from the end, so earlier offsets stay valid
            result = result[:start] + text + result[end:]
        pairs = list(zip(_yaml_data(source), _yaml_data(result)))  # YAML 1.2, then 1.1
    else:
        result = _write(source, fmt, changes)
        pairs = [(_document(source, fmt), _document(result, fmt))]
    for before, after in pairs:  # every value as asked, every other one as it was
        for name, value in changes.items():
            _set(before, name, _tuple_free(value))
        if after != before:
            raise PatchError(f"patching {', '.join(changes)} in the {fmt.upper()} file did not "
                             "round-trip")
    return result
