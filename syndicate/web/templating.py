"""The one way HTML templates are loaded: the package's ``templates/`` folder,
autoescaped (only what a handler marks ``Markup`` goes out unescaped), and strict
(a name a template uses that the handler did not give is an error, not "")."""

from __future__ import annotations

import jinja2


def environment() -> jinja2.Environment:
    """A new environment of the package's templates; callers add their filters."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("syndicate", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
