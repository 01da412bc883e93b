"""The family files: one small module per family, vision and text side by side, each defining
``FAMILY`` (a :class:`palrp.modules.family.Family`). Every module here whose name does not start
with ``_`` is registered by :func:`palrp.modules.family.families`; ``_transformers`` and
``_timm`` hold pieces the files share."""
