"""Build the Cython extension: OpenMP when the compiler has it, never -ffast-math.

Environment:
  FASTSOFTMAX_PORTABLE=1   compile for the generic CPU baseline instead of -march=native
                           (set it when building a wheel for other machines).
"""

import os
import tempfile
import textwrap
import warnings

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

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
            compile_flags, link_flags = ["-O3", "-fno-math-errno"], ["-lm"]
            if os.environ.get("FASTSOFTMAX_PORTABLE", "0") in ("", "0") and _compiles(
                self.compiler, "int main(void) { return 0; }", ["-march=native"]
            ):
                compile_flags.append("-march=native")
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
        build_flags = " ".join(compile_flags)
        for ext in self.extensions:
            ext.extra_compile_args = compile_flags
            ext.extra_link_args = link_flags
            ext.define_macros.append(("FS_BUILD_FLAGS", f'"{build_flags}"'))
        super().build_extensions()


extensions = [
    Extension(
        "fastsoftmax.backends._cython_kernels",
        ["src_cython/_cython_kernels.pyx"],
        include_dirs=["src_cython"],
        depends=["src_cython/rowops.h"],
    )
]

setup(
    ext_modules=cythonize(extensions, compiler_directives={"language_level": 3}),
    cmdclass={"build_ext": BuildExt},
)
