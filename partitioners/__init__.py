"""Where a model can be cut, what each part costs, and how to cut it.

Nothing here knows about mixing or export: ``datamix_cli`` composes these
pieces with the mixing protocol and the exporters.
"""
