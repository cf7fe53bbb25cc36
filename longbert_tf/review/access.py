"""Who the review server answers (its threat model is in docs/review.md).

- **Host**: every request names one of the server's own addresses (`127.0.0.1:PORT`,
  `localhost:PORT`, `[::1]:PORT`, the address it is bound to, or the host of its public URL),
  else 421: a page of another name that a DNS answer points here reads nothing.
- **API**: every `/api/` request carries the launch secret (`SECRET_HEADER`), made at start
  and written into the page the server serves, which another site's page cannot read; a
  browser's `Sec-Fetch-Site` must be same-origin. A POST must also be `application/json` and
  come from a same-origin `Origin` (or, without one, `Sec-Fetch-Site: same-origin`).
- **Beyond loopback**: the operator's access token, sent as `Authorization: Bearer TOKEN` or
  the cookie the page's address with `?token=TOKEN` sets once.
"""

import dataclasses
import hmac
import http.cookies
import ipaddress
import secrets
import urllib.parse

SECRET_HEADER = "X-Review-Secret"
ACCESS_COOKIE = "review_access"
MIN_TOKEN_CHARS = 24
# `Sec-Fetch-Site` of requests a browser makes for the page itself, or that a person typed.
OWN_FETCH_SITES = ("same-origin", "none")


class RequestError(Exception):
    """A request the server refuses: `status` and a message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def check_listening(host: str, token: str | None) -> None:
    """Raises ValueError unless listening on `host` is safe: loopback, or any address with an
    access token of at least `MIN_TOKEN_CHARS` characters."""
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ValueError(
            f"the access token has {len(token)} characters; use at least {MIN_TOKEN_CHARS} "
            "(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if not is_loopback(host) and token is None:
        raise ValueError(
            f"listening on {host} would let anyone who reaches this machine read the notes and "
            "write records: give an access token file, and put TLS in front (docs/review.md)"
        )


def public_origin(url: str) -> str:
    """The origin (`scheme://host[:port]`) of a public URL, which must be no more than one."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.path.strip("/"):
        raise ValueError(f"{url!r} is not an origin: give scheme and host, e.g. https://NAME")
    return f"{parsed.scheme}://{parsed.netloc}"


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclasses.dataclass(frozen=True)
class Access:
    """The `hosts` (Host header values) the server answers, the `origins` that may change
    anything, the launch `secret`, the access `token` (None: loopback without one) and whether
    its cookie is `Secure` (served behind https)."""

    hosts: frozenset
    origins: frozenset
    secret: str
    token: str | None = None
    secure_cookie: bool = False

    @classmethod
    def for_address(
        cls, host: str, port: int, token: str | None = None, public_url: str | None = None
    ) -> "Access":
        """Of a server bound to `host:port`; `public_url` (e.g. `https://coding.example.org`)
        is the address people open when a proxy stands in front."""
        check_listening(host, token)
        hosts = set()
        if is_loopback(host) or host in ("0.0.0.0", "::"):  # loopback reaches those too
            hosts |= {_host_port(name, port) for name in ("127.0.0.1", "localhost", "::1")}
        else:
            hosts.add(_host_port(host, port))
        origins = {f"http://{name}" for name in hosts}
        if public_url:
            origin = public_origin(public_url)
            hosts.add(origin.split("://")[1])
            origins.add(origin)
        secure = bool(public_url) and public_url.startswith("https:")
        return cls(frozenset(hosts), frozenset(origins), secrets.token_urlsafe(32), token, secure)

    def check_host(self, host: str | None) -> None:
        if host not in self.hosts:
            raise RequestError(
                421,
                f"this server answers for {', '.join(sorted(self.hosts))} only, "
                f"not for Host {(host or '')[:100]!r}",
            )

    def token_matches(self, value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(value.encode(), self.token.encode())

    def signed_in(self, headers) -> bool:
        """Whether a request carries the access token (always, when there is none)."""
        if self.token is None:
            return True
        bearer = headers.get("Authorization", "").removeprefix("Bearer ")
        cookies = http.cookies.SimpleCookie()
        try:
            cookies.load(headers.get("Cookie", ""))
        except http.cookies.CookieError:
            return False
        cookie = cookies.get(ACCESS_COOKIE)
        return self.token_matches(bearer) or self.token_matches(cookie and cookie.value)

    def cookie(self) -> str:
        """The `Set-Cookie` value that signs the browser in: never sent to other sites, not
        readable by scripts."""
        secure = "; Secure" if self.secure_cookie else ""
        return f"{ACCESS_COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict{secure}"

    def check_api(self, method: str, headers) -> None:
        """Refuses an `/api/` request that did not come from the page this server served."""
        fetch_site = headers.get("Sec-Fetch-Site")
        if fetch_site is not None and fetch_site not in OWN_FETCH_SITES:
            raise RequestError(403, f"a request from another site ({fetch_site}) is refused")
        if method == "POST":
            media_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
            if media_type != "application/json":
                raise RequestError(415, "send the body as Content-Type: application/json")
            origin = headers.get("Origin")
            if origin is None and fetch_site != "same-origin":
                raise RequestError(403, "send the Origin header of the review page")
            if origin is not None and origin not in self.origins:
                raise RequestError(403, f"a request from origin {origin[:100]!r} is refused")
        sent = headers.get(SECRET_HEADER, "")
        if not hmac.compare_digest(sent.encode(), self.secret.encode()):
            raise RequestError(
                403, f"send the {SECRET_HEADER} header of the page this server served"
            )
