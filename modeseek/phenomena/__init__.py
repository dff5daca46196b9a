"""Phenomena of preference fine-tuning that practitioners ask about, each computed exactly.

Every module here is one figure piece (:class:`modeseek.pieces.Piece`): it runs
the engine, or an exact closed form checked against the engine, writes a tidy
table to ``figures/data/<name>.parquet``, draws one figure and returns computed
claims that test what its cited source says. Like :mod:`modeseek.atlas`, this
package belongs to the figure layer: it imports the core and
:mod:`modeseek.pieces`, and the core never imports it.
"""
