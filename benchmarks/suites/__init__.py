"""One module per benchmark suite, each defining ``SUITE`` (a :class:`benchmarks.core.suite.
Suite`); ``benchmarks/run.py`` lists them by name."""
