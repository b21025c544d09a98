"""Hook specifications: the whole contract between segzoo and a plugin.

A plugin is a module exposed under the ``segzoo`` entry-point group that implements some of these
hooks with ``@segzoo.hookimpl``. Each hook is handed a ``registrar`` bound to that plugin, so every
name it registers is recorded with the plugin and distribution that provided it.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("segzoo")
hookimpl = pluggy.HookimplMarker("segzoo")


@hookspec
def segzoo_register_backbones(registrar):
    """Register backbones with ``registrar.backbone(name, factory, description="")``.

    ``factory(weights=None, **options)`` returns a :class:`segzoo.model.Backbone`; ``weights`` is a
    local file of ImageNet classification weights or ``None`` for random initialisation. A name
    ending in ``*`` (``"timm-*"``) registers a family: ``factory(variant, weights=None, **options)``
    builds ``timm-resnet18`` with ``variant="resnet18"``. A factory that supports the paper's reference
    geometry takes ``geometry="caffe"`` (it is passed only when not "modern"; see segzoo.model.GEOMETRIES)
    and declares its grids in ``FeatureInfo.offset``; one that does not should raise a SegzooError.
    """


@hookspec
def segzoo_register_heads(registrar):
    """Register heads with ``registrar.head(name, factory, description="")``.

    ``factory(feature_info, num_classes, **options)`` returns a :class:`segzoo.model.Head` that reads
    the strides it needs from the backbone's ``feature_info`` (a list of ``FeatureInfo(stride, channels,
    offset)``). Like backbones, it receives ``geometry=`` when the model's geometry is not "modern".
    """


@hookspec
def segzoo_register_recipes(registrar):
    """Register named recipes with ``registrar.recipe(name, {"backbone": ..., "head": ..., ...})``.

    A recipe is plain data: default ``num_classes``, ``input_size``, ``backbone_weights`` and the
    options passed to the backbone and head factories. ``registry.yaml`` is read through this hook.
    """
