"""Reproduction of the paper's didactic results: figures, data tables and checked claims.

Each figure is a *piece* (:class:`modeseek.pieces.Piece`): a function that
runs its experiments, writes ``<name>.png``, ``<name>.caption.md`` and
``data/<name>.parquet`` into the output folder, and returns the claims it checks.
:func:`modeseek.paper.reproduce.reproduce` runs every piece and writes CLAIMS.md.

This layer sits on top of the library; nothing in the core imports it.
"""
