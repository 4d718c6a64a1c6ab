"""The plugin API: everything a plugin or a submission may import from the harness.

The contract in one place: `protocols` (what each kind of component implements), `hooks`
(the pluggy hooks and when each fires during a run), `context` (what a hook sees),
`registry` (how components are found by kind and name), `config` (the declarative run
configuration a submission returns) and `errors`. `quantization`, `layout`, `warmdown` and
`fileio` are helpers shared by plugins that may not import each other.

Imports point one way: this package imports nothing else of the harness, plugins import
only this package, and the pipeline and the tools build on both.
"""
