"""Package discovery for a repository whose root is the package ``onnxpress``.

pyproject's ``packages.find`` cannot express "this folder is ``onnxpress``": it would find
``ir``, ``passes``... as top-level packages. So every folder with an ``__init__.py`` below
the root is found here and named under ``onnxpress.``; a new subpackage ships without
anyone listing it (a hand-written list once left five out of the wheel).
"""

from setuptools import find_packages, setup

_NOT_SHIPPED = ["tests", "tests.*", "benchmarks", "benchmarks.*", "build", "build.*"]

setup(packages=["onnxpress"] + [f"onnxpress.{name}" for name in
                                find_packages(where=".", exclude=_NOT_SHIPPED)])
