"""Dead-code removal for shipped bundles (`harness.tools.dead_code`): what goes, what must stay,
and that the pruned program still runs."""

from __future__ import annotations

import textwrap

from harness.tools.dead_code import prune_rewritten, prune_sources, unreferenced_definitions

LIB = textwrap.dedent(
    '''\
    """A library."""
    import functools
    from dataclasses import dataclass

    LIMIT = 3
    UNUSED_CONST = 7
    TABLE = dict(a=1)


    def helper(x):
        return x + LIMIT


    def used(x):
        return helper(x) * 2


    def never_called(x):
        return orphan(x)


    def orphan(x):
        return x


    def by_string():
        return "found by getattr"


    @functools.lru_cache
    def decorated():
        return "kept: a decorator may register it"


    @dataclass
    class Point:
        x: int = 0


    class Unused:
        pass


    def __getattr__(name):
        raise AttributeError(name)
    '''
)
MAIN = textwrap.dedent(
    """\
    import lib

    def main():
        return lib.used(1), getattr(lib, "by_string")()

    RESULT = main()
    """
)


def test_unreferenced_definitions_are_exactly_the_dead_ones():
    dead = unreferenced_definitions({"lib": LIB, "main": MAIN}, roots=["main"])
    # never_called refers to orphan, but nothing kept refers to never_called: both go.
    assert dead == {"lib": ["UNUSED_CONST", "never_called", "orphan", "Point", "Unused"]}


def test_a_call_on_the_right_hand_side_keeps_an_assignment():
    assert "TABLE" not in unreferenced_definitions({"lib": LIB, "main": MAIN}, roots=["main"])["lib"]


def test_roots_are_kept_whole_and_their_definitions_count():
    # Without the submission as a root, its own unused definitions would be pruned too.
    dead = unreferenced_definitions({"lib": LIB, "main": MAIN}, roots=["main"])
    assert "main" not in dead
    assert "used" not in dead["lib"] and "helper" not in dead["lib"] and "LIMIT" not in dead["lib"]


def test_docstrings_do_not_keep_what_they_mention():
    src = 'def gone():\n    pass\n\n\ndef kept():\n    """Unlike gone()."""\n'
    dead = unreferenced_definitions({"m": src, "main": "from m import kept\n"}, roots=["main"])
    assert dead == {"m": ["gone"]}


def test_a_name_used_in_another_module_keeps_it():
    a = "def shared():\n    return 1\n"
    b = "def caller():\n    return shared()\n\nX = caller()\n"
    assert unreferenced_definitions({"a": a, "b": b}) == {}


def test_pruned_program_runs_and_gives_the_same_result():
    pruned = prune_sources({"lib": LIB, "main": MAIN}, roots=["main"])
    assert pruned["main"] == MAIN
    assert "def never_called" not in pruned["lib"] and "class Unused" not in pruned["lib"]
    assert "@functools.lru_cache" in pruned["lib"] and "def __getattr__" in pruned["lib"]
    lib_ns: dict = {}
    exec(compile(pruned["lib"], "lib", "exec"), lib_ns)
    assert lib_ns["used"](1) == 8 and lib_ns["by_string"]() == "found by getattr"
    assert "orphan" not in lib_ns and "Point" not in lib_ns


def test_lines_are_numbered_as_python_numbers_them():
    # str.splitlines would also break at the form feed and the line separator in the comment.
    head = "# a form feed \x0c and a separator \u2028 here\n"
    src = head + "def gone():\n    pass\n\n\ndef kept():\n    return 1\n"
    pruned = prune_sources({"m": src, "main": "from m import kept\n"}, roots=["main"])["m"]
    assert pruned == head + "\n\ndef kept():\n    return 1\n"


def test_an_export_list_keeps_nothing_alive_unless_a_module_star_imports():
    lib = '__all__ = ["listed", "used"]\n\ndef listed():\n    return 1\n\ndef used():\n    return 2\n'
    main = "from lib import used\nprint(used())\n"
    dead = unreferenced_definitions({"lib": lib, "main": main}, roots=["main"])
    assert dead == {"lib": ["__all__", "listed"]}
    star = "from lib import *\nprint(used())\n"  # __all__ decides what a star import binds: it stays
    assert unreferenced_definitions({"lib": lib, "main": star}, roots=["main"]) == {}


def test_rewritten_pruning_takes_one_statement_off_a_shared_line():
    # Minified code may put two top-level statements on one line; only the dead one may go.
    lib = "Alias = list[int]; LIMIT = 3\ndef used():\n    return LIMIT\n"
    main = "from lib import used\nRESULT = used()\n"
    pruned = prune_rewritten({"lib": lib, "main": main}, roots=["main"])
    assert pruned["main"] is main  # untouched modules come back as they were
    assert "Alias" not in pruned["lib"] and "LIMIT = 3" in pruned["lib"]
    namespace: dict = {}
    exec(compile(pruned["lib"], "lib", "exec"), namespace)
    assert namespace["used"]() == 3
