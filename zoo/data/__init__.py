"""Generated data: coloured-shape scenes with captions (:mod:`.shapes`), spoken captions (:mod:`.speech`)
and the held-out evaluation of aligned models on them (:mod:`.shapes_eval`). The demo corpus, the
training of the shipped aligned model and the tests all draw from here."""
