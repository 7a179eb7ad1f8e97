"""Build the Cython extension: portable by default, wider instructions chosen at run time.

One source is compiled into up to three modules. That source, ``src_cython/_cython_kernels.pyx.tp``,
is a Tempita template (as in scikit-learn): it is expanded first, into
``build/cython/_cython_kernels.pyx`` (generated, never committed), and that file is cythonized:

* ``_cython_kernels``: the compiler's default target (any x86-64, aarch64, ...);
* ``_cython_kernels_x86_64_v3``: ``-march=x86-64-v3`` (AVX2 + FMA), x86-64 only;
* ``_cython_kernels_x86_64_v4``: ``-march=x86-64-v4`` (AVX-512), x86-64 only.

``fastsoftmax.backends.cython_kernels`` imports the widest one this CPU runs. The wide variants
matter because the loops, exp included (``src_cython/rowops.h``), vectorise to the widest
vectors their target allows, with FMA: about 2x between baseline and v3/v4 (see the README,
"Build variants"). Never ``-ffast-math`` (it sets flush-to-zero process-wide).

Environment:
  FASTSOFTMAX_DEBUG=1   one module only, for memory-safety testing: Cython bounds, wraparound
                        and initialisation checks on, -O1 -g, and AddressSanitizer when the
                        compiler has it (run it with libasan preloaded, see .ci/memory-safety).
"""

import os
import tempfile
import textwrap
import warnings

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

MODULE = "fastsoftmax.backends._cython_kernels"
TEMPLATE = "src_cython/_cython_kernels.pyx.tp"
SOURCE = "build/cython/_cython_kernels.pyx"  # expanded from TEMPLATE
WIDE_VARIANTS = {"x86_64_v3": "-march=x86-64-v3", "x86_64_v4": "-march=x86-64-v4"}
DEBUG = os.environ.get("FASTSOFTMAX_DEBUG", "0") not in ("", "0")

RELEASE_DIRECTIVES = {"boundscheck": False, "wraparound": False, "initializedcheck": False}
DEBUG_DIRECTIVES = {"boundscheck": True, "wraparound": True, "initializedcheck": True}

OPENMP_PROBE = textwrap.dedent(
    """
    #include <omp.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        return omp_get_max_threads() > 0 && n > 0 ? 0 : 1;
    }
    """
)
EMPTY_PROGRAM = "int main(void) { return 0; }"


def _compiles(compiler, source: str, flags: list[str]) -> bool:
    """Whether ``source`` compiles and links with ``flags``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as f:
            f.write(source)
        try:
            objects = compiler.compile([path], output_dir=tmp, extra_postargs=flags)
            compiler.link_executable(objects, "probe", output_dir=tmp, extra_postargs=flags)
        except Exception:
            return False
    return True


class BuildExt(build_ext):
    def build_extensions(self):
        if self.compiler.compiler_type == "msvc":
            compile_flags, link_flags = ["/O2", "/openmp"], []
        else:
            compile_flags, link_flags = self._unix_flags()
        built = []
        for ext in self.extensions:
            variant = ext.name.removeprefix(MODULE).removeprefix("_") or "baseline"
            extra = [WIDE_VARIANTS[variant]] if variant in WIDE_VARIANTS else []
            if extra and (
                self.compiler.compiler_type == "msvc"
                or not _compiles(self.compiler, EMPTY_PROGRAM, extra)
            ):
                print(f"fastsoftmax: {variant} variant skipped (the compiler lacks {extra[0]})")
                continue
            flags = compile_flags + extra
            ext.extra_compile_args = flags
            ext.extra_link_args = link_flags
            ext.define_macros += [("FS_BUILD_FLAGS", f'"{" ".join(flags)}"')]
            built.append(ext)
        self.extensions = built
        super().build_extensions()

    def _unix_flags(self) -> tuple[list[str], list[str]]:
        if DEBUG:
            compile_flags, link_flags = ["-O1", "-g", "-fno-math-errno"], ["-lm"]
            asan = ["-fsanitize=address", "-fno-omit-frame-pointer"]
            if _compiles(self.compiler, EMPTY_PROGRAM, asan):
                compile_flags += asan
                link_flags += asan
        else:
            compile_flags, link_flags = ["-O3", "-fno-math-errno"], ["-lm"]
        if _compiles(self.compiler, OPENMP_PROBE, ["-fopenmp"]):
            compile_flags.append("-fopenmp")
            link_flags.append("-fopenmp")
        else:
            warnings.warn(
                "fastsoftmax: the C compiler has no OpenMP; the Cython backend is built "
                "SERIAL (n_threads is ignored). Install an OpenMP runtime (libgomp/libomp) "
                "and reinstall to get threads.",
                stacklevel=1,
            )
            print("*** fastsoftmax: building the Cython backend WITHOUT OpenMP ***")
        return compile_flags, link_flags


def _expand_template() -> None:
    """Write SOURCE from TEMPLATE; only when its text changes, so that cythonize, which compares
    timestamps, does not redo every variant on each build."""
    from Cython.Tempita import Template

    with open(TEMPLATE, encoding="utf-8") as f:
        text = Template(f.read(), name=TEMPLATE).substitute()
    text = f"# Generated from {TEMPLATE} by setup.py: edit the template, not this file.\n" + text
    if os.path.exists(SOURCE):
        with open(SOURCE, encoding="utf-8") as f:
            if f.read() == text:
                return
    os.makedirs(os.path.dirname(SOURCE), exist_ok=True)
    with open(SOURCE, "w", encoding="utf-8") as f:
        f.write(text)


def _extension(variant: str) -> Extension:
    """The extension for ``variant``, cythonized in its own directory (one C file per module)."""
    name = MODULE if variant == "baseline" else f"{MODULE}_{variant}"
    extension = Extension(
        name,
        [SOURCE],
        include_dirs=["src_cython"],
        depends=[TEMPLATE, "src_cython/rowops.h", "src_cython/linear.h"],
    )
    directives = {"language_level": 3, **(DEBUG_DIRECTIVES if DEBUG else RELEASE_DIRECTIVES)}
    return cythonize(
        [extension],
        build_dir=f"build/cython/{'debug' if DEBUG else variant}",
        compiler_directives=directives,
        quiet=True,
    )[0]


_expand_template()
variants = ["baseline"] if DEBUG else ["baseline", *WIDE_VARIANTS]
setup(
    ext_modules=[_extension(variant) for variant in variants],
    cmdclass={"build_ext": BuildExt},
)
