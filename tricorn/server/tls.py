"""HTTPS: the server's SSLContext from the settings, checked before anything serves, and what a
connection's TLS session tells the app (ASGI's `tls` extension, mod_ssl's environ names)."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import Config

CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def context(config: Config) -> ssl.SSLContext | None:
    """The server's context, or None for plain HTTP; a ConfigError saying what to fix otherwise."""
    if config.certfile is None and config.keyfile is None:
        if config.ca_certs or config.cert_reqs != "none":
            raise ConfigError("--ca-certs and --cert-reqs need HTTPS: add --certfile and --keyfile")
        return None
    if config.certfile is None:
        raise ConfigError("--keyfile needs --certfile (the certificate it belongs to)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    for flag, path in (("--certfile", config.certfile), ("--keyfile", config.keyfile), ("--ca-certs", config.ca_certs)):
        if path is not None:
            _check_readable(flag, path)
    # Without a password, OpenSSL would prompt on the terminal for an encrypted key: never do that.
    password = config.keyfile_password if config.keyfile_password is not None else (lambda: b"")
    try:
        ctx.load_cert_chain(config.certfile, config.keyfile, password)
    except ssl.SSLError as exc:
        raise ConfigError(_cert_error(exc, config)) from None
    if config.ca_certs:
        try:
            ctx.load_verify_locations(config.ca_certs)
        except ssl.SSLError as exc:
            raise ConfigError(f"--ca-certs {config.ca_certs} holds no usable CA certificate ({exc.reason})") from None
    ctx.verify_mode = CERT_REQS[config.cert_reqs]
    if ctx.verify_mode != ssl.CERT_NONE and not config.ca_certs:
        raise ConfigError(f"--cert-reqs {config.cert_reqs} needs --ca-certs: the CAs client certificates chain to")
    if config.ciphers:
        try:
            ctx.set_ciphers(config.ciphers)
        except ssl.SSLError:
            raise ConfigError(f"--ciphers {config.ciphers!r} selects no cipher OpenSSL knows") from None
    return ctx


def _check_readable(flag: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot read {flag} {path}: {exc.strerror}") from None


def _cert_error(exc: ssl.SSLError, config: Config) -> str:
    key = config.keyfile or config.certfile
    assert key is not None
    with open(key, "rb") as f:
        encrypted = b"ENCRYPTED" in f.read()
    if exc.reason == "KEY_VALUES_MISMATCH":
        return f"the key in {key} does not belong to the certificate in {config.certfile}"
    if encrypted and config.keyfile_password is None:
        return f"the key in {key} is encrypted: give --keyfile-password"
    if encrypted:
        return f"--keyfile-password does not decrypt the key in {key}"
    return f"{config.certfile} and {key} must hold a PEM certificate and its private key ({exc.reason or exc})"


def session(ssl_object: Any) -> dict[str, Any]:
    """ASGI's `tls` scope extension for one connection."""
    der = ssl_object.getpeercert(binary_form=True)
    client = ssl.DER_cert_to_PEM_cert(der) if der else None
    name = None
    if der:
        subject = ssl_object.getpeercert().get("subject", ())
        name = ",".join(f"{_SHORT.get(key, key)}={_escape(value)}" for rdn in reversed(subject) for key, value in rdn)
    return {
        "server_cert": None,
        "client_cert_chain": [client] if client else [],
        "client_cert_name": name or None,
        "client_cert_error": None,
        "tls_version": TLS_VERSIONS.get(ssl_object.version()),
        "cipher_suite": None,  # Python's ssl module gives the suite's name, not its number
    }


# RFC 4514's attribute names, for the ones Python spells out.
_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
          "localityName": "L", "stateOrProvinceName": "ST", "domainComponent": "DC", "userId": "UID",
          "streetAddress": "STREET"}


def _escape(value: str) -> str:
    escaped = "".join("\\" + c if c in ',+"\\<>;' else c for c in value)
    if escaped[:1] in ("#", " "):
        escaped = "\\" + escaped
    return escaped[:-1] + "\\ " if escaped.endswith(" ") else escaped


def environ(ssl_object: Any, tls: dict[str, Any]) -> dict[str, str]:
    """The same `session()` for WSGI, with Apache mod_ssl's variable names."""
    values = {"HTTPS": "on", "SSL_PROTOCOL": str(ssl_object.version()), "SSL_CIPHER": str(ssl_object.cipher()[0])}
    if tls["client_cert_chain"]:
        values["SSL_CLIENT_CERT"] = tls["client_cert_chain"][0]
        values["SSL_CLIENT_S_DN"] = tls["client_cert_name"] or ""
    return values
