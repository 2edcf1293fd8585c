"""Share a spectrum: a synthetic pool exported as a Hugging Face dataset (``export``, its card in ``card``), and
runs on an imported one (``spectrum.pool``: ``source`` resolves it, ``fit`` checks it against the experiment,
``load`` fills the experiment's pool from it); ``schema`` is what an exported pool is made of."""
