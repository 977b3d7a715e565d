"""Format plugins: every public module here is found by `converters.registry`; see its docstring."""
