"""``onnxpress search`` and ``onnxpress.search`` (issue 24): one accuracy
budget spent across the pass families. :mod:`.budget` parses the budget, :mod:`.space` reads
the knobs a model offers, :mod:`.judge` measures a candidate against the budget,
:mod:`.sweep` measures each family's sensitivity and spends the budget across them by it,
:mod:`.trials` runs the candidates as a resumable Optuna study (the ``search`` extra),
:mod:`.candidate` builds one candidate wherever it runs, :mod:`.workers` says where (this
process, local processes, Ray tasks), :mod:`.report` writes the page and the chosen pipeline,
and :mod:`.run` is the command. (Not named ``search``: importing a subpackage of that name
would replace the ``onnxpress.search`` function.) Within a family, the layers share its
setting by that pass's own allocation (pruning ranks channels and heads model-wide by
activation); a per-layer sensitivity measured once for every family is still to come."""
