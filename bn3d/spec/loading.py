"""Finding the spec files and loading them into the typed model.

Loading a file takes four stages, each reporting every problem it finds with
the file, the entry and the field:

1. YAML, read with PyYAML (imported on first use, so that ``import bn3d``
   needs numpy only), where ``1e-5`` is a float as in YAML 1.2;
2. validation against ``spec/schema.json``, when ``jsonschema`` is installed
   (the ``spec`` extra: ``pip install "bn3d[spec]"``);
3. parsing into the typed model (:mod:`bn3d.spec.model`), which checks every
   field's type on its own, so that a malformed entry is rejected with a clear
   message even without ``jsonschema``;
4. the cross-references no schema can express: steps call existing inputs,
   expectations refer to existing sides and steps, check names are unique
   within an entry, and ids across all files.

The spec files are the repository's ``spec/`` folder: a source tree reads its
own, an installed bn3d the copy installed with it as the package data
``bn3d._spec``.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .expectations import EXPECTATIONS
from .fields import FieldError, Fields, SpecError
from .model import SECTIONS, Check, Entry

__all__ = ["SCHEMA_NAME", "load_spec", "schema", "spec_files"]

SCHEMA_NAME = "schema.json"


def _spec_root() -> Any:
    """The spec folder: a source tree's own ``spec/``, else the installed ``bn3d._spec``."""
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "spec" / SCHEMA_NAME).is_file():
        return root / "spec"
    return importlib.resources.files("bn3d._spec")


def spec_files() -> list[Any]:
    """The spec's YAML files, sorted by name (paths or ``importlib.resources`` traversables).

    Examples
    --------
    >>> "parameters.yaml" in [file.name for file in spec_files()]
    True
    """
    return sorted((file for file in _spec_root().iterdir() if file.name.endswith(".yaml")),
                  key=lambda file: file.name)


def schema() -> dict[str, Any]:
    """The spec's JSON schema, ``spec/schema.json``, as a dict.

    Examples
    --------
    >>> sorted(schema()["$defs"]["expectation"]["properties"])[:3]
    ['attribute', 'converts', 'normalised_with']
    """
    text = _spec_root().joinpath(SCHEMA_NAME).read_text(encoding="utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


def _check_registry(schema_json: Mapping[str, Any]) -> None:
    """Refuse to load when the schema and the registry of expectation kinds disagree."""
    in_schema = set(schema_json["$defs"]["expectation"]["properties"])
    if in_schema != set(EXPECTATIONS):
        raise SpecError(
            f"spec/{SCHEMA_NAME} and bn3d.spec.expectations list different expectation kinds: "
            f"only in the schema: {sorted(in_schema - set(EXPECTATIONS))}, only in "
            f"bn3d.spec.expectations: {sorted(set(EXPECTATIONS) - in_schema)}")


# -- stage 1: YAML --


@functools.cache
def _yaml_loader() -> Any:
    """PyYAML's safe loader, reading ``1e-5`` (no dot) as a float as YAML 1.2 does."""
    import yaml

    class SpecLoader(yaml.SafeLoader):
        pass

    SpecLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )
    return SpecLoader


def _read_yaml(file: Any, name: str) -> Any:
    import yaml

    try:
        return yaml.load(file.read_text(encoding="utf-8"), Loader=_yaml_loader())
    except yaml.YAMLError as error:
        raise SpecError(f"{name}: not valid YAML: {error}") from error


# -- stage 2: the JSON schema, where jsonschema is installed --


def _validator(schema_json: Mapping[str, Any], validate: bool | None) -> Any:
    """A ``jsonschema`` validator, or None when not asked for and not installed."""
    if validate is False:
        return None
    try:
        import jsonschema
    except ImportError as error:
        if validate:
            raise ImportError("validating the spec against its JSON schema needs jsonschema: "
                              "pip install 'bn3d[spec]'") from error
        return None
    return jsonschema.Draft202012Validator(schema_json)


def _field_name(path: Sequence[Any]) -> str:
    """``['checks', 0, 'expect', 1, 'output']`` -> ``'checks[0].expect[1].output'``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "<entry>"


def _entry_label(document: Any, index: Any) -> str:
    if isinstance(index, int) and isinstance(document, list) and index < len(document):
        entry = document[index]
        if isinstance(entry, Mapping) and isinstance(entry.get("id"), str):
            return f"entry {entry['id']!r}"
    return f"entry #{index}"


def _schema_problem(name: str, document: Any, error: Any) -> str:
    import jsonschema

    if error.context:  # oneOf/anyOf: report the alternative that came closest
        error = jsonschema.exceptions.best_match(error.context)
    path = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, Mapping):
        missing = [field for field in error.validator_value if field not in error.instance]
        path += missing[:1]
    if not path:
        return f"{name}: {error.message}"
    return f"{name}: {_entry_label(document, path[0])}: field {_field_name(path[1:])}: " \
           f"{error.message}"


def _schema_problems(name: str, document: Any, validator: Any) -> list[str]:
    if validator is None:
        return []
    errors = sorted(validator.iter_errors(document),
                    key=lambda error: [str(part) for part in error.absolute_path])
    return [_schema_problem(name, document, error) for error in errors]


# -- stage 3: the typed model --


def _parse(name: str, document: Any) -> tuple[list[Entry], list[str]]:
    """The entries that parse, and a problem for each that does not."""
    if not isinstance(document, list):
        return [], [f"{name}: {document!r} is not of type 'array'"]
    entries, problems = [], []
    for index, data in enumerate(document):
        try:
            entries.append(Entry.parse(Fields(data), name))
        except FieldError as error:
            problems.append(f"{name}: {_entry_label(document, index)}: {error}")
    return entries, problems


# -- stage 4: cross-references --


def _check_problems(check: Check) -> Iterator[tuple[str, str]]:
    """``(field, problem)`` for the references inside one check to what it does not have."""
    for index, step in enumerate(check.steps):
        if step.forward not in check.inputs:
            yield f"steps[{index}].forward", f"no input called {step.forward!r}"
        for framework in step.mode:
            if framework not in check.sides:
                yield f"steps[{index}].mode.{framework}", f"the check has no {framework} side"
    for index, expectation in enumerate(check.expect):
        where = f"expect[{index}].{expectation.kind}"
        for field, problem in expectation.problems(check.sides, len(check.steps)):
            yield f"{where}.{field}" if field else where, problem


def _cross_reference_problems(entry: Entry) -> Iterator[str]:
    names = [check.name for check in entry.checks]
    for index, check in enumerate(entry.checks):
        where = f"{entry.file}: entry {entry.id!r}: field checks[{index}]"
        if names.count(check.name) > 1:
            yield f"{where}.name: {check.name!r} is used by more than one check"
        for field, problem in _check_problems(check):
            yield f"{where}.{field}: {problem}"


def _load_file(file: Any, validator: Any) -> list[Entry]:
    name = str(file)
    document = _read_yaml(file, name)
    problems = _schema_problems(name, document, validator)
    if problems:
        raise SpecError("\n".join(problems))
    entries, problems = _parse(name, document)
    if not problems:
        problems = [problem for entry in entries for problem in _cross_reference_problems(entry)]
    if problems:
        raise SpecError("\n".join(problems))
    return entries


def load_spec(files: Iterable[Any] | None = None, *,
              validate: bool | None = None) -> list[Entry]:
    """Load and check spec files (by default the package's own).

    Parameters
    ----------
    files : iterable of path-like or traversable, optional
        YAML files; default :func:`spec_files`.
    validate : bool, optional
        Validate against ``spec/schema.json`` with ``jsonschema``: by default
        when it is installed; True requires it, False skips it. Without it the
        typed model's own parsing still rejects every malformed field.

    Returns
    -------
    list of Entry
        In the document's order of sections, then in file order.

    Raises
    ------
    SpecError
        If a file is not valid YAML, does not follow the schema, refers to
        inputs, sides or steps that its check does not have, or reuses an id;
        each line of the message names the file, the entry and the field. Also
        if the schema and :data:`bn3d.spec.expectations.EXPECTATIONS` list
        different expectation kinds.
    ImportError
        If ``validate=True`` and ``jsonschema`` is not installed.

    Examples
    --------
    >>> entries = load_spec()
    >>> sorted({entry.source for entry in entries})
    ['document', 'reference']
    """
    schema_json = schema()
    _check_registry(schema_json)
    validator = _validator(schema_json, validate)
    entries: list[Entry] = []
    seen: dict[str, str] = {}
    for file in spec_files() if files is None else files:
        for entry in _load_file(Path(file) if isinstance(file, str) else file, validator):
            if entry.id in seen:
                raise SpecError(f"{entry.file}: entry {entry.id!r}: field id: the id is "
                                f"already used in {seen[entry.id]}")
            seen[entry.id] = entry.file
            entries.append(entry)
    return sorted(entries, key=lambda entry: SECTIONS.index(entry.section))
