"""BR-NPA's high-resolution recipe for PyTorch: fewer strides, then distillation.

Section 3.1 of Gomez et al.: set the stride of the last downsampling stages of a ResNet to 1
(ResNet-50's ``layer3`` and ``layer4``: 14x14 feature maps become 56x56 at 448 pixels), then
train that student to imitate the original, low-resolution teacher with
:func:`distillation_loss`. Attention maps get finer without losing accuracy.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["distillation_loss", "reduce_stride"]

_STRIDED = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


def _pair(value) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def reduce_stride(
    model: nn.Module, stages: str | Iterable[str] = ("layer3", "layer4")
) -> nn.Module:
    """A copy of ``model`` whose ``stages`` no longer downsample: every stride becomes 1.

    In each named stage (a dotted module path, as in ``model.named_modules()``), every
    ``Conv2d``, ``MaxPool2d`` and ``AvgPool2d`` with a stride above 1 gets stride 1: in a
    torchvision-style ResNet stage, the first block's strided 3x3 convolution and its
    downsample shortcut (a strided 1x1 convolution), which stay the same shape. The
    weights are kept, so the copy starts as a student initialised from the teacher. The
    feature maps after a stage of stride 2 double in height and width.

    Parameters
    ----------
    model : torch.nn.Module
        The network; never modified.
    stages : str or iterable of str, default=("layer3", "layer4")
        The stages to change: ResNet-50's last two, as in the paper's fine-grained
        experiments. Each must exist and contain a strided layer.

    Returns
    -------
    student : torch.nn.Module
        A deep copy of ``model`` with the strides reduced.

    Notes
    -----
    Stride 1 keeps a layer's output the size of its input only when its kernel, padding and
    dilation already do (3x3 with padding 1, 1x1 with padding 0, as in ResNets); a
    pooling layer with an even kernel, say, would make the shortcut and the main path
    disagree, which the first forward pass reports.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from sklearn_caf_torch.highres import reduce_stride
    >>> net = nn.Sequential()
    >>> net.add_module("layer1", nn.Conv2d(3, 4, 3, stride=2, padding=1))
    >>> net.add_module("layer2", nn.Conv2d(4, 4, 3, stride=2, padding=1))
    >>> net(torch.zeros(1, 3, 32, 32)).shape
    torch.Size([1, 4, 8, 8])
    >>> reduce_stride(net, "layer2")(torch.zeros(1, 3, 32, 32)).shape
    torch.Size([1, 4, 16, 16])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__qualname__}.")
    names = [stages] if isinstance(stages, str) else list(stages)
    if not names:
        raise ValueError("stages must name at least one stage; got none.")
    student = copy.deepcopy(model)
    modules = dict(student.named_modules())
    for name in names:
        if name not in modules:
            available = [n for n, _ in student.named_children()]
            raise ValueError(
                f"stages: {name!r} is not a module of the model; its top-level modules are "
                f"{available}."
            )
        changed = 0
        for layer in modules[name].modules():
            if isinstance(layer, _STRIDED) and max(_pair(layer.stride)) > 1:
                layer.stride = (1, 1) if isinstance(layer, nn.Conv2d) else 1
                changed += 1
        if changed == 0:
            raise ValueError(
                f"stages: {name!r} has no Conv2d, MaxPool2d or AvgPool2d with a stride above 1."
            )
    return student


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    alpha: float = 0.5,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Knowledge distillation: ``alpha * CE + (1 - alpha) * T^2 * KL(teacher || student)``.

    Eq. 1 of BR-NPA's paper, with Hinton et al.'s temperature: the Kullback-Leibler
    divergence is between the softmaxes at temperature ``T`` and is multiplied by ``T^2`` so
    that its gradients keep their scale as ``T`` changes. Both terms are averaged over the
    batch.

    Parameters
    ----------
    student_logits : Tensor of shape (n, n_classes)
        The high-resolution student's logits.
    teacher_logits : Tensor of shape (n, n_classes)
        The low-resolution teacher's logits; treated as constants (detached).
    targets : Tensor of shape (n,), int64
        True classes.
    alpha : float in [0, 1], default=0.5
        Weight of the cross-entropy with the labels.
    temperature : float > 0, default=1.0
        Softening temperature ``T``.

    Returns
    -------
    loss : Tensor of shape ()
        The batch-averaged loss, differentiable with respect to ``student_logits``.

    Examples
    --------
    >>> import torch
    >>> from sklearn_caf_torch.highres import distillation_loss
    >>> logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    >>> distillation_loss(logits, logits, torch.tensor([0, 1]), alpha=0.0)  # same outputs
    tensor(0.)
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}.")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive; got {temperature}.")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student_logits and teacher_logits must have the same shape; got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}."
        )
    ce = nn.functional.cross_entropy(student_logits, targets)
    log_student = nn.functional.log_softmax(student_logits / temperature, dim=1)
    log_teacher = nn.functional.log_softmax(teacher_logits.detach() / temperature, dim=1)
    kl = nn.functional.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return alpha * ce + (1.0 - alpha) * temperature**2 * kl
