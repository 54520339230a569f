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
sparse Jacobians / Hessians       :func:`jacobian_sparsity`, :func:`hessian_sparsity` (detected
                                   from the jaxpr), :func:`sparse_jacobian`, :func:`sparse_hessian`
                                   and their ``*_fn`` forms, by colouring
=================================  =====================================================
"""
from __future__ import annotations

from .gradcheck import GradcheckReport, assert_gradcheck, gradcheck
from .jacobians import hessian, hvp, jacobian
from .products import elementwise_grad, jvp, per_example_grads, vjp
from .detect import hessian_sparsity, jacobian_sparsity
from .sparse import (Coloring, hessian_coloring, jacobian_coloring, sparse_hessian, sparse_hessian_fn, sparse_jacobian,
                     sparse_jacobian_fn)
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
    "jacobian_sparsity",
    "hessian_sparsity",
    "hessian_coloring",
    "sparse_hessian",
    "sparse_jacobian_fn",
    "sparse_hessian_fn",
    "tag",
    "intermediate_grads",
    "per_example_grads",
]

