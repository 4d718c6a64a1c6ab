"""The tools around a run: the ``pgolf`` command line, the bundler, the benchmarks,
``pgolf verify`` and ``pgolf rescore``. Never shipped inside a bundle.
"""
