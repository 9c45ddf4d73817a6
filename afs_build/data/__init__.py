"""Data stages: converters, quality scoring, dedup, decontamination and mixing.

Every converter is a generator of plain records: canonical samples (dicts that follow
``specs/sample.schema.json``) and :class:`~afs_build.data.records.Reject` entries for input it
could not use. Converters take plain arguments, never the manifest, so they test alone.
"""
