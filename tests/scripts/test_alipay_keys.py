"""scripts/alipay_keys.py: the local run's Alipay key pairs, made once and found by both sides."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

from billing.gateways.alipay import load_private_key as billing_private
from billing.gateways.alipay import load_public_key as billing_public
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from sandboxes.providers.alipay import load_private_key as sandbox_private
from sandboxes.providers.alipay import load_public_key as sandbox_public

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "alipay_keys.py"


def run(folder: Path) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--env", str(folder)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if "ALIPAY" not in k},
    )
    settings = {}
    for line in done.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        settings[name] = shlex.split(value)[0]
    return settings


def test_makes_two_pairs_once_that_sign_and_verify_across_the_two_sides(tmp_path: Path) -> None:
    folder = tmp_path / "alipay"

    first = run(folder)
    contents = {p.name: p.read_bytes() for p in folder.iterdir()}
    second = run(folder)

    assert first == second
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == contents
    assert "PRIVATE KEY-----" not in "".join(first.values())
    for name in ("PAYMENT_SANDBOX_ALIPAY_PRIVATE_KEY_FILE", "BILLING_ALIPAY_APP_PRIVATE_KEY_FILE"):
        assert os.stat(first[name]).st_mode & 0o777 == 0o600
    app_key = billing_private(Path(first["BILLING_ALIPAY_APP_PRIVATE_KEY_FILE"]).read_text())
    app_public = sandbox_public(
        Path(first["PAYMENT_SANDBOX_ALIPAY_APP_PUBLIC_KEY_FILE"]).read_text()
    )
    alipay_key = sandbox_private(Path(first["PAYMENT_SANDBOX_ALIPAY_PRIVATE_KEY_FILE"]).read_text())
    alipay_public = billing_public(Path(first["BILLING_ALIPAY_PUBLIC_KEY_FILE"]).read_text())
    for private, public in ((app_key, app_public), (alipay_key, alipay_public)):
        signature = private.sign(b"a=1&b=2", padding.PKCS1v15(), hashes.SHA256())
        public.verify(signature, b"a=1&b=2", padding.PKCS1v15(), hashes.SHA256())
