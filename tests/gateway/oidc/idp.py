"""A real, local OAuth 2.0 authorization server for tests, built from authlib's server parts.

``LocalIdp`` runs a Starlette app under uvicorn on 127.0.0.1 and a free port, in a thread:

    POST /token                              client-credentials grant (authlib's
                                             AuthorizationServer + ClientCredentialsGrant),
                                             client_secret_basic or client_secret_post; and the
                                             authorization-code grant with PKCE (S256) for
                                             public clients (a browser), CORS-enabled
    GET  /authorize                          signs ``login_as`` in at once (no form) and
                                             redirects back with a single-use code
    GET  /.well-known/openid-configuration   issuer, jwks_uri, token_endpoint, ...
    GET  /jwks                               the published public keys

Access tokens are RFC 9068 JWTs made by authlib's ``JWTBearerTokenGenerator`` (iss, aud, sub,
exp, iat, jti, client_id, scope) plus ``nbf`` and the client's registered claims (tenant,
roles...). Keys are RSA (RS256), EC P-256 (ES256) or Ed25519 (EdDSA); ``rotate_key()`` starts
signing with a new key while the old one stays published, ``retire_key(kid)`` unpublishes one.

authlib quirk: its generator signs through joserfc's default registry, which only allows the
"recommended" algorithms (HS256, RS256, ES256), so it cannot issue EdDSA tokens; for an Ed25519
signing key this IdP builds the same claims itself and signs them with ``sign``.

``sign``/``raw_token``/``hs256_token`` mint arbitrary, even malicious, tokens for attack tests.
They sign with ``cryptography`` directly, independently of the joserfc code the gateway uses.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, cast
from urllib.parse import parse_qsl

import httpx
import uvicorn
from authlib.oauth2.rfc6749 import AuthorizationServer, ClientCredentialsGrant, ClientMixin, OAuth2Request
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc.jwk import ECKey, Key, KeySet, OKPKey, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

KeyType = Literal["RSA", "EC", "OKP"]
ALG: dict[str, str] = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}


# --- keys and raw token minting -------------------------------------------------------------


def generate_key(key_type: KeyType = "EC", kid: str | None = None) -> Key:
    """A private signing key (joserfc) with a ``kid``."""
    params: Any = {"kid": kid or secrets.token_hex(8), "use": "sig"}
    if key_type == "RSA":
        return RSAKey.generate_key(2048, parameters=params)
    if key_type == "EC":
        return ECKey.generate_key("P-256", parameters=params)
    return OKPKey.generate_key("Ed25519", parameters=params)


def public_jwk(key: Key) -> dict[str, Any]:
    return dict(key.as_dict(private=False))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    """``b64(header).b64(claims).b64(sign(signing input))``: any header, any claims."""
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    return signing_input + "." + b64url(sign(signing_input.encode()))


def signature(key: Key, alg: str, data: bytes) -> bytes:
    """A JWS signature over ``data`` with ``key``'s private half (cryptography, not joserfc)."""
    private = key.private_key
    if alg == "RS256" and isinstance(private, RSAPrivateKey):
        return private.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if alg == "ES256" and isinstance(private, EllipticCurvePrivateKey):
        r, s = decode_dss_signature(private.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    if alg == "EdDSA" and isinstance(private, Ed25519PrivateKey):
        return private.sign(data)
    raise ValueError(f"cannot sign {alg} with a {key.key_type} key")


def sign(
    claims: dict[str, Any], key: Key, *, alg: str | None = None, header: dict[str, Any] | None = None
) -> str:
    """A token over ``claims`` signed by ``key``; ``header`` replaces the default one entirely."""
    alg = alg or ALG[key.key_type]
    if header is None:
        header = {"alg": alg, "typ": "at+jwt", "kid": key.kid}
    return raw_token(header, claims, lambda data: signature(key, alg, data))


def hs256_token(claims: dict[str, Any], secret: bytes, header: dict[str, Any] | None = None) -> str:
    """An HMAC-SHA256 token: with a public key's PEM as ``secret``, the algorithm-confusion attack."""
    header = header or {"alg": "HS256", "typ": "JWT"}
    return raw_token(header, claims, lambda data: hmac.new(secret, data, hashlib.sha256).digest())


# --- the authorization server ---------------------------------------------------------------


@dataclass
class Client(ClientMixin):
    """A registered confidential client; ``claims`` go into every token it is issued."""

    client_id: str
    client_secret: str
    audience: str | list[str] = "llmos"
    claims: dict[str, Any] = field(default_factory=dict)
    scope: str = ""

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        allowed = set(self.scope.split())
        return " ".join(s for s in (scope or self.scope).split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return hmac.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return endpoint == "token" and method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


class _TokenRequest(OAuth2Request):
    def __init__(self, uri: str, headers: Any, form: dict[str, str]) -> None:
        super().__init__("POST", uri, headers=headers)
        self._form = form
        self.payload = BasicOAuth2Payload(form)

    @property
    def form(self) -> dict[str, str]:
        return self._form

    @property
    def args(self) -> dict[str, str]:
        return {}


class _ClientCredentials(ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic", "client_secret_post"]


class _AuthorizationServer(AuthorizationServer):
    def __init__(self, idp: LocalIdp) -> None:
        super().__init__()
        self._idp = idp
        self.register_grant(_ClientCredentials)

    def query_client(self, client_id: str) -> Client | None:
        return self._idp.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        self._idp.issued.append(token)

    def create_oauth2_request(self, request: _TokenRequest) -> _TokenRequest:
        return request

    def create_json_request(self, request: Any) -> Any:
        raise NotImplementedError

    def handle_response(self, status: int, body: Any, headers: Any) -> tuple[int, Any, Any]:
        return status, body, headers

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass


class _TokenGenerator(JWTBearerTokenGenerator):
    def __init__(self, idp: LocalIdp) -> None:
        super().__init__(issuer="", expires_generator=idp.token_lifetime_s)
        self._idp = idp

    def get_jwks(self) -> KeySet:
        # Only the current key: joserfc then picks it and writes its kid into the header.
        return KeySet([self._idp.signing_key])

    def get_audiences(self, client: Client, user: Any, scope: str) -> str | list[str]:
        return client.audience

    def get_extra_claims(self, client: Client, grant_type: str, user: Any, scope: str) -> dict[str, Any]:
        return {"nbf": int(time.time()), **client.claims}

    def access_token_generator(self, client: Client, grant_type: str, user: Any, scope: str) -> str:
        key = self._idp.signing_key
        self.issuer = self._idp.issuer
        self.alg = ALG[key.key_type]
        if self.alg != "EdDSA":
            return str(super().access_token_generator(client, grant_type, user, scope))
        now = int(time.time())  # what authlib's generator would have put in, signed by hand
        claims = {
            "iss": self.issuer,
            "exp": now + self._idp.token_lifetime_s,
            "client_id": client.client_id,
            "iat": now,
            "jti": self.get_jti(client, grant_type, user, scope),
            "scope": scope,
            "sub": client.client_id,
            "aud": self.get_audiences(client, user, scope),
            **self.get_extra_claims(client, grant_type, user, scope),
        }
        return sign(claims, key)


@dataclass
class IdpSettings:
    """Faults and counters; tests change and read them between requests."""

    discovery_issuer: str | None = None  # publish this issuer in the discovery document
    fail: bool = False  # answer discovery and JWKS requests with 500
    jwks_requests: int = 0
    discovery_requests: int = 0
    token_requests: int = 0


class LocalIdp:
    """The authorization server under a real uvicorn server on 127.0.0.1, in a thread."""

    def __init__(self, key_type: KeyType = "EC", token_lifetime_s: int = 300) -> None:
        self.token_lifetime_s = token_lifetime_s
        self.settings = IdpSettings()
        self.clients: dict[str, Client] = {}
        self.issued: list[dict[str, Any]] = []
        self.login_as: dict[str, Any] | None = None  # the user /authorize signs in (claims)
        self._codes: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._keys: list[Key] = [generate_key(key_type)]  # published; the last one signs
        self._server_impl = _AuthorizationServer(self)
        self._server_impl.register_token_generator("default", _TokenGenerator(self))
        self._uvicorn = uvicorn.Server(
            uvicorn.Config(
                self._app(),
                host="127.0.0.1",
                port=0,
                lifespan="off",
                log_config=None,
                log_level="warning",
                access_log=False,
            )
        )
        self._thread = threading.Thread(target=self._uvicorn.run, name="local-idp", daemon=True)
        self.url = ""

    # --- lifecycle

    def start(self, timeout_s: float = 10.0) -> LocalIdp:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._uvicorn.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the local IdP did not start")
            time.sleep(0.005)
        port = self._uvicorn.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        self._uvicorn.should_exit = True
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            raise RuntimeError("the local IdP did not stop")

    # --- identity

    @property
    def issuer(self) -> str:
        return self.url

    @property
    def jwks_uri(self) -> str:
        return self.url + "/jwks"

    @property
    def token_endpoint(self) -> str:
        return self.url + "/token"

    @property
    def authorization_endpoint(self) -> str:
        return self.url + "/authorize"

    # --- clients and keys

    def register_client(
        self,
        client_id: str,
        client_secret: str | None = None,
        *,
        audience: str | list[str] = "llmos",
        scope: str = "",
        **claims: Any,
    ) -> Client:
        client = Client(client_id, client_secret or secrets.token_urlsafe(24), audience, claims, scope)
        self.clients[client_id] = client
        return client

    @property
    def signing_key(self) -> Key:
        with self._lock:
            return self._keys[-1]

    @property
    def kids(self) -> list[str]:
        with self._lock:
            return [str(k.kid) for k in self._keys]

    def rotate_key(self, key_type: KeyType | None = None) -> str:
        """Sign with a new key (new kid) from now on; the old keys stay published."""
        key = generate_key(key_type or cast(KeyType, self.signing_key.key_type))
        with self._lock:
            self._keys.append(key)
        return str(key.kid)

    def retire_key(self, kid: str) -> None:
        """Stop publishing ``kid`` (it cannot be the signing key)."""
        with self._lock:
            if self._keys[-1].kid == kid:
                raise ValueError("rotate away from the signing key before retiring it")
            self._keys = [k for k in self._keys if k.kid != kid]

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            return {"keys": [public_jwk(k) for k in self._keys]}

    def mint(self, claims: dict[str, Any] | None = None, **overrides: Any) -> str:
        """A token signed by the current key: the usual claims, updated by ``claims``/``overrides``."""
        now = int(time.time())
        base: dict[str, Any] = {
            "iss": self.issuer,
            "aud": "llmos",
            "sub": "svc-test",
            "iat": now,
            "nbf": now,
            "exp": now + self.token_lifetime_s,
            "jti": secrets.token_hex(8),
        }
        base.update(claims or {})
        base.update(overrides)
        return sign({k: v for k, v in base.items() if v is not None}, self.signing_key)

    # --- the HTTP client side

    def request_token(
        self, client: Client, *, method: Literal["basic", "post"] = "basic", scope: str | None = None
    ) -> httpx.Response:
        data = {"grant_type": "client_credentials"}
        if scope is not None:
            data["scope"] = scope
        auth: tuple[str, str] | None = None
        if method == "basic":
            auth = (client.client_id, client.client_secret)
        else:
            data.update(client_id=client.client_id, client_secret=client.client_secret)
        return httpx.post(self.token_endpoint, data=data, auth=auth, timeout=5, trust_env=False)

    def access_token(self, client: Client, **kwargs: Any) -> str:
        response = self.request_token(client, **kwargs)
        response.raise_for_status()
        return str(response.json()["access_token"])

    # --- the app

    def _app(self) -> Starlette:
        async def authorize(request: Request) -> Response:
            q = request.query_params
            client = self.clients.get(q.get("client_id", ""))
            if client is None or self.login_as is None or q.get("response_type") != "code":
                return JSONResponse({"error": "access_denied"}, status_code=403)
            if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
                return JSONResponse({"error": "invalid_request"}, status_code=400)
            code = secrets.token_urlsafe(24)
            self._codes[code] = {
                "client_id": client.client_id,
                "redirect_uri": q.get("redirect_uri"),
                "challenge": q.get("code_challenge"),
                "claims": dict(self.login_as),
            }
            target = f"{q.get('redirect_uri')}?code={code}&state={q.get('state', '')}"
            return Response(status_code=302, headers={"location": target})

        def code_grant(form: dict[str, str]) -> Response:
            cors = {"access-control-allow-origin": "*"}
            grant = self._codes.pop(form.get("code", ""), None)  # single use
            verifier = form.get("code_verifier", "")
            expected = b64url(hashlib.sha256(verifier.encode()).digest())
            if (
                grant is None
                or grant["client_id"] != form.get("client_id")
                or grant["redirect_uri"] != form.get("redirect_uri")
                or not hmac.compare_digest(expected, grant["challenge"])
            ):
                return JSONResponse({"error": "invalid_grant"}, status_code=400, headers=cors)
            client = self.clients[grant["client_id"]]
            token = self.mint({"aud": client.audience, "client_id": client.client_id, **grant["claims"]})
            return JSONResponse(
                {"access_token": token, "token_type": "Bearer", "expires_in": self.token_lifetime_s},
                headers=cors,
            )

        async def token(request: Request) -> Response:
            self.settings.token_requests += 1
            form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
            if form.get("grant_type") == "authorization_code":
                return code_grant(form)
            oauth_request = _TokenRequest(str(request.url), request.headers, form)
            status, body, headers = self._server_impl.create_token_response(oauth_request)
            extra = {k: v for k, v in headers if k.lower() != "content-type"}
            return JSONResponse(body, status_code=status, headers=extra)

        async def discovery(request: Request) -> Response:
            self.settings.discovery_requests += 1
            if self.settings.fail:
                return JSONResponse({"error": "down"}, status_code=500)
            return JSONResponse(
                {
                    "issuer": self.settings.discovery_issuer or self.issuer,
                    "jwks_uri": self.jwks_uri,
                    "token_endpoint": self.token_endpoint,
                    "authorization_endpoint": self.authorization_endpoint,
                    "grant_types_supported": ["client_credentials", "authorization_code"],
                    "code_challenge_methods_supported": ["S256"],
                    "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                    "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
                }
            )

        async def jwks(request: Request) -> Response:
            self.settings.jwks_requests += 1
            if self.settings.fail:
                return JSONResponse({"error": "down"}, status_code=500)
            return JSONResponse(self.jwks())

        return Starlette(
            routes=[
                Route("/token", token, methods=["POST"]),
                Route("/authorize", authorize, methods=["GET"]),
                Route("/.well-known/openid-configuration", discovery, methods=["GET"]),
                Route("/jwks", jwks, methods=["GET"]),
            ]
        )
