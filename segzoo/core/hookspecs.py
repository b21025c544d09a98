"""Hook specifications: the whole contract between segzoo and a plugin.

A plugin is a module exposed under the ``segzoo`` entry-point group that implements some of these
hooks with ``@segzoo.hookimpl``. Each hook is handed a ``registrar`` (:class:`segzoo.zoo.registry.Registrar`)
bound to that plugin, so every name it registers is recorded with the plugin and distribution that
provided it. segzoo's own backbones, heads, recipes, presets and weight layouts are registered through
these same hooks, by plugins loaded exactly like a third party's.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("segzoo")
hookimpl = pluggy.HookimplMarker("segzoo")


@hookspec
def segzoo_register_backbones(registrar):
    """Register backbones with ``registrar.backbone(name, factory, description="")``.

    ``factory(weights=None, **options)`` returns a :class:`segzoo.Backbone`; ``weights`` is a local
    file of ImageNet classification weights, a name the factory knows (segzoo's take ``"imagenet"``,
    fetched through :mod:`segzoo.io.hub`), or ``None`` for random initialisation: the factory owns
    its conversion from the classifier's key layout (read the file with :func:`segzoo.read_state_dict`,
    check it with :func:`segzoo.check_fits`, which raises a :class:`segzoo.CheckpointError`). A name
    ending in ``*`` (``"timm-*"``) registers a family: ``factory(variant, weights=None, **options)``
    builds ``timm-resnet18`` with ``variant="resnet18"``. A factory that supports the paper's reference
    geometry takes ``geometry="caffe"`` (it is passed only when not "modern"; see segzoo.core.model.GEOMETRIES)
    and declares its grids in ``FeatureInfo.offset``; one that does not should raise a SegzooError.
    """


@hookspec
def segzoo_register_heads(registrar):
    """Register heads with ``registrar.head(name, factory, strides=(32, 16, ...), parent=None, description="")``.

    ``factory(feature_info, num_classes, **options)`` returns a :class:`segzoo.Head` that reads the
    strides it declared from the backbone's ``feature_info`` (a list of ``FeatureInfo(stride, channels,
    offset)``). ``strides`` (coarsest first) is declared at registration, so studies and checks know
    what a head reads without building it. ``parent`` names the coarser head it is fine-tuned from in
    staged training (FCN-16s from FCN-32s). Like backbones, a factory receives ``geometry=`` when the
    model's geometry is not "modern". A head whose scores cover only a centred window of its input (valid
    convolutions) says which in ``Head.output_window(size)``; labels, metrics and tiles follow it.
    """


@hookspec
def segzoo_register_recipes(registrar):
    """Register named models with ``registrar.recipe(name, {"backbone": ..., "head": ..., ...})``.

    A recipe is plain data (:class:`segzoo.Recipe`): default ``num_classes``, ``input_size``,
    ``backbone_weights`` and the options passed to the backbone and head factories. ``registry.yaml``
    is read through this hook.
    """


@hookspec
def segzoo_register_presets(registrar):
    """Register training presets with ``registrar.preset(name, segzoo.Preset(...))``.

    A preset fills the training settings a run leaves unset (``segzoo train --preset NAME``,
    ``preset:`` in a study file): batch size, loss, optimiser, learning rate by head or model, head
    options, and whether each head is fine-tuned from its registered parent.
    """


@hookspec
def segzoo_register_losses(registrar):
    """Register training losses with ``registrar.loss(name, factory, description="", sees_batch=True)``.

    ``factory(weight=None, reduction="mean", ignore_index=255, **options)`` returns a callable
    ``loss(scores, batch)``: N x C x h x w float scores (the model's output window) and a
    :class:`segzoo.Batch` (``batch.mask``: N x h x w int64 labels cropped to that window, ``ignore_index``
    void, all void for samples without a mask; ``batch.image_labels``: N x C classes each image contains, or
    None; ``batch.has_mask``: which samples carry a mask) in, a scalar tensor out. Without
    ``sees_batch=True`` the factory's loss is the deprecated 0.1 form ``loss(scores, target)``, handed only
    the masked samples' labels (removed in 0.3). ``weight`` is a per-class tensor (``--class-weights``) and
    ``reduction`` "mean" or "sum" (``--loss``); a factory that does not take one of them refuses a run
    that sets it. ``segzoo train --loss-fn NAME`` (``TrainConfig(loss=NAME, loss_kwargs=...)``) trains
    with it; cross-entropy is segzoo's built-in default.
    """


@hookspec
def segzoo_register_weight_layouts(registrar):
    """Register whole-model weight layouts with ``registrar.weight_layout(name, segzoo.WeightLayout(...))``.

    :func:`segzoo.create_model` (``weights=``) detects a file's layout from its keys and converts it
    through the layout's ``to_model``; ``segzoo convert --from NAME`` writes a segzoo checkpoint from it.
    """
