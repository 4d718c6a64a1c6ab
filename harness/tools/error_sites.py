"""Shipped-form rewrite: the message of an error that refuses bad input becomes the place it is
raised, ``origin:line`` (pgolf issue 13: every shipped byte is taken from the model).

The harness names the file, field or value and what was expected in every refusal, so its
error messages are about a tenth of the minified source: on ``baseline`` this rewrite takes
about 4.5 KB off the compressed ``train_gpt.py``. The idea is the production build of React,
which ships error codes and keeps the texts in a decoder.

Nothing is lost: the shipped file computes exactly what the readable bundle beside it
(``train_gpt_readable.py``, the same program with every docstring and message) computes, so a
refusal of the shipped file, ``ConfigError: harness/pipeline/shards.py:88``, is read at that line
of that bundle, or shown whole by running the readable bundle with the same flags. Only the
arguments of the exception change; where it is raised, its type and the control flow do not.

Which raises are rewritten: ``raise E(...)`` with arguments, where ``E`` is one of `REFUSALS`,
named as a plain name or an attribute (``errors.ConfigError``). They refuse input; their text is
never parsed. Outcomes of a run whose text a run records stay whole: ``EvalTimeLimit`` (its text
goes into ``submission.json`` as ``eval_stopped``), ``TrainingDiverged``, ``TrainingInterrupted``,
and every other type.
"""

from __future__ import annotations

import ast

REFUSALS: frozenset[str] = frozenset({"ConfigError", "DataError", "ArtifactError", "ValueError", "TypeError"})
"""Exception types whose message the shipped form replaces with ``origin:line``."""


def _type_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def shorten_error_messages(source: str, origin: str) -> str:
    """``source`` with the message of each refusal replaced by ``"<origin>:<line>"`` (the line of
    its ``raise`` in ``source``); ``source`` unchanged when it has none. Comments do not survive
    the rewrite (`ast.unparse`): it runs on the way to minifying, which drops them anyway."""
    tree = ast.parse(source, filename=origin)
    changed = False
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
            continue
        call = node.exc
        if _type_name(call) not in REFUSALS or not (call.args or call.keywords):
            continue
        site = f"{origin}:{node.lineno}"
        if len(call.args) == 1 and not call.keywords and isinstance(call.args[0], ast.Constant):
            if call.args[0].value == site or len(repr(call.args[0].value)) <= len(site) + 2:
                continue  # already short: a site or a word
        call.args, call.keywords = [ast.Constant(site)], []
        changed = True
    return ast.unparse(tree) if changed else source
