"""What BLAS the PyTorch peers run on, and their thread count (shared by
bert_peer.py and llama_peer.py)."""

import ctypes
import os

import torch


def openblas_info():
    """(info dict, ctypes handle or None) for the OpenBLAS torch has loaded."""
    try:
        ob = ctypes.CDLL("libopenblas.so.0")
    except OSError as e:
        return {"loaded": False, "error": str(e)}, None
    info = {"loaded": True}
    for fn, rt in (("openblas_get_config", ctypes.c_char_p), ("openblas_get_corename", ctypes.c_char_p),
                   ("openblas_get_num_threads", ctypes.c_int)):
        f = getattr(ob, fn, None)
        if f is not None:
            f.restype = rt
            v = f()
            info[fn[len("openblas_get_"):]] = v.decode() if isinstance(v, bytes) else v
    try:
        with open("/proc/self/maps") as m:
            libs = {ln.split()[-1] for ln in m if "blas" in ln or "lapack" in ln}
        info["mapped"] = sorted({os.path.realpath(x) for x in libs})
    except OSError:
        pass
    return info, ob


def set_threads(n):
    """torch intra-op threads and OpenBLAS's own pthread pool (torch.set_num_threads does not
    reach the latter in Debian's build, whose BLAS is the system libblas.so.3 -> OpenBLAS)."""
    torch.set_num_threads(n)
    info, ob = openblas_info()
    if ob is not None and hasattr(ob, "openblas_set_num_threads"):
        ob.openblas_set_num_threads(n)
        info["num_threads"] = ob.openblas_get_num_threads()
    return info
