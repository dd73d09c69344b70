"""What runs on the event loop and what is handed to a thread (Authority.enroll_async,
routes.identify_soon): the loop keeps the quick work, and nothing that may take long (an
argon2id check, an RSA key's or a token's signature, a request that waits for approval)
ever runs on it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from argon2 import PasswordHasher
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from estkit.authority.accounts import AccountChanged, Accounts, HashCheckNeeded
from estkit.authority.ca import CertificateAuthority
from estkit.authority.identity import Channel, Identity
from estkit.authority.request import EnrollmentRequest
from estkit.authority.service import Authority
from estkit.config import ServerSettings
from estkit.errors import ApprovalPending, AuthenticationRequired
from estkit.server.auth import BasicCredentials
from estkit.server.context import ServerContext
from estkit.server.routes import enroll_recalled, identify_soon
from estkit.wire.csr import load_csr
from tests.esthttp import make_csr
from tests.pki import make_ca

NO_TLS = Channel("TLSv1.3", None, None, None)
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def threads_of(monkeypatch: pytest.MonkeyPatch, target: Any, name: str) -> list[str]:
    """Wrap target.name to note the name of each thread that calls it."""
    seen: list[str] = []
    original: Callable[..., Any] = getattr(target, name)

    def noted(*args: Any, **kwargs: Any) -> Any:
        seen.append(threading.current_thread().name)
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, noted)
    return seen


def on_a_loop(coroutine_function: Callable[[], Any]) -> tuple[Any, str]:
    """Run it on a fresh event loop in this thread: (its result, the loop thread's name)."""
    return asyncio.run(coroutine_function()), threading.current_thread().name


@pytest.fixture
def context(authority: Authority) -> ServerContext:
    accounts = Accounts(authority.store, FAST_HASHER)
    return ServerContext(authority, accounts, ServerSettings())


def test_a_secret_is_checked_on_a_thread_once_then_recalled_on_the_loop(
    context: ServerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "s3cret-enough"
    context.accounts.add("dev", secret, None, once=False, actor="test")
    hashed = threads_of(monkeypatch, context.accounts, "_verify_hash")
    right = BasicCredentials("dev", secret)

    def identify(credentials: BasicCredentials) -> Callable[[], Any]:
        return lambda: identify_soon(context, NO_TLS, credentials, renewing=False)

    (first, _), loop_thread = on_a_loop(identify(right))
    assert first.name == "dev"
    assert len(hashed) == 1 and hashed[0] != loop_thread
    (again, _), _ = on_a_loop(identify(right))
    assert again.name == "dev" and len(hashed) == 1  # remembered: no hash, no thread
    with pytest.raises(AuthenticationRequired, match="wrong user name or password"):
        on_a_loop(identify(BasicCredentials("dev", "wrong")))
    with pytest.raises(AuthenticationRequired, match="wrong user name or password"):
        on_a_loop(identify(BasicCredentials("nobody", secret)))
    assert len(hashed) == 3 and loop_thread not in hashed


def test_remembered_only_when_the_hash_may_not_be_checked(context: ServerContext) -> None:
    accounts = context.accounts
    accounts.add("dev", "first-secret", None, once=False, actor="test")
    for name, secret in [("dev", "first-secret"), ("nobody", "x")]:
        with pytest.raises(HashCheckNeeded):
            accounts.authenticate(name, secret, hash_allowed=False)
    assert accounts.authenticate("dev", "first-secret") is not None
    assert accounts.authenticate("dev", "first-secret", hash_allowed=False) is not None
    with pytest.raises(HashCheckNeeded):  # a wrong secret is never answered from memory
        accounts.authenticate("dev", "other-secret", hash_allowed=False)


def basic_request(label: str = "") -> EnrollmentRequest:
    return EnrollmentRequest(
        label=label,
        csr=load_csr(make_csr("dev")[1]),
        identity=Identity(name="u", method="basic"),
        channel=NO_TLS,
    )


def test_signing_with_an_ec_key_in_process_stays_on_the_loop(
    authority: Authority, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert authority.ca.signs_quickly
    drafted = threads_of(monkeypatch, authority, "_draft")
    cert, loop_thread = on_a_loop(lambda: authority.enroll_async(basic_request()))
    assert isinstance(cert, x509.Certificate)
    assert drafted == [loop_thread]
    assert authority.store.certificate(format(cert.serial_number, "x")) is not None


def rsa_ca() -> CertificateAuthority:
    """A self-signed RSA-2048 CA (estkit init --key-type rsa-2048 makes such CAs)."""
    key, cert = make_ca("RSA Issuing CA", key=rsa.generate_private_key(65537, 2048))
    return CertificateAuthority(root=cert, issuing=cert, issuing_key=key)


@pytest.mark.parametrize("key", ["rsa", "token"])
def test_a_slow_or_blocking_ca_key_signs_on_a_thread(
    authority: Authority, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    """An RSA key's signature takes milliseconds; a token's call may block."""
    if key == "rsa":
        authority.ca = rsa_ca()
    else:
        monkeypatch.setattr(CertificateAuthority, "signs_quickly", property(lambda _: False))
    assert not authority.ca.signs_quickly
    drafted = threads_of(monkeypatch, authority, "_draft")
    cert, loop_thread = on_a_loop(lambda: authority.enroll_async(basic_request()))
    assert len(drafted) == 1 and drafted[0] != loop_thread
    assert cert.issuer == authority.ca.issuing.subject
    assert authority.store.certificate(format(cert.serial_number, "x")) is not None


def test_a_request_that_awaits_approval_is_queued_from_a_thread(
    authority: Authority, monkeypatch: pytest.MonkeyPatch
) -> None:
    queued = threads_of(monkeypatch, authority.store, "add_request")
    with pytest.raises(ApprovalPending):
        on_a_loop(lambda: authority.enroll_async(basic_request("approved")))
    assert len(queued) == 1 and queued[0] != threading.current_thread().name
    assert authority.store.certificates() == []


def recalled_request(context: ServerContext, label: str = "") -> EnrollmentRequest:
    identity = context.accounts.recall("dev", "s3cret-enough")
    assert identity.account is not None
    return EnrollmentRequest(
        label=label, csr=load_csr(make_csr("dev")[1]), identity=identity, channel=NO_TLS
    )


def test_an_account_verified_lately_is_recalled_without_reading_the_store(
    context: ServerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts = context.accounts
    accounts.add("dev", "s3cret-enough", ["iot"], once=False, actor="test")
    accounts.add("boot", "one-time-secret", None, once=True, actor="test")
    with pytest.raises(HashCheckNeeded):  # never read nor verified in this process
        accounts.recall("dev", "s3cret-enough")
    assert accounts.authenticate("dev", "s3cret-enough") is not None
    assert accounts.authenticate("boot", "one-time-secret") is not None
    reads = threads_of(monkeypatch, context.authority.store, "user")
    identity = accounts.recall("dev", "s3cret-enough")
    assert (identity.name, identity.labels, identity.once) == ("dev", ("iot",), False)
    assert identity.account == context.authority.store.user("dev")
    assert len(reads) == 1  # only the comparison's own read above
    for name, secret in [("dev", "wrong"), ("boot", "one-time-secret"), ("nobody", "x")]:
        with pytest.raises(HashCheckNeeded):  # a wrong secret, a one-time account, a stranger
            accounts.recall(name, secret)
    accounts.forget("dev")
    with pytest.raises(HashCheckNeeded):
        accounts.recall("dev", "s3cret-enough")


@pytest.mark.parametrize("path", ["loop", "thread", "approval"])
def test_a_recalled_account_removed_meanwhile_gets_nothing(
    context: ServerContext, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """Removed between its recall and the commit (another process's ``estkit user remove``):
    401 as for a wrong secret, on the loop's path, a slow key's thread, or the approval queue;
    nothing is issued or queued."""
    accounts, authority = context.accounts, context.authority
    accounts.add("dev", "s3cret-enough", None, once=False, actor="test")
    assert accounts.authenticate("dev", "s3cret-enough") is not None
    cert, _ = on_a_loop(lambda: authority.enroll_async(recalled_request(context)))
    assert authority.store.certificate(format(cert.serial_number, "x")) is not None
    request = recalled_request(context, "approved" if path == "approval" else "")
    if path == "thread":
        monkeypatch.setattr(CertificateAuthority, "signs_quickly", property(lambda _: False))
    authority.store.remove_user("dev")
    with pytest.raises(AccountChanged, match="wrong user name or password") as refused:
        on_a_loop(lambda: authority.enroll_async(request))
    assert refused.value.name == "dev"
    assert len(authority.store.certificates()) == 1
    assert authority.store.requests() == []


def test_an_account_found_changed_is_forgotten(context: ServerContext) -> None:
    """Its next request reads the store, and is refused there before anything is signed."""
    context.accounts.add("dev", "s3cret-enough", None, once=False, actor="test")
    assert context.accounts.authenticate("dev", "s3cret-enough") is not None
    request = recalled_request(context)
    context.authority.store.remove_user("dev")
    with pytest.raises(AccountChanged):
        on_a_loop(lambda: enroll_recalled(context, request))
    with pytest.raises(HashCheckNeeded):
        context.accounts.recall("dev", "s3cret-enough")
