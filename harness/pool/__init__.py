"""Share a spectrum: a synthetic pool exported as a Hugging Face dataset (``export``, its card in ``card``), and
runs on an imported one (``spectrum.pool``: ``source`` resolves it, ``meta`` validates its metadata and card,
``reader`` reads its rows and images as untrusted input, ``fit`` checks it against the experiment, ``load`` fills
the experiment's pool from it, ``scores`` keeps or uses its scores); ``schema`` is what an exported pool is made of."""
