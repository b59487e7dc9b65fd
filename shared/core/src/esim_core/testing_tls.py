"""A throwaway certificate authority for tests of TLS clients: a CA, a server certificate for the
loopback names, and a client certificate, written as the files the settings name.

Tests make their own (nothing here is checked in), so no key outlives its test run.
"""

import datetime
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK_NAMES = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class TestCertificates:
    """The files one `make_certificates` wrote."""

    __test__ = False  # not a pytest test class, despite its name

    ca_file: Path
    """The CA's certificate (PEM): what a client trusts (`KAFKA_SSL_CA_FILE`)."""
    server_cert_file: Path
    """The server's certificate (PEM), issued by the CA for the loopback names."""
    server_key_file: Path
    """The server's private key (PEM, unencrypted)."""
    server_keystore: Path
    """The server's key and certificate chain as a PKCS#12 keystore (for a JVM server)."""
    keystore_password: str
    """The password of `server_keystore`."""
    client_cert_file: Path
    """A client certificate (PEM) issued by the same CA, for mutual TLS."""
    client_key_file: Path
    """The client's private key (PEM), encrypted with `client_key_password`."""
    client_key_password: str


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def make_certificates(
    directory: Path, hosts: tuple[str, ...] = LOOPBACK_NAMES, *, days: int = 2
) -> TestCertificates:
    """Write a new CA, a server certificate for `hosts` (names or IP addresses) and a client
    certificate into `directory`; each key is new."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = _key()
    ca_name = _name("esim test CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    def issue(
        common_name: str, key: ec.EllipticCurvePrivateKey, usage: x509.ObjectIdentifier
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    server_key, client_key = _key(), _key()
    server = issue(hosts[0], server_key, ExtendedKeyUsageOID.SERVER_AUTH)
    client = issue("esim test client", client_key, ExtendedKeyUsageOID.CLIENT_AUTH)
    keystore_password = secrets.token_urlsafe(16)
    client_key_password = secrets.token_urlsafe(16)
    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    return TestCertificates(
        ca_file=_write(directory / "ca.pem", ca.public_bytes(pem)),
        server_cert_file=_write(
            directory / "server.pem", server.public_bytes(pem) + ca.public_bytes(pem)
        ),
        server_key_file=_write(
            directory / "server.key",
            server_key.private_bytes(pem, pkcs8, serialization.NoEncryption()),
        ),
        server_keystore=_write(
            directory / "server.p12",
            pkcs12.serialize_key_and_certificates(
                b"server",
                server_key,
                server,
                [ca],
                serialization.BestAvailableEncryption(keystore_password.encode()),
            ),
        ),
        keystore_password=keystore_password,
        client_cert_file=_write(directory / "client.pem", client.public_bytes(pem)),
        client_key_file=_write(
            directory / "client.key",
            client_key.private_bytes(
                pem, pkcs8, serialization.BestAvailableEncryption(client_key_password.encode())
            ),
        ),
        client_key_password=client_key_password,
    )
