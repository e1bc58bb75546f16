"""The build: the compiled extension, its op schemas, and where wavefuse.kernels is installed.

What a build must contain is told by the environment (.ci/run sets both):
WAVEFUSE_EXPECT_EXT=1 means wavefuse._C must load; WAVEFUSE_EXPECT_CUDA=1 means it must have been
compiled with the CUDA sources. Unset, the corresponding checks skip with the reason.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys

import pytest
import torch

EXPECT_EXT = os.environ.get("WAVEFUSE_EXPECT_EXT") == "1"
EXPECT_CUDA = os.environ.get("WAVEFUSE_EXPECT_CUDA") == "1"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTALL = 'pip install -r requirements.txt && pip install --no-build-isolation -e ".[test]"'

# name -> ([(argument name, type)], number of returns); the contract is documented in csrc/ops.cpp.
_STEP_ARGS = [
    ("x_adv", "Tensor"),
    ("grad", "Tensor"),
    ("x_nat", "Tensor"),
    ("eps", "float"),
    ("alpha", "float"),
    ("lo", "float"),
    ("hi", "float"),
    ("eps_tensor", "Optional[Tensor]"),
    ("alpha_tensor", "Optional[Tensor]"),
    ("lo_tensor", "Optional[Tensor]"),
    ("hi_tensor", "Optional[Tensor]"),
]
_ENERGY_ARGS = [
    ("x", "Tensor"),
    ("filters", "Tensor"),
    ("mode", "str"),
    ("level", "int"),
    ("p", "int"),
]
KERNEL_SCHEMAS = {
    "_dwt2d_kernel": ([("x", "Tensor"), ("filters", "Tensor"), ("mode", "str")], 2),
    "_dwt2d_adjoint_kernel": (
        [
            ("grad_ll", "Tensor"),
            ("grad_hi", "Tensor"),
            ("filters", "Tensor"),
            ("mode", "str"),
            ("input_size", "List[int]"),
        ],
        1,
    ),
    "_idwt2d_kernel": (
        [("ll", "Tensor"), ("hi", "Tensor"), ("filters", "Tensor"), ("mode", "str")],
        1,
    ),
    "_idwt2d_adjoint_kernel": ([("grad_y", "Tensor"), ("filters", "Tensor"), ("mode", "str")], 2),
    # the one-pass multilevel Haar (CUDA kernels only): [ll_J, hi_J, ..., hi_1], and its adjoint
    "_haar_wavedec2_kernel": ([("x", "Tensor"), ("level", "int"), ("mode", "str")], 1),
    "_haar_wavedec2_adjoint_kernel": (
        [
            ("grad_ll", "Tensor"),
            ("grad_hi", "List[Tensor]"),
            ("input_size", "List[int]"),
            ("mode", "str"),
        ],
        1,
    ),
    # the fused ops (wavefuse/ops/hf_penalty.py, wavefuse/ops/pgd_step.py)
    "_band_energy_kernel": (_ENERGY_ARGS, 1),
    "_band_energy_backward_kernel": ([("grad", "Tensor"), *_ENERGY_ARGS], 1),
    "_band_energy_cascade_kernel": (_ENERGY_ARGS, 1),
    "_band_energy_backward_cascade_kernel": ([("grad", "Tensor"), *_ENERGY_ARGS], 1),
    "_pgd_step_kernel": ([*_STEP_ARGS, ("norm", "str")], 0),
    "_wavelet_pgd_step_kernel": (
        [
            *_STEP_ARGS,
            ("filters", "Tensor"),
            ("wave_mode", "str"),
            ("level", "int"),
            ("hf_scale", "List[float]"),
            ("norm", "str"),
        ],
        0,
    ),
    "_separable_pgd_step_kernel": (
        [
            *_STEP_ARGS,
            ("left", "Tensor"),
            ("right_t", "Tensor"),
            ("identity", "float"),
            ("norm", "str"),
        ],
        0,
    ),
    "_chain_pgd_step_kernel": (
        [
            *_STEP_ARGS,
            ("filters", "Tensor"),
            ("wave_mode", "str"),
            ("level", "int"),
            ("hf_scale", "List[float]"),
            ("norm", "str"),
            ("cascade", "bool"),
        ],
        0,
    ),
    # wavelet pooling (wavefuse/ops/pool.py)
    "_wavelet_pool2d_kernel": ([("x", "Tensor"), ("kernel", "Tensor"), ("mode", "str")], 1),
    "_wavelet_pool2d_adjoint_kernel": (
        [("grad", "Tensor"), ("kernel", "Tensor"), ("mode", "str"), ("input_size", "List[int]")],
        1,
    ),
    "_wavelet_pool2d_kernel_grad_kernel": (
        [("grad", "Tensor"), ("x", "Tensor"), ("taps", "int"), ("mode", "str")],
        1,
    ),
}
# The step ops update x_adv in place (declared Tensor(a!)); no other kernel op writes an argument.
MUTATED = {
    name: {"x_adv"}
    for name in (
        "_pgd_step_kernel",
        "_wavelet_pgd_step_kernel",
        "_separable_pgd_step_kernel",
        "_chain_pgd_step_kernel",
    )
}
# The ops that are not kernels: build facts, no tensor arguments.
BUILD_INFO_OPS = {"_built_with_cuda", "_cuda_kernel_image"}

RETURN_TYPES = {"_haar_wavedec2_kernel": "List[Tensor]"}  # else every return is a Tensor


def _load_extension() -> str | None:
    """Import wavefuse._C; None on success, else the error as text."""
    try:
        importlib.import_module("wavefuse._C")
    except (ImportError, OSError) as e:  # OSError: built against another torch
        return f"{type(e).__name__}: {e}"
    return None


def _require_extension() -> None:
    error = _load_extension()
    if error is None:
        return
    if EXPECT_EXT:
        pytest.fail(f"WAVEFUSE_EXPECT_EXT=1 but wavefuse._C did not load: {error}")
    pytest.skip(f"wavefuse._C is not built ({error}); set WAVEFUSE_EXPECT_EXT=1 to require it")


@pytest.mark.skipif(not EXPECT_EXT, reason="WAVEFUSE_EXPECT_EXT=1 not set: extension not required")
def test_extension_imports():
    error = _load_extension()
    assert error is None, f"import wavefuse._C failed: {error}; rebuild with: {INSTALL}"


@pytest.mark.skipif(
    not EXPECT_CUDA, reason="WAVEFUSE_EXPECT_CUDA=1 not set: CUDA build not required"
)
def test_built_with_cuda():
    error = _load_extension()
    assert error is None, f"import wavefuse._C failed: {error}"
    assert torch.ops.wavefuse._built_with_cuda() is True, (
        "wavefuse._C was compiled without csrc/cuda although WAVEFUSE_EXPECT_CUDA=1; the build log "
        "line 'wavefuse: NOT building CUDA kernels: ...' (pip install -v) says why"
    )


def test_built_with_cuda_is_consistent_with_torch():
    _require_extension()
    built = torch.ops.wavefuse._built_with_cuda()
    assert isinstance(built, bool)
    if built:
        assert torch.version.cuda is not None, "CUDA kernels compiled against a CPU-only torch"


@pytest.mark.parametrize("name", sorted(KERNEL_SCHEMAS))
def test_kernel_schema(name):
    _require_extension()
    expected_args, n_returns = KERNEL_SCHEMAS[name]
    schema = getattr(torch.ops.wavefuse, name).default._schema
    assert schema.name == f"wavefuse::{name}"
    assert [(a.name, str(a.type)) for a in schema.arguments] == expected_args
    assert len(schema.returns) == n_returns
    assert all(str(r.type) == RETURN_TYPES.get(name, "Tensor") for r in schema.returns)
    written = {
        a.name for a in schema.arguments if a.alias_info is not None and a.alias_info.is_write
    }
    assert written == MUTATED.get(name, set()), f"{name} writes {written or 'nothing'}"
    # The text form parses back to the same schema.
    assert str(torch._C.parse_schema(str(schema))) == str(schema)


def _defined_in_ops_cpp() -> set[str]:
    """The op names csrc/ops.cpp's TORCH_LIBRARY block defines (each def's text starts "_name(")."""
    with open(os.path.join(REPO_ROOT, "csrc", "ops.cpp"), encoding="utf-8") as f:
        source = f.read()
    block = source[source.index("TORCH_LIBRARY(wavefuse, m)") :]
    block = block[: block.index("\n}\n")]
    return set(re.findall(r'm\.def\(\s*"(\w+)\(', block))


def test_every_defined_op_has_its_schema_pinned():
    """A new op in csrc/ops.cpp needs its row above (or a place among the build-info ops)."""
    defined = _defined_in_ops_cpp()
    assert len(defined) >= len(KERNEL_SCHEMAS)  # the parse found the block
    assert defined - BUILD_INFO_OPS == set(KERNEL_SCHEMAS), (
        f"unpinned: {sorted(defined - BUILD_INFO_OPS - set(KERNEL_SCHEMAS))}; "
        f"pinned but not defined: {sorted(set(KERNEL_SCHEMAS) - defined)}"
    )
    assert BUILD_INFO_OPS <= defined


_LAYOUT_PROBE = """
import importlib.metadata, importlib.util, json, os
import wavefuse.kernels as k
spec = importlib.util.find_spec("kernels")
owners = importlib.metadata.packages_distributions().get("kernels", [])
print(json.dumps({
    "name": k.__name__,
    "file": k.__file__,
    "top_level_origin": None if spec is None else str(spec.origin),
    "top_level_owners": owners,
}))
"""


def test_kernels_installed_as_subpackage_only(tmp_path):
    """wavefuse.kernels imports from the installed package, and no top-level `kernels` leaks out.

    Run in a fresh interpreter from a directory other than the repo root: there, the repo's own
    kernels/ folder would shadow what is installed.
    """
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    paths = [p for p in paths if os.path.abspath(p) != REPO_ROOT]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    proc = subprocess.run(
        [sys.executable, "-c", _LAYOUT_PROBE],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (
        f"import wavefuse.kernels failed outside the repo (is wavefuse installed? {INSTALL}):\n"
        f"{proc.stderr}"
    )
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found["name"] == "wavefuse.kernels"
    assert os.path.basename(found["file"]) == "__init__.py"
    if found["top_level_origin"] is not None:
        # Only acceptable if some other distribution owns a top-level `kernels` (e.g. the
        # unrelated PyPI project of that name), not wavefuse.
        assert "wavefuse" not in found["top_level_owners"], (
            f"wavefuse installed a top-level `kernels` module: {found['top_level_origin']}"
        )
        assert found["top_level_owners"], (
            f"a top-level `kernels` module is importable from {found['top_level_origin']}"
        )


# ---- the oldest supported torch (pyproject: torch>=2.6) ------------------------------------------
# CI runs one torch (the newest); torch 2.6's infer_schema is stricter about how a custom op's
# signature is spelled, and a spelling it refuses is a ValueError when wavefuse is imported (that
# was the case for list[int] until 2026-12-06). These tests apply torch 2.6's rules to every op.


def _torch26_types():
    """torch 2.6's SUPPORTED_PARAM_TYPES and SUPPORTED_RETURN_TYPES, rebuilt from its table.

    (X | None equals typing.Optional[X], hash included; list[X] does not equal typing.List[X].)
    """
    import typing

    from torch import device, dtype, types

    Tensor = torch.Tensor
    params = set()
    # (type, T[] variant, T?[] variant, T[]? variant), as torch/_library/infer_schema.py in 2.6
    for base, list_base, optional_base_list, optional_list_base in [
        (Tensor, True, True, False),
        (int, True, False, True),
        (float, True, False, True),
        (bool, True, False, True),
        (str, False, False, False),
        (types.Number, True, False, False),
        (dtype, False, False, False),
        (device, False, False, False),
    ]:
        params |= {base, base | None}
        seqs = (typing.Sequence[base], typing.List[base])  # noqa: UP006
        if list_base:
            params |= set(seqs)
        if optional_base_list:
            params |= {typing.Sequence[base | None], typing.List[base | None]}  # noqa: UP006
        if optional_list_base:
            params |= {s | None for s in seqs}
    params |= {int | float | bool, int | float | bool | None}
    returns = {Tensor, typing.List[Tensor], int, float, bool, types.Number}  # noqa: UP006
    return params, returns


def _torch26_eval(annotation):
    """An annotation as torch 2.6 reads it: a string is eval'ed in its infer_schema's namespace."""
    import typing

    from torch import device, dtype, types

    if not isinstance(annotation, str):
        return annotation
    namespace = {"typing": typing, "torch": torch, "Tensor": torch.Tensor, "device": device}
    namespace.update(dtype=dtype, types=types, Optional=typing.Optional, Union=typing.Union)
    namespace.update(List=typing.List, Sequence=typing.Sequence)  # noqa: UP006
    return eval(annotation, namespace)


def _custom_ops():
    import pkgutil

    from torch._library.custom_ops import CustomOpDef

    import wavefuse.ops

    found = {}
    for info in pkgutil.iter_modules(wavefuse.ops.__path__):
        module = importlib.import_module(f"wavefuse.ops.{info.name}")
        for value in vars(module).values():
            if isinstance(value, CustomOpDef):
                found[value._name] = value._init_fn
    return found


def test_custom_op_registry_is_complete():
    # every wavefuse:: op in torch's registry was found by _custom_ops (else the test below is blind)
    import wavefuse  # noqa: F401  (registers the ops)

    # the C++ kernels' schemas (_dwt2d_kernel, ...) are KERNEL_SCHEMAS' business
    registered = {name for name in dir(torch.ops.wavefuse) if not name.startswith("_")}
    registered.discard("name")
    assert set(_custom_ops()) == registered


@pytest.mark.parametrize("name", sorted(_custom_ops()))
def test_custom_op_signature_parses_on_torch_2_6(name):
    import inspect
    import typing

    params, returns = _torch26_types()
    sig = inspect.signature(_custom_ops()[name])
    for arg, parameter in sig.parameters.items():
        try:
            annotation = _torch26_eval(parameter.annotation)
        except NameError as e:
            pytest.fail(f"{name}({arg}): torch 2.6 cannot resolve {parameter.annotation!r}: {e}")
        assert annotation in params, (
            f"{name}({arg}: {parameter.annotation}): torch 2.6's infer_schema refuses this type; "
            "spell it with typing (Sequence[int], List[Tensor], Optional[Tensor])"
        )
    ret = _torch26_eval(sig.return_annotation)
    if ret is None or ret == "None":
        return
    parts = typing.get_args(ret) if typing.get_origin(ret) is tuple else (ret,)
    for part in parts:
        assert part in returns, f"{name} -> {sig.return_annotation}: torch 2.6 refuses {part}"
