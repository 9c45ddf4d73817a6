"""Data stages: converters, the secrets gate, quality scoring, dedup, decontamination, mixing.

Every converter is a generator of plain records: canonical samples (dicts that follow
``specs/sample.schema.json``), :class:`~afs_build.data.records.Reject` entries for input it
could not use and :class:`~afs_build.data.records.Filtered` ones for input a setting leaves
out, with markers saying which input record each belongs to, so that every record read is
counted. Converters take plain arguments, never the manifest, so they test alone.
"""
