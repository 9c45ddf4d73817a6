"""The generated site: the build folder turned into pages a person browses.

``inputs`` says which build files each page reads (the ``site`` tasks' ``file_dep``) and reads
them tolerantly: a page shows what exists and says what does not yet. ``specialist``,
``family`` and ``reference`` build each page's template context with one explicit function
per page; ``charts`` turns numbers into Chart.js configurations; ``render`` writes the
Markdown pages from the Jinja templates in ``templates/site/``; ``build`` writes the MkDocs
configuration and the assets and runs MkDocs. Nothing here imports MkDocs, numpy or Jinja at
module import time.
"""
