"""Derivatives beyond ``jax.grad``: the PyTorch autograd idioms as pure, jit-able functions.

=================================  =====================================================
PyTorch                            toolkit.autodiff
=================================  =====================================================
``torch.autograd.functional.jacobian``  :func:`jacobian` (forward / reverse / auto, chunked)
``y.backward(grad_outputs=g)``     :func:`vjp` with an explicit ``cotangent``
``create_graph=True`` higher order :func:`hessian`, :func:`hvp`, nesting any of these
d^k f(x_i)/dx_i^k                  :func:`elementwise_grad` (a JVP chain, no Jacobian)
``torch.autograd.gradcheck``       :func:`gradcheck` / :func:`assert_gradcheck`
``t.retain_grad()``                :func:`tag` + :func:`intermediate_grads`
per-sample gradients (functorch)   :func:`per_example_grads`
sparse Jacobians by colouring      :func:`jacobian_coloring` + :func:`sparse_jacobian`
=================================  =====================================================
"""
from __future__ import annotations

from .gradcheck import GradcheckReport, assert_gradcheck, gradcheck
from .jacobians import hessian, hvp, jacobian
from .products import elementwise_grad, jvp, per_example_grads, vjp
from .sparse import Coloring, jacobian_coloring, sparse_jacobian
from .tags import intermediate_grads, tag

__all__ = [
    "jacobian",
    "vjp",
    "jvp",
    "hessian",
    "hvp",
    "elementwise_grad",
    "gradcheck",
    "assert_gradcheck",
    "GradcheckReport",
    "jacobian_coloring",
    "Coloring",
    "sparse_jacobian",
    "tag",
    "intermediate_grads",
    "per_example_grads",
]

