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
* globals and arguments keep their names (other modules and keyword calls use them); locals
  are renamed;
* literal statements (docstrings) go: no bundled module reads ``__doc__``
  (`tests/unit/test_minify.py` checks that);
* asserts and ``if __debug__`` blocks stay.
"""

from __future__ import annotations

import functools

from harness.api.errors import ConfigError


@functools.lru_cache(maxsize=1024)
def minify_source(source: str, origin: str) -> str:
    """``source`` minified; a ConfigError naming ``origin`` if it cannot be (or does not compile after).
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
            rename_globals=False,
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
