"""Retrieval: indexes over the sources, hybrid search, and retrieved context for specialists.

- :mod:`.files` lists and reads what an index covers (bad files are skipped with a reason);
- :mod:`.chunking` cuts files into chunks with provenance (code by definition, prose by
  heading and paragraph, fact tables by entry);
- :mod:`.embedding` embeds chunks (all-MiniLM-L6-v2 offline by default), cached by content;
- :mod:`.store` writes and reads an index: SQLite (chunks, FTS5) and a usearch HNSW file;
- :mod:`.build` builds an index incrementally; :mod:`.search` answers queries (lexical, dense,
  fused by :mod:`.fusion`), refusing a missing or stale index;
- :mod:`.context` is the one prompt format of retrieved chunks (serving and training);
- :mod:`.endpoints` serves ``/v1/embeddings``, ``/v1/search`` and retrieving chat;
- :mod:`.quality` measures recall@k and MRR on questions with known locations.
"""
