"""Sender certificates for sealed sender: what the service signs, and how anyone checks it.

The chain follows Signal's design (Signal blog, "Technology preview: Sealed sender for Signal",
2018-10-29; libsignal ``sealed_sender.rs``): a **trust root** key, known to every device, signs a
**server certificate** naming a server key; the server key signs short-lived **sender
certificates** (sender account, device, identity key, expiry). Devices put their sender
certificate *inside* the encrypted envelope, so the relay that carries a sealed envelope never
sees whose certificate it is.

Keys here are Ed25519 (the service's own keys; devices' identity keys are X25519 with XEdDSA).
Encodings are msgpack arrays in a fixed order; a signature covers the exact encoded bytes.
Times are integer seconds of whatever clock the relay was given (simulated or real).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from relaysim.relay._primitives import Ed25519Signer, ed25519_verify
from relaysim.relay.wire import MAX_ACCOUNT_LEN, MsgpackError, quoted, type_name, unpack_value, value_text

__all__ = [
    "MAX_CERTIFICATE_DEVICE_ID",
    "REVOKED_SERVER_KEY_IDS",
    "CertificateError",
    "SenderCertificate",
    "ServerCertificate",
    "ServerSigningKey",
    "TrustRoot",
]


# Server certificate key ids every device refuses, whoever signed them: libsignal's
# REVOKED_SERVER_CERTIFICATE_KEY_IDS (sealed_sender.rs), whose only entry, 0xDEADC357, is kept to test the
# revocation ("no prod server certificates have been revoked"); a revoked key's id would be added here.
REVOKED_SERVER_KEY_IDS: frozenset[int] = frozenset({0xDEADC357})


# The highest device id a sender certificate names: libsignal's DeviceId holds 1 to 127 and nothing else
# (``DeviceId::new``, rust/core/src/address.rs: MAX_VALID_DEVICE_ID = 127), and its SenderCertificate
# refuses to read a certificate whose sender device is not one (sealed_sender.rs, ``deserialize``).
# Certificates with another device id are neither issued nor read here.
MAX_CERTIFICATE_DEVICE_ID = 127


class CertificateError(Exception):
    """A certificate is malformed, wrongly signed, revoked, or expired. The message says which."""


def _verify(public: bytes, signature: bytes, data: bytes, what: str) -> None:
    if not ed25519_verify(public, data, signature):
        raise CertificateError(f"{what}: signature does not verify")


def _unpack(data: bytes, n: int, what: str) -> list[Any]:
    # (read as the wire reads a frame: what is wrong said in its words, an ext msgpack reserves a value)
    try:
        obj = unpack_value(data, what)
    except MsgpackError as e:
        raise CertificateError(str(e)) from None
    if not isinstance(obj, list) or len(obj) != n:
        raise CertificateError(f"{what}: expected an array of {n} items")
    return obj


def _pack(obj: list[Any]) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _check_uint(what: str, name: str, value: object, low: int, high: int) -> None:
    # type() is int, not isinstance: msgpack's true and false unpack as bools, ints equal to 1 and 0; what
    # it got said in msgpack's words (nil, true, ext 5 b'x'), never Python's (relay.wire.value_text)
    if type(value) is not int or not low <= value <= high:
        raise CertificateError(
            f"{what}: {name} must be an integer from {low} to {high}, got {value_text(value)}"
        )


def _check_bin(what: str, name: str, value: object, size: int | None = None) -> None:
    """A field that must be bin (of ``size`` bytes where given), refused naming it and what it got, in
    msgpack's words (relay.wire.type_name): "fields have the wrong types" named neither."""
    if type(value) is not bytes:
        raise CertificateError(f"{what}: {name} must be bin, got {type_name(value)}")
    if size is not None and len(value) != size:
        raise CertificateError(f"{what}: {name} must be {size} bytes, got {len(value)}")


def _check_sender(sender: str) -> None:
    # The sender is an account, of the form the relay takes for one (docs/protocol.md: 1-128 printable
    # characters, relay.wire.AccountId). libsignal's SenderCertificate holds a service id string and an
    # optional E.164 number and checks neither's form; an account here is neither.
    if not 1 <= len(sender) <= MAX_ACCOUNT_LEN or not sender.isprintable():
        raise CertificateError(
            f"sender certificate: sender must be an account name of 1 to {MAX_ACCOUNT_LEN} printable "
            f"characters, got {quoted(sender)}"
        )


@dataclass(frozen=True, slots=True)
class ServerCertificate:
    key_id: int
    public_key: bytes  # the server's Ed25519 key
    signature: bytes  # by the trust root over body()

    def body(self) -> bytes:
        return _pack([self.key_id, self.public_key])

    def encode(self) -> bytes:
        return _pack([self.key_id, self.public_key, self.signature])

    @classmethod
    def decode(cls, data: bytes) -> ServerCertificate:
        key_id, public, sig = _unpack(data, 3, "server certificate")
        _check_uint("server certificate", "key_id", key_id, 0, 2**32 - 1)
        _check_bin("server certificate", "public_key", public)
        _check_bin("server certificate", "signature", sig)
        return cls(key_id, public, sig)

    def verify(self, trust_root_public: bytes) -> None:
        """Refuses a revoked key id before the signature, as libsignal's ``ServerCertificate::validate``."""
        if self.key_id in REVOKED_SERVER_KEY_IDS:
            raise CertificateError(f"server certificate: key id {self.key_id:#x} is revoked")
        _verify(trust_root_public, self.signature, self.body(), "server certificate")


@dataclass(frozen=True, slots=True)
class SenderCertificate:
    sender: str
    device: int
    identity_key: bytes  # the sender device's X25519 identity key
    expires: int
    server_certificate: ServerCertificate
    signature: bytes  # by the server key over body()

    def body(self) -> bytes:
        return _pack(
            [self.sender, self.device, self.identity_key, self.expires, self.server_certificate.encode()]
        )

    def encode(self) -> bytes:
        return _pack([self.body(), self.signature])

    @classmethod
    def decode(cls, data: bytes) -> SenderCertificate:
        body, sig = _unpack(data, 2, "sender certificate")
        _check_bin("sender certificate", "body", body)
        _check_bin("sender certificate", "signature", sig)
        sender, device, ik, expires, server = _unpack(body, 5, "sender certificate body")
        if type(sender) is not str:
            raise CertificateError(f"sender certificate: sender must be str, got {type_name(sender)}")
        _check_uint("sender certificate", "device", device, 1, MAX_CERTIFICATE_DEVICE_ID)
        _check_bin("sender certificate", "identity_key", ik, 32)
        _check_uint("sender certificate", "expires", expires, 0, 2**64 - 1)
        _check_bin("sender certificate", "server_certificate", server)
        _check_sender(sender)
        return cls(sender, device, ik, expires, ServerCertificate.decode(server), sig)

    def verify(self, trust_root_public: bytes, now: int) -> None:
        """Check the whole chain and the expiry. Raises CertificateError naming what failed.

        ``expires`` is the last second the certificate is good for: it is refused once ``now`` is
        past it, as libsignal's ``SenderCertificate::validate`` refuses it when the validation time
        is greater than the expiration. A recipient gives as ``now`` the time the relay took the
        envelope (``clients.agent``), as Signal's clients give the envelope's server timestamp."""
        self.server_certificate.verify(trust_root_public)
        _verify(self.server_certificate.public_key, self.signature, self.body(), "sender certificate")
        if now > self.expires:
            raise CertificateError(f"sender certificate expired at {self.expires} (now {now})")


class TrustRoot:
    """The service's offline root key. Devices ship with ``public``."""

    def __init__(self, private: bytes) -> None:
        self._key = Ed25519Signer(private)
        self.public = self._key.public

    def certify(self, key_id: int, server_public: bytes) -> ServerCertificate:
        body = _pack([key_id, server_public])
        return ServerCertificate(key_id, server_public, self._key.sign(body))


def _refuse_revoked(key_id: int) -> None:
    # Every device refuses a certificate under a revoked key id (ServerCertificate.verify), so a server
    # key under one would issue sender certificates that open nothing: refused when it is made.
    if key_id in REVOKED_SERVER_KEY_IDS:
        raise CertificateError(
            f"server signing key: key id {key_id:#x} is revoked (REVOKED_SERVER_KEY_IDS); "
            "every device refuses its certificates"
        )


class ServerSigningKey:
    """The online key the relay signs sender certificates with, and its certificate."""

    def __init__(self, private: bytes, certificate: ServerCertificate) -> None:
        _refuse_revoked(certificate.key_id)
        self._key = Ed25519Signer(private)
        if self._key.public != certificate.public_key:
            raise CertificateError("server certificate does not name this server key")
        self.certificate = certificate

    @classmethod
    def create(cls, root: TrustRoot, key_id: int, private: bytes) -> ServerSigningKey:
        """A server key certified by ``root`` under ``key_id``; a revoked id is refused before anything is signed."""
        _refuse_revoked(key_id)
        return cls(private, root.certify(key_id, Ed25519Signer(private).public))

    def issue(self, sender: str, device: int, identity_key: bytes, expires: int) -> SenderCertificate:
        _check_sender(sender)
        _check_uint("sender certificate", "device", device, 1, MAX_CERTIFICATE_DEVICE_ID)
        unsigned = SenderCertificate(sender, device, identity_key, expires, self.certificate, b"")
        return SenderCertificate(
            sender, device, identity_key, expires, self.certificate, self._key.sign(unsigned.body())
        )
