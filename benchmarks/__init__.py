"""onnxpress's benchmarks: one runner, a definition per suite.

    python -m benchmarks.run --list
    python -m benchmarks.run --suite NAME [--models a,b] [--variants x,y] [--repeats N]
        [--out DIR] [--smoke] [--set KEY=VALUE ...]

``core/`` holds what every suite shares (the cache of exports and built variants, timing
through ``onnxpress.backends.bench``, the peak-memory probe, the JSON result, the markdown
tables, the optional plot); ``suites/`` holds one module per suite. ``output_hashes.py``
also runs on its own (see its docstring).
"""
