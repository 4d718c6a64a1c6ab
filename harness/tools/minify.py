"""Minify Python source for the shipped bundle: docstrings, comments and annotations out,
locals renamed, with python-minifier (pinned, since its output is counted code bytes).

Every byte of the shipped ``train_gpt.py`` is taken from the model's 16,000,000, and about
half of the harness's compressed source is docstrings and comments; the frontier records
ship minified source under lzma + base85 for the same reason. Only the counted, compressed
bundle is minified: the readable bundle beside it keeps every docstring.

Options, chosen so that behaviour cannot change:
* class-level annotations are kept (dataclass fields are declared by them); argument,
  return and variable annotations go (``from __future__ import annotations`` makes them
  strings nobody reads at run time);
* public globals and all arguments keep their names (other modules and keyword calls use
  them); locals are renamed, and so are private globals (``_name``), which no other module
  may import (tests/contracts/test_layout.py) and no bundled module looks up by string;
* literal statements (docstrings) go: no bundled module reads ``__doc__``
  (`tests/unit/test_minify.py` checks that);
* asserts and ``if __debug__`` blocks stay.
"""

from __future__ import annotations

import ast
import functools

from harness.api.errors import ConfigError


@functools.lru_cache(maxsize=1024)
def minify_source(source: str, origin: str, keep: tuple[str, ...] = ()) -> str:
    """``source`` minified; a ConfigError naming ``origin`` if it cannot be (or does not compile after).
    ``keep``: private globals that code outside ``source`` names (the bundle's bootstrap function).
    Remembered per (source, origin): python-minifier takes most of a bundle's build time, and a
    process that bundles several runs (a seed sweep, the tests) meets the same modules again."""
    if not source.strip():
        return source
    # Imported here: it is large, and only the shipped (compressed) bundle needs it.
    import python_minifier

    annotations = python_minifier.RemoveAnnotationsOptions(
        remove_variable_annotations=True,
        remove_return_annotations=True,
        remove_argument_annotations=True,
        remove_class_attribute_annotations=False,
    )
    try:
        out = python_minifier.minify(
            source,
            filename=origin,
            remove_annotations=annotations,
            remove_pass=True,
            remove_literal_statements=True,
            combine_imports=True,
            hoist_literals=False,
            rename_locals=True,
            rename_globals=True,
            preserve_globals=[*_public_names(source), *keep],
            convert_posargs_to_args=False,
            preserve_shebang=False,
            remove_asserts=False,
            remove_debug=False,
            remove_explicit_return_none=True,
            remove_builtin_exception_brackets=False,
            constant_folding=True,
        )
        compile(out, origin, "exec", dont_inherit=True)
    except (SyntaxError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"{origin}: cannot be minified for the bundle: {type(exc).__name__}: {exc}"
        ) from None
    return out


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _public_names(source: str) -> list[str]:
    """Every name ``source`` binds or reads that is not private: what renaming globals must keep.
    A source that does not parse gives none: python-minifier then raises the SyntaxError that
    `minify_source` reports."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).partition(".")[0])
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names.update(node.names)
    return sorted(n for n in names if not _is_private(n))
