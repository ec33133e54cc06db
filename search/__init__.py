"""``onnxpress search``: one accuracy budget spent across the pass families (issue 24, in
progress). :mod:`.budget` parses the budget, :mod:`.space` reads the knobs a model offers,
:mod:`.judge` measures a candidate against the budget, :mod:`.trials` runs the candidates
as a resumable Optuna study (the ``search`` extra). Still to come: the CLI and
``onnxpress.search``, per-layer sensitivities shared between families, workers and Ray, the
HTML report with the front."""
