"""Per-module-type unit surgery, looked up by type (as Torch-Pruning's pruner functions are): where
a module's units are, how to keep some of them, and the statistics the importance methods read.

A unit is an output row / input column of a Linear (the last axis of its input), or an output /
input channel of a Conv2d or BatchNorm2d (axis 1 of NCHW inputs). Which modules make or read a
layer's neurons is the adapter's knowledge (optin.adapters.base.Channels); how to slice each
module is here and knows no family. Weights keep their dtype and device.
"""
from __future__ import annotations

import torch
from torch import nn


def _param(t: torch.Tensor, like: nn.Parameter) -> nn.Parameter:
    return nn.Parameter(t.clone(), requires_grad=like.requires_grad)


class LinearOps:
    unit_axis = -1  # of the module's input

    @staticmethod
    def keep_out(m: nn.Linear, idx: torch.Tensor) -> None:
        m.weight = _param(m.weight.detach().index_select(0, idx), m.weight)
        if m.bias is not None:
            m.bias = _param(m.bias.detach()[idx], m.bias)
        m.out_features = len(idx)

    @staticmethod
    def keep_in(m: nn.Linear, idx: torch.Tensor) -> None:
        m.weight = _param(m.weight.detach().index_select(1, idx), m.weight)
        m.in_features = len(idx)

    @staticmethod
    def out_sq(m: nn.Linear) -> torch.Tensor:
        return m.weight.detach().pow(2).sum(1)

    @staticmethod
    def in_sq(m: nn.Linear) -> torch.Tensor:
        return m.weight.detach().pow(2).sum(0)

    @staticmethod
    def in_norm(m: nn.Linear) -> torch.Tensor:
        """L2 norm of the weights that read each input unit."""
        return m.weight.detach().float().norm(dim=0)

    @staticmethod
    def rows(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """The module's input as [rows, units], real tokens only where `valid` ([B, n]) says."""
        x = x.reshape(-1, x.shape[-1])
        return x if valid is None else x[valid.reshape(-1).to(x.device)]  # images: a CPU mask

    # --- the module as a linear map of rows (optin.reconstruct) ---------------------------
    @staticmethod
    def design(m: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        """Input rows that the weight matrix multiplies, laid out like the output's rows: the
        module's input itself ([..., in], every leading index a row)."""
        return x

    @staticmethod
    def matrix(m: nn.Linear) -> torch.Tensor:
        """[out, design columns]."""
        return m.weight.detach()

    @staticmethod
    def set_matrix(m: nn.Linear, w: torch.Tensor) -> None:
        m.weight.data.copy_(w.reshape(m.weight.shape))


class Conv2dOps:
    """Dense (groups = 1) convs, and depthwise ones (groups = in = out channels), whose output
    channel c reads input channel c alone: slicing its outputs slices its inputs and groups too."""

    unit_axis = 1

    @staticmethod
    def _depthwise(m: nn.Conv2d) -> bool:
        return m.groups > 1 and m.groups == m.in_channels == m.out_channels

    @classmethod
    def keep_out(cls, m: nn.Conv2d, idx: torch.Tensor) -> None:
        if m.groups > 1 and not cls._depthwise(m):
            raise NotImplementedError(f"slicing a grouped conv ({m.groups} groups) is not supported")
        m.weight = _param(m.weight.detach().index_select(0, idx), m.weight)
        if m.bias is not None:
            m.bias = _param(m.bias.detach()[idx], m.bias)
        if cls._depthwise(m):
            m.in_channels = m.groups = len(idx)
        m.out_channels = len(idx)

    @staticmethod
    def keep_in(m: nn.Conv2d, idx: torch.Tensor) -> None:
        if m.groups != 1:
            raise NotImplementedError(f"slicing the inputs of a grouped conv ({m.groups} groups) is not supported")
        m.weight = _param(m.weight.detach().index_select(1, idx), m.weight)
        m.in_channels = len(idx)

    @staticmethod
    def out_sq(m: nn.Conv2d) -> torch.Tensor:
        return m.weight.detach().pow(2).sum((1, 2, 3))

    @staticmethod
    def in_sq(m: nn.Conv2d) -> torch.Tensor:
        return m.weight.detach().pow(2).sum((0, 2, 3))

    @staticmethod
    def in_norm(m: nn.Conv2d) -> torch.Tensor:
        return m.weight.detach().float().pow(2).sum((0, 2, 3)).sqrt()

    @staticmethod
    def rows(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """[B, C, H, W] → [B·H·W, C]: every position of an image is real."""
        return x.movedim(1, -1).reshape(-1, x.shape[1])

    # --- the module as a linear map of rows (optin.reconstruct) ---------------------------
    @staticmethod
    def design(m: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        """im2col: [B, C·kh·kw, H', W'], each output position's receptive field (channel-major,
        as the weight flattens), so a k×k conv is one matrix product over these columns."""
        if m.groups != 1 or not isinstance(m.padding, tuple) or m.padding_mode != "zeros":
            raise NotImplementedError("least-squares re-fit of a grouped, string-padded or non-zero-padded conv "
                                      "is not supported")
        if m.kernel_size == (1, 1) and m.stride == (1, 1) and m.padding == (0, 0):
            return x
        cols = torch.nn.functional.unfold(x, m.kernel_size, m.dilation, m.padding, m.stride)
        h, w = (_conv_len(x.shape[2 + a], m.kernel_size[a], m.stride[a], m.padding[a], m.dilation[a]) for a in (0, 1))
        return cols.view(x.shape[0], -1, h, w)

    @staticmethod
    def matrix(m: nn.Conv2d) -> torch.Tensor:
        return m.weight.detach().reshape(m.out_channels, -1)

    @staticmethod
    def set_matrix(m: nn.Conv2d, w: torch.Tensor) -> None:
        m.weight.data.copy_(w.reshape(m.weight.shape))


def _conv_len(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


class BatchNormOps:
    unit_axis = 1

    @staticmethod
    def affine(m: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, c) of the inference-mode map x → a·x + c, per channel (running statistics)."""
        a = m.running_var.detach().add(m.eps).rsqrt()
        if m.affine:
            a = a * m.weight.detach()
        c = -m.running_mean.detach() * a
        return a, (c + m.bias.detach()) if m.affine else c

    @staticmethod
    def keep_out(m: nn.BatchNorm2d, idx: torch.Tensor) -> None:
        if m.affine:
            m.weight = _param(m.weight.detach()[idx], m.weight)
            m.bias = _param(m.bias.detach()[idx], m.bias)
        if m.track_running_stats:
            m.running_mean = m.running_mean[idx].clone()
            m.running_var = m.running_var[idx].clone()
        m.num_features = len(idx)

    @staticmethod
    def out_sq(m: nn.BatchNorm2d) -> torch.Tensor:
        """A BatchNorm holds no weights that magnitude scoring counts (the convs around it do)."""
        return torch.zeros(m.num_features, device=_device(m))


OPS = {nn.Linear: LinearOps, nn.Conv2d: Conv2dOps, nn.BatchNorm2d: BatchNormOps}


def ops(module: nn.Module):
    """The surgery of a module's type (subclasses included); an unknown type raises, naming it."""
    for t in type(module).__mro__:
        if t in OPS:
            return OPS[t]
    raise NotImplementedError(f"no unit surgery for {type(module).__name__}; known: "
                              f"{', '.join(t.__name__ for t in OPS)}")


def keep(run, idx: torch.Tensor) -> None:
    """Keep units `idx` (sorted, within the run) of a run: producers' outputs, the consumer's inputs."""
    for m in run.producers:
        ops(m).keep_out(m, idx.to(_device(m)))
    ops(run.consumer).keep_in(run.consumer, idx.to(_device(run.consumer)))


def _device(m: nn.Module):
    for t in (*m.parameters(), *m.buffers()):  # a non-affine BatchNorm has only its statistics
        return t.device
    return torch.device("cpu")
