"""Where space and recipe files live, reading one (YAML, duplicate keys refused, + its header),
and where the file paths written in them point."""

from __future__ import annotations

import difflib
import os
import pathlib

import yaml

from spaces.errors import SpaceError
from trainable.config import looks_like_path

SPACES_DIR = pathlib.Path(__file__).resolve().parent
RECIPES_DIR = SPACES_DIR / "recipes"
# Relative file paths in a space or recipe are read against the folder that holds spaces/,
# not the working directory: Ray runs each trial in a directory of its own.
PROJECT_ROOT = SPACES_DIR.parent
# Training keys that hold file paths: relative ones are made absolute against PROJECT_ROOT,
# and "{recipe}" in them becomes the recipe's name (teachers/{recipe}.pt).
PATH_KEYS = ("teacher_checkpoint", "data_dir", "pretrained")


def absolute(key: str, value, recipe: str = ""):
    """A path value made absolute against the project root ("{recipe}" filled in)."""
    if key not in PATH_KEYS or not isinstance(value, str):
        return value
    value = value.replace("{recipe}", recipe)
    if key == "pretrained" and not looks_like_path(value):
        return value  # a torchvision weights name such as IMAGENET1K_V1
    path = pathlib.Path(value).expanduser()
    return str(path if path.is_absolute() else PROJECT_ROOT / path)


def display(path: pathlib.Path) -> str:
    """The file as a user would type it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(pathlib.Path.cwd().resolve()))
    except ValueError:
        return str(path)


def names_in(folder: pathlib.Path) -> list[str]:
    """The names of the .yaml files in ``folder``, sorted."""
    return sorted(p.stem for p in folder.glob("*.yaml"))


def resolve(name_or_path: str | os.PathLike, folder: pathlib.Path, kind: str) -> pathlib.Path:
    """A name in ``folder`` (``mixup_alpha``) or a path to a .yaml file -> the file's path."""
    text = str(name_or_path)
    if os.sep in text or "/" in text or text.endswith((".yaml", ".yml")):
        path = pathlib.Path(text).expanduser().resolve()
        if not path.is_file():
            raise SpaceError(text, "", f"file not found; give a path to a .yaml {kind} file or one of the "
                             f"names in {display(folder)}/: {', '.join(names_in(folder))}")
        return path
    path = folder / f"{text}.yaml"
    if not path.is_file():
        close = difflib.get_close_matches(text, names_in(folder), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise SpaceError(display(path), "", f"unknown {kind} {text!r}; {hint}available: "
                         f"{', '.join(names_in(folder))}")
    return path


class _DuplicateKey(Exception):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, but a key given twice is an error (YAML keeps the last one silently)."""


def _mapping_without_duplicates(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise _DuplicateKey(f"duplicate key {key!r} at line {key_node.start_mark.line + 1} (first on line "
                                f"{seen[key] + 1}); keep one of them")
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def read_yaml(path: pathlib.Path, example: str) -> tuple[dict, str]:
    """The file's top-level mapping and its text; ``example`` is what to write if it is empty."""
    file = display(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SpaceError(file, "", f"cannot read the file ({err}); check the path") from None
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 -- a SafeLoader subclass
    except _DuplicateKey as err:
        raise SpaceError(file, "", str(err)) from None
    except yaml.YAMLError as err:
        raise SpaceError(file, "", _yaml_problem(err)) from None
    if raw is None:
        raise SpaceError(file, "", f"the file is empty; write {example}")
    if not isinstance(raw, dict):
        raise SpaceError(file, "", f"the top level is a {type(raw).__name__}, not a mapping; write {example} "
                         "as top-level keys")
    return raw, text


def _yaml_problem(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = getattr(err, "problem", None) or str(err)
    context, context_mark = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and context_mark:
        context += f" begun at line {context_mark.line + 1}"
    detail = f"{problem} ({context})" if context else problem
    return (f"malformed YAML{where}: {detail}; fix the syntax there "
            "(indent with spaces, quote values that contain ': ' or '#')")


def header(text: str, labels: tuple[str, ...], multiline: tuple[str, ...] = ()) -> dict[str, str]:
    """``# Label: value`` lines of the leading comment block. The value of a ``multiline``
    label goes on over the comment lines that follow it (a blank comment line or another
    label ends it); the others are one line."""
    found: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            if stripped:
                break
            continue
        body = stripped.lstrip("#").strip()
        label = next((lab for lab in labels if body.lower().startswith(lab.lower() + ":")), None)
        if label is not None:
            current = label if label in multiline else None
            found[label] = [body.split(":", 1)[1].strip()]
        elif current is not None and body:
            found[current].append(body)
        else:
            current = None
    return {label: " ".join(parts) for label, parts in found.items()}


__all__ = ["SPACES_DIR", "RECIPES_DIR", "PROJECT_ROOT", "PATH_KEYS", "absolute", "display",
           "names_in", "resolve", "read_yaml", "header"]
