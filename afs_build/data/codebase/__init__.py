"""The codebase converter: questions and answers about a local repository (see :mod:`.convert`)."""

from afs_build.data.codebase.convert import convert_codebase
from afs_build.data.codebase.walk import iter_files

__all__ = ["convert_codebase", "iter_files"]
