"""doit entry point: load afs.yaml (or $AFS_MANIFEST) and expose every stage's tasks.

Run `doit list` to see the graph, `doit` to build everything, `doit deploy:majora` for one
model. All the logic lives in afs_build; see afs_build/graph.py.
"""

from afs_build.graph import dodo_namespace

globals().update(dodo_namespace())
