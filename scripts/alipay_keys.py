"""Make the local run's two RSA2 key pairs for Alipay under a folder, once (default var/alipay).

Alipay signs with two pairs: the merchant app's (billing signs requests with its private key,
the sandbox verifies them with its public key) and Alipay's own (the sandbox signs answers and
notifies, billing verifies them). A pair that is already there is kept, so billing and the
sandbox keep agreeing across restarts. With `--env` it prints the settings that point both sides
at the files, one `export NAME=value` a line (leaving out any already set), for the run script
to `eval`:

    eval "$(.venv/bin/python scripts/alipay_keys.py --env var/alipay)"

Needs only `cryptography` (in the workspace venv). The private keys are written mode 0600 and
never printed.
"""

import argparse
import os
import shlex
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

PAIRS = ("app", "alipay")
"""`app`: the merchant's pair (billing signs); `alipay`: Alipay's pair (the sandbox signs)."""


def ensure_pair(folder: Path, name: str) -> tuple[Path, Path]:
    """Make `<name>_private_key.pem` and `<name>_public_key.pem` unless both exist.

    Args:
        folder: Where the files live.
        name: `app` or `alipay`.

    Returns:
        The private and the public key's paths.
    """
    private = folder / f"{name}_private_key.pem"
    public = folder / f"{name}_public_key.pem"
    if private.exists() and public.exists():
        return private, public
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    folder.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def settings(folder: Path) -> dict[str, str]:
    """The environment settings that point the sandbox and billing at the key files."""
    folder = folder.resolve()
    return {
        "PAYMENT_SANDBOX_ALIPAY_PRIVATE_KEY_FILE": str(folder / "alipay_private_key.pem"),
        "PAYMENT_SANDBOX_ALIPAY_APP_PUBLIC_KEY_FILE": str(folder / "app_public_key.pem"),
        "BILLING_ALIPAY_APP_PRIVATE_KEY_FILE": str(folder / "app_private_key.pem"),
        "BILLING_ALIPAY_PUBLIC_KEY_FILE": str(folder / "alipay_public_key.pem"),
    }


def main(argv: list[str] | None = None) -> int:
    """Make the pairs that are missing; with --env print the settings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default="var/alipay", type=Path)
    parser.add_argument("--env", action="store_true", help="print export lines for eval")
    args = parser.parse_args(argv)
    for name in PAIRS:
        ensure_pair(args.folder, name)
    if args.env:
        for variable, value in settings(args.folder).items():
            # An operator's own setting wins over the local pair.
            if not os.environ.get(variable):
                sys.stdout.write(f"export {variable}={shlex.quote(value)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
