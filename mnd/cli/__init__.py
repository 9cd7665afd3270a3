"""The command line: ``mnd`` (:mod:`~mnd.cli.main`) and its sub-commands (attack, data, book).

Nothing is imported here, so that ``mnd --help`` stays fast.
"""
