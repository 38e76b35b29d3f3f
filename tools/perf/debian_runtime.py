"""A private glibc 2.38+ runtime from Debian trixie, for binaries built on a
newer distribution than the host.

The perf-analyzer wheel holds one binary that needs glibc 2.38 and
GLIBCXX_3.4.32. On an older host (Debian 12 has glibc 2.36) it runs through
trixie's own dynamic loader with trixie's libraries:
`<lib>/ld-linux-x86-64.so.2 --library-path <lib> perf_analyzer ...`.
Nothing on the system is changed: the .deb files are fetched with a private
apt configuration (or straight from the mirror when apt is missing) and
unpacked into a directory of our own.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import platform
import pwd
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

SUITE = "trixie"
PACKAGES = ("libc6", "libstdc++6", "libgcc-s1", "libssl3t64", "zlib1g")
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
# Used when apt is missing: the index is then not signature-checked, so TLS
# vouches for the mirror instead.
HTTPS_MIRROR = os.environ.get("DEBIAN_HTTPS_MIRROR", "https://deb.debian.org/debian")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


@dataclass(frozen=True)
class Arch:
    debian: str  # Debian architecture name
    triplet: str  # multiarch library directory
    loader: str  # dynamic loader file name


ARCHES = {
    "x86_64": Arch("amd64", "x86_64-linux-gnu", "ld-linux-x86-64.so.2"),
    "aarch64": Arch("arm64", "aarch64-linux-gnu", "ld-linux-aarch64.so.1"),
}


def host_arch() -> Arch:
    machine = platform.machine()
    if machine not in ARCHES:
        raise RuntimeError(f"no Debian runtime recipe for {machine}")
    return ARCHES[machine]


def glibc_version() -> tuple[int, int]:
    """The host's glibc as (major, minor); (0, 0) when it is not glibc."""
    try:
        _name, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").split()
        major, minor = version.split(".")[:2]
        return int(major), int(minor)
    except (ValueError, OSError):
        return 0, 0


def library_dir(root: Path) -> Path:
    return root / "usr" / "lib" / host_arch().triplet


def loader_path(root: Path) -> Path:
    return library_dir(root) / host_arch().loader


def ensure_runtime(root: Path) -> Path:
    """Unpack the trixie libraries under `root` once; return the library dir."""
    stamp = root / ".complete"
    if stamp.exists() and loader_path(root).exists():
        return library_dir(root)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="debs-") as tmp:
        debs = fetch_debs(Path(tmp))
        for deb in debs:
            unpack_deb(deb, root)
        stamp.write_text("\n".join(sorted(d.name for d in debs)) + "\n")
    return library_dir(root)


def fetch_debs(dest: Path) -> list[Path]:
    if shutil.which("apt-get") and KEYRING.exists():
        return fetch_with_apt(dest)
    return fetch_direct(dest)


def write_apt_config(base: Path) -> Path:
    """An apt.conf whose sources, state and cache all live under `base`.

    The system's apt.conf.d is still read first, so a proxy set there applies.
    """
    subdirs = (
        "etc/apt.conf.d",
        "etc/sources.list.d",
        "etc/preferences.d",
        "state/lists/partial",
        "cache/archives/partial",
    )
    for sub in subdirs:
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "state" / "status").touch()
    (base / "etc" / "sources.list").write_text(f"deb [signed-by={KEYRING}] {MIRROR} {SUITE} main\n")
    options = {
        "Dir::Etc": base / "etc",
        "Dir::Etc::sourcelist": base / "etc" / "sources.list",
        "Dir::Etc::sourceparts": base / "etc" / "sources.list.d",
        "Dir::Etc::preferencesparts": base / "etc" / "preferences.d",
        "Dir::State": base / "state",
        "Dir::State::status": base / "state" / "status",
        "Dir::Cache": base / "cache",
        "APT::Architecture": host_arch().debian,
        "APT::Architectures": host_arch().debian,
        # The download directory is ours, so apt's _apt sandbox user may not write it.
        "APT::Sandbox::User": pwd.getpwuid(os.geteuid()).pw_name,
        "Debug::NoLocking": "1",
    }
    config = base / "apt.conf"
    config.write_text("".join(f'{key} "{value}";\n' for key, value in options.items()))
    return config


def fetch_with_apt(dest: Path) -> list[Path]:
    env = {**os.environ, "APT_CONFIG": str(write_apt_config(dest / "apt"))}
    subprocess.run(["apt-get", "-q", "update"], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "-q", "download", *PACKAGES], env=env, cwd=dest, check=True, stdout=subprocess.DEVNULL
    )
    return sorted(dest.glob("*.deb"))


def parse_packages_index(text: str) -> dict[str, dict[str, str]]:
    """Debian `Packages` stanzas by package name (only the fields used here)."""
    index: dict[str, dict[str, str]] = {}
    for stanza in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " ")
        if "Package" in fields:
            index[fields["Package"]] = fields
    return index


def fetch_direct(dest: Path) -> list[Path]:
    url = f"{HTTPS_MIRROR}/dists/{SUITE}/main/binary-{host_arch().debian}/Packages.xz"
    with urllib.request.urlopen(url, timeout=120) as response:
        index = parse_packages_index(lzma.decompress(response.read()).decode())
    debs = []
    for name in PACKAGES:
        entry = index[name]
        with urllib.request.urlopen(f"{HTTPS_MIRROR}/{entry['Filename']}", timeout=300) as response:
            data = response.read()
        if hashlib.sha256(data).hexdigest() != entry["SHA256"]:
            raise RuntimeError(f"{name}: checksum mismatch with the {SUITE} index")
        debs.append(dest / Path(entry["Filename"]).name)
        debs[-1].write_bytes(data)
    return debs


def unpack_deb(deb: Path, root: Path) -> None:
    if shutil.which("dpkg-deb"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    else:
        extract_data_tar(deb.read_bytes(), root)


def ar_members(blob: bytes) -> dict[str, bytes]:
    """Members of an `ar` archive, the container format of a .deb."""
    if not blob.startswith(b"!<arch>\n"):
        raise ValueError("not an ar archive")
    members, offset = {}, 8
    while offset + 60 <= len(blob):
        header = blob[offset : offset + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        members[name] = blob[offset + 60 : offset + 60 + size]
        offset += 60 + size + (size % 2)  # members are 2-byte aligned
    return members


def extract_data_tar(blob: bytes, root: Path) -> None:
    """dpkg-deb -x without dpkg: only the libraries' directory is needed."""
    data = next(v for k, v in ar_members(blob).items() if k.startswith("data.tar"))
    wanted = f"usr/lib/{host_arch().triplet}/"
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
        members = [
            m
            for m in archive.getmembers()
            if m.name.lstrip("./").startswith(wanted) and not (m.issym() and m.linkname.startswith("/"))
        ]
        # The "data" filter (where this Python has it) refuses paths leaving `root`.
        extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        archive.extractall(root, members=members, **extra)
