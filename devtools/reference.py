"""Write docs/building-blocks.md, the reference of the package's public classes, from their code.

Per class: its import path, its docstring, a table of its constructor arguments (the default from
its signature, "templated" from ``template_fields``, the text from its ``:param:`` line) and what it
returns, pushes to XCom, raises or yields, as its docstring's field list says:

    :param name: ...         one per constructor argument (``**kwargs`` aside)
    :returns: ...            an operator's or sensor's ``return_value`` XCom
    :xcom key: ...           every other XCom key it pushes
    :raises ErrorName: ...   what fails (or skips) the task, and whether Airflow retries it
    :event kind: ...         a trigger's events

A field's text may go on over more-indented lines. A class inherits the fields of its base classes
in the package, so an argument a base class takes is documented once, in that class's docstring.
``tests/devtools/test_reference.py`` fails while the page is not what this writes, and names each
argument, result or event a docstring leaves out.

    python -m devtools.reference           # rewrite the page
    python -m devtools.reference --check   # exit 1 if the page is stale or a docstring incomplete
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import os
import re
import sys
import textwrap
from dataclasses import dataclass
from typing import Any

from devtools.services import AIRFLOW_HOME, ROOT

PACKAGE = "azureml_retrain"
PAGE = ROOT / "docs" / "building-blocks.md"
COMMAND = "python -m devtools.reference"
EXAMPLE_DAG = "dags/example_handwritten_retraining.py"


@dataclass(frozen=True)
class Group:
    """A section of the page: the public names of one module (its ``__all__`` unless given)."""

    title: str
    module: str
    names: tuple[str, ...] = ()


GROUPS = (
    Group("Sensors", f"{PACKAGE}.sensors"),
    Group("Operators", f"{PACKAGE}.operators"),
    Group("Triggers", f"{PACKAGE}.triggers"),
    Group("Hooks", f"{PACKAGE}.hooks"),
    Group("Links", f"{PACKAGE}.links", ("AzureMLLink",)),
)

FIELD = re.compile(r"^:(param|returns?|xcom|raises?|event)(?:\s+([^:]+?))?:(?:\s+(.*))?$")
# The field kinds after the argument table, with their headings, in the page's order.
SECTIONS = {
    "returns": "Returns (its `return_value` XCom)",
    "xcom": "Other XCom keys it pushes",
    "raises": "Fails or skips with",
    "event": "Events it yields",
}
TEMPLATED = re.compile(r"\s*\(templated\)")
ROLE = re.compile(r":[a-z]+:`(~?)([^`]+)`")
INLINE_LITERAL = re.compile(r"``(.+?)``", re.DOTALL)


@dataclass(frozen=True)
class Docstring:
    summary: str
    body: str
    # (kind, name) → text; ``name`` is "" for ``:returns:``.
    fields: dict[tuple[str, str], str]


def parse_docstring(owner: type) -> Docstring:
    """The summary, the prose and the field list of ``owner``'s own docstring (not an inherited one)."""
    prose: list[str] = []
    fields: dict[tuple[str, str], list[str]] = {}
    current: list[str] | None = None
    for line in inspect.cleandoc(vars(owner).get("__doc__") or "").splitlines():
        if match := FIELD.match(line):
            kind = {"return": "returns", "raise": "raises"}.get(match[1], match[1])
            current = fields.setdefault((kind, (match[2] or "").strip()), [])
            current.append(match[3] or "")
        elif current is None:
            prose.append(line)
        elif line.startswith(" ") or not line.strip():
            current.append(line)
        else:
            raise ValueError(f"{owner.__name__}: prose after the docstring's field list: {line!r}")
    summary, _, body = "\n".join(prose).strip().partition("\n\n")
    return Docstring(
        " ".join(summary.split()), body.strip(), {k: " ".join(" ".join(v).split()) for k, v in fields.items()}
    )


def in_package(owner: type) -> bool:
    return owner.__module__.startswith(f"{PACKAGE}.")


def package_classes(cls: type) -> list[type]:
    """``cls`` and its base classes in the package, most derived first."""
    return [owner for owner in cls.__mro__ if in_package(owner)]


def documented_fields(cls: type) -> dict[tuple[str, str], str]:
    """The docstring fields of ``cls`` and its package base classes; a subclass's field wins."""
    merged: dict[tuple[str, str], str] = {}
    for owner in package_classes(cls):
        for key, text in parse_docstring(owner).fields.items():
            merged.setdefault(key, text)
    return merged


class WrittenDefault:
    """A default computed by a call when the class is defined, shown as written (its value depends on
    the configuration of the process that imported it, e.g. ``[operators] default_deferrable``)."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __repr__(self) -> str:
        return self.source


def computed_defaults(function: Any) -> dict[str, WrittenDefault]:
    """The parameters of ``function`` whose default is a call, with the call's source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    definition = tree.body[0]
    if not isinstance(definition, ast.FunctionDef):
        return {}
    arguments = definition.args
    positional = [*arguments.posonlyargs, *arguments.args]
    pairs = list(zip(positional[len(positional) - len(arguments.defaults) :], arguments.defaults, strict=True))
    pairs += [(a, d) for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True) if d is not None]
    return {a.arg: WrittenDefault(ast.unparse(d)) for a, d in pairs if isinstance(d, ast.Call)}


def constructor_arguments(cls: type) -> tuple[list[inspect.Parameter], type | None]:
    """The arguments of ``cls``'s ``__init__`` chain in the package (each ``**kwargs`` followed up
    the MRO), and the Airflow class that takes the remaining keyword arguments (None: none does)."""
    arguments: dict[str, inspect.Parameter] = {}
    followed = False
    for owner in cls.__mro__:
        if "__init__" not in vars(owner):
            continue
        if not in_package(owner):
            return list(arguments.values()), owner if followed else None
        followed = True
        init = vars(owner)["__init__"]
        parameters = list(inspect.signature(init).parameters.values())[1:]  # after self
        computed = computed_defaults(init)
        for parameter in parameters:
            if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                shown = parameter.replace(default=computed[parameter.name]) if parameter.name in computed else parameter
                arguments.setdefault(parameter.name, shown)
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return list(arguments.values()), None


def pushed_xcom_keys(cls: type) -> set[str]:
    """The keys ``cls`` (or a package base class) passes to ``xcom_push``, read from its source."""
    keys: set[str] = set()
    for owner in package_classes(cls):
        module = sys.modules[owner.__module__]
        for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(owner)))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr != "xcom_push":
                continue
            key = next((k.value for k in node.keywords if k.arg == "key"), node.args[0] if node.args else None)
            match key:
                case ast.Constant(value=str() as literal):
                    keys.add(literal)
                case ast.Name(id=name):
                    keys.add(str(getattr(module, name)))
                case _:
                    raise ValueError(f"{owner.__name__}: an xcom_push key that is neither a string nor a name")
    return keys


def is_operator(cls: type) -> bool:
    from airflow.sdk import BaseOperator

    return issubclass(cls, BaseOperator)


def is_trigger(cls: type) -> bool:
    from airflow.triggers.base import BaseTrigger

    return issubclass(cls, BaseTrigger)


def problems(cls: type) -> list[str]:
    """What ``cls``'s docstrings leave out or get wrong, each naming the class and what is missing."""
    name = cls.__name__
    fields = documented_fields(cls)
    arguments, _ = constructor_arguments(cls)
    templated = set(getattr(cls, "template_fields", ()))
    names = [argument.name for argument in arguments]
    found: list[str] = []
    for argument in names:
        text = fields.get(("param", argument))
        if text is None:
            found.append(f"{name}: argument {argument!r} has no ':param {argument}:' line")
        elif hasattr(cls, "template_fields") and bool(TEMPLATED.search(text)) != (argument in templated):
            state, says = ("is", "must say") if argument in templated else ("is not", "says")
            found.append(
                f"{name}: argument {argument!r} {state} in template_fields; its ':param:' line {says} '(templated)'"
            )
    found += [
        f"{name}: ':param {key}:' names no argument" for kind, key in fields if kind == "param" and key not in names
    ]
    if is_operator(cls):
        if ("returns", "") not in fields:
            found.append(f"{name}: no ':returns:' line (what the task returns: its return_value XCom)")
        found += [
            f"{name}: pushes the XCom key {key!r} but has no ':xcom {key}:' line"
            for key in sorted(pushed_xcom_keys(cls))
            if ("xcom", key) not in fields
        ]
    if is_trigger(cls) and not any(kind == "event" for kind, _ in fields):
        found.append(f"{name}: no ':event kind:' line (the events it yields)")
    return found


# --- the page ----------------------------------------------------------------------------------


def public_names(group: Group) -> list[tuple[str, Any]]:
    module = importlib.import_module(group.module)
    return [(name, getattr(module, name)) for name in sorted(group.names or module.__all__)]


def public_classes() -> list[type]:
    return [value for group in GROUPS for _, value in public_names(group) if isinstance(value, type)]


def markdown(text: str) -> str:
    """reST inline markup as GitHub Markdown: roles (``:class:`X```) and ``literals`` as code spans."""
    text = ROLE.sub(lambda m: f"`{m[2].rsplit('.', 1)[-1] if m[1] else m[2]}`", text)
    text = INLINE_LITERAL.sub(lambda m: f"`{m[1]}`", text)
    # Outside code spans "<experiment>" would be taken for an HTML tag and vanish.
    parts = text.split("`")
    return "`".join(part.replace("<", "&lt;") if index % 2 == 0 else part for index, part in enumerate(parts))


def cell(text: str) -> str:
    return markdown(text).replace("|", "\\|")


def default_text(parameter: inspect.Parameter) -> str:
    value = parameter.default
    if value is parameter.empty:
        return "required"
    if callable(value) and hasattr(value, "__qualname__"):  # its repr would carry a memory address
        return f"`{value.__module__}.{value.__qualname__}`"
    return f"`{value!r}`"


def render_class(import_from: str, cls: type) -> list[str]:
    doc = parse_docstring(cls)
    fields = documented_fields(cls)
    arguments, passes_to = constructor_arguments(cls)
    lines = [f"### {cls.__name__}", "", f"`from {import_from} import {cls.__name__}`", "", markdown(doc.summary), ""]
    if doc.body:
        lines += [markdown(doc.body), ""]
    has_templates = hasattr(cls, "template_fields")
    templated = set(getattr(cls, "template_fields", ()))
    if arguments:
        header = ["argument", "default", *(["templated"] if has_templates else []), "description"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for argument in arguments:
            text = TEMPLATED.sub("", fields.get(("param", argument.name), ""))
            row = [f"`{argument.name}`", cell(default_text(argument))]
            row += ["yes" if argument.name in templated else "no"] if has_templates else []
            lines.append("| " + " | ".join([*row, cell(text)]) + " |")
        lines.append("")
    else:
        lines += ["Takes no arguments.", ""]
    if passes_to is not None:
        lines += [f"Other keyword arguments (`task_id`, `retries`, ...) go to Airflow's `{passes_to.__name__}`.", ""]
    for kind, heading in SECTIONS.items():
        entries = [(key, text) for (field_kind, key), text in fields.items() if field_kind == kind]
        if not entries:
            continue
        if kind == "returns":
            lines += [f"**{heading}**: {markdown(entries[0][1])}", ""]
        else:
            lines += [f"**{heading}**:", "", *(f"- `{key}`: {markdown(text)}" for key, text in entries), ""]
    return lines


def render() -> str:
    """The page, from the code as it is now (deterministic: no timestamps, names sorted)."""
    sections: list[str] = []
    contents: list[str] = []
    for group in GROUPS:
        entries = public_names(group)
        classes = [(name, value) for name, value in entries if isinstance(value, type)]
        constants = [(name, value) for name, value in entries if not isinstance(value, type)]
        contents.append(f"- {group.title}: " + ", ".join(f"[{name}](#{name.lower()})" for name, _ in classes))
        sections += [f"## {group.title}", ""]
        if constants:
            listed = ", ".join(f"`{name}` = `{value!r}`" for name, value in constants)
            sections += [f"Constants of `{group.module}`: {listed}.", ""]
        for _, cls in classes:
            sections += render_class(group.module, cls)
    intro = [
        "# Building blocks: arguments and XCom results",
        "",
        f"*Generated by `{COMMAND}` from the docstrings and signatures in `plugins/{PACKAGE}/`: change",
        "those and run it again, do not edit this page.*",
        "",
        "The public classes for writing a DAG of your own; "
        f"`{EXAMPLE_DAG}` wires them together. "
        "A *templated* argument is rendered with Jinja before the task runs. "
        "Operators, sensors and triggers take no secrets: keys and tokens come from the Airflow "
        "connections they name.",
        "",
        *contents,
        "",
    ]
    return "\n".join([*intro, *sections]).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the page is stale")
    args = parser.parse_args(argv)
    # Importing Airflow creates its home's folders: the project's, not ~/airflow.
    os.environ.setdefault("AIRFLOW_HOME", str(AIRFLOW_HOME))
    found = [problem for cls in public_classes() for problem in problems(cls)]
    for problem in found:
        print(problem, file=sys.stderr)
    page = render()
    stale = not PAGE.exists() or PAGE.read_text() != page
    if args.check:
        if stale:
            print(f"{PAGE.relative_to(ROOT)} is stale: run {COMMAND}", file=sys.stderr)
        return 1 if stale or found else 0
    if stale:
        PAGE.write_text(page)
        print(f"wrote {PAGE.relative_to(ROOT)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
