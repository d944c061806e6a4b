"""Stand-in: ``rgb_to_grayscale``, the one name BasicSR 1.4.2's ``data/degradations.py``
imports (``tests/test_degrade.py`` loads that file by path); see
``tests/stubs/torchvision/__init__.py``.

Unlike the other names here this one computes: it is torchvision's implementation (0.15,
``torchvision/transforms/functional_tensor.py``, BSD-3-Clause), so BasicSR's gray Poisson
noise runs as it does with the real torchvision. Test-only.
"""

from torch import Tensor


def rgb_to_grayscale(img: Tensor, num_output_channels: int = 1) -> Tensor:
    if img.ndim < 3:
        raise TypeError(
            f"Input image tensor should have at least 3 dimensions, but found {img.ndim}"
        )
    if img.shape[-3] not in (1, 3):
        raise TypeError(
            f"Input image tensor permitted channel values are [1, 3], but found {img.shape[-3]}"
        )

    if num_output_channels not in (1, 3):
        raise ValueError("num_output_channels should be either 1 or 3")

    if img.shape[-3] == 3:
        r, g, b = img.unbind(dim=-3)
        # This implementation closely follows the TF one:
        # https://github.com/tensorflow/tensorflow/blob/v2.3.0/tensorflow/python/ops/image_ops_impl.py#L2105-L2138
        l_img = (0.2989 * r + 0.587 * g + 0.114 * b).to(img.dtype)
        l_img = l_img.unsqueeze(dim=-3)
    else:
        l_img = img.clone()

    if num_output_channels == 3:
        return l_img.expand(img.shape)

    return l_img
