"""``onnxpress search``: one accuracy budget spent across the pass families (issue 24, in
progress: the budget expression, :mod:`.budget`)."""
