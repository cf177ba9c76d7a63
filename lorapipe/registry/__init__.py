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



def __getattr__(name: str):
    # imported lazily: it pulls in lorapipe.serve.adapters, which plain registry users do not need
    if name == "RegistryAdapterSource":
        from lorapipe.registry.source import RegistryAdapterSource

        return RegistryAdapterSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_ALIAS",
    "UPLOAD_DELAY_ENV",
    "VERSION_FILE",
    "Ref",
    "Registry",
    "RegistryAdapterSource",
    "RegistryError",
    "default_registry_url",
    "default_url",
    "parse_ref",
]
