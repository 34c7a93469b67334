"""tsrx's built-in plugins (import name ``tsrx_builtin``).

Each module registers its components on import and is listed under the
``tsrx.plugins`` entry-point group in pyproject.toml, the same way a user's
package would list its own.
"""
