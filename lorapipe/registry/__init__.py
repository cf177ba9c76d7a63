"""The adapter registry: ``name@vN`` versions with their data, config, metrics and lineage.

    from lorapipe.registry import Registry
    reg = Registry("s3://bucket/adapters")        # or a local path, or memory://...
    ref = reg.push("contacts", "runs/contacts", message="more edge cases")   # -> "contacts@v4"
    reg.promote(ref, "prod"); reg.rollback("contacts", "prod")
    reg.pull("contacts@prod", "/tmp/contacts")    # adapter/ data/ config/ report/ version.json

A plain ``name`` resolves to its ``prod`` alias when set, else to its newest version; see
:mod:`lorapipe.registry.refs`. Storage layout and concurrency: :mod:`lorapipe.registry.core`.
"""

from lorapipe.errors import RegistryError
from lorapipe.registry.core import UPLOAD_DELAY_ENV, VERSION_FILE, Registry, default_registry_url
from lorapipe.registry.refs import DEFAULT_ALIAS, Ref, parse_ref

default_url = default_registry_url  # the name `lorapipe run --push` uses



__all__ = [
    "DEFAULT_ALIAS",
    "UPLOAD_DELAY_ENV",
    "VERSION_FILE",
    "Ref",
    "Registry",
    "RegistryError",
    "default_registry_url",
    "default_url",
    "parse_ref",
]
