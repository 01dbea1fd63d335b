"""The Hub's token check: ``GET {hubUrl}/api/whoami-v2`` with the token as Bearer.

``classify_whoami`` is pure (status + body → ``TokenCheck``); ``check_token`` does the request.
Neither ever puts the token into a message.

What a whoami-v2 answer means (HF_ROUTER_FACTS §4-§5):
- 401 (or 403): the token is rejected.
- 200 with ``auth.accessToken.role == "fineGrained"``: the token may call Inference Providers
  only when ``inference.serverless.write`` is in ``fineGrained.global`` or in a user-scoped
  entry's ``permissions``.
- 200 with a classic role (read, write, admin, …) or no access-token info: fine.
- anything else (429, 5xx, a body that is not JSON, no answer): the token cannot be checked.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from gateway.errors import UpstreamError, UpstreamTimeout, UpstreamUnreachable
from gateway.secret import Secret, mask
from gateway.upstream import MAX_WHOAMI_BYTES, fetch, one_off_session

if TYPE_CHECKING:
    import aiohttp

PERMISSION = "inference.serverless.write"
NEW_TOKEN_URL = (
    "https://huggingface.co/settings/tokens/new"
    "?ownUserPermissions=inference.serverless.write&tokenType=fineGrained"
)
PERMISSION_FIX = (
    'create a fine-grained token with "Make calls to Inference Providers" at '
    f"{NEW_TOKEN_URL} and run `coderclaw onboard` again"
)


class TokenStatus(enum.Enum):
    OK = "ok"
    REJECTED = "rejected"
    NO_INFERENCE = "no-inference-permission"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True, slots=True)
class TokenCheck:
    """The outcome of one whoami-v2 call; ``detail`` says why (never contains the token)."""

    status: TokenStatus
    user: str | None = None
    role: str | None = None
    detail: str | None = None

    @property
    def accepted(self) -> bool:
        """The Hub knows the token (it may still lack the inference permission)."""
        return self.status in (TokenStatus.OK, TokenStatus.NO_INFERENCE)

    def describe(self) -> str:
        """One line for a person."""
        who = f" (user {self.user})" if self.user else ""
        if self.status is TokenStatus.OK:
            return f"accepted by Hugging Face{who}"
        if self.status is TokenStatus.NO_INFERENCE:
            return (
                f"accepted by Hugging Face{who}, but this fine-grained token lacks the "
                '"Make calls to Inference Providers" permission'
            )
        if self.status is TokenStatus.REJECTED:
            return f"rejected by Hugging Face: {self.detail or 'invalid token'}"
        return f"could not be checked: {self.detail or 'the Hub did not answer'}"


def _error_text(body: Any) -> str | None:
    if isinstance(body, Mapping):
        err = body.get("error")
        if isinstance(err, str):
            return err
        if isinstance(err, Mapping) and isinstance(err.get("message"), str):
            return str(err["message"])
    return None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _user_scoped_permissions(fine: Mapping[str, Any], user: str | None) -> list[str]:
    found: list[str] = []
    scoped = fine.get("scoped")
    for item in scoped if isinstance(scoped, list) else []:
        if not isinstance(item, Mapping):
            continue
        entity = item.get("entity")
        if not isinstance(entity, Mapping) or entity.get("type") != "user":
            continue
        if user is not None and entity.get("name") not in (None, user):
            continue
        perms = item.get("permissions")
        found += [p for p in perms if isinstance(p, str)] if isinstance(perms, list) else []
    return found


def classify_whoami(status: int, body: Any) -> TokenCheck:
    """What a whoami-v2 answer says about the token (pure)."""
    if status in (401, 403):
        reason = _error_text(body) or f"the Hub answered {status}"
        return TokenCheck(TokenStatus.REJECTED, detail=f"{reason} (HTTP {status})")
    if status == 429:
        return TokenCheck(TokenStatus.UNREACHABLE, detail="the Hub rate-limited the check (429)")
    if status != 200:
        return TokenCheck(TokenStatus.UNREACHABLE, detail=f"the Hub answered {status}")
    if not isinstance(body, Mapping):
        return TokenCheck(TokenStatus.UNREACHABLE, detail="the Hub's answer is not a JSON object")
    user = body.get("name") if isinstance(body.get("name"), str) else None
    access = _mapping(_mapping(body.get("auth")).get("accessToken"))
    role = access.get("role") if isinstance(access.get("role"), str) else None
    if role != "fineGrained":
        return TokenCheck(TokenStatus.OK, user=user, role=role)
    fine = _mapping(access.get("fineGrained"))
    global_perms = fine.get("global")
    perms = (
        [p for p in global_perms if isinstance(p, str)] if isinstance(global_perms, list) else []
    )
    perms += _user_scoped_permissions(fine, user)
    if PERMISSION in perms:
        return TokenCheck(TokenStatus.OK, user=user, role=role)
    return TokenCheck(
        TokenStatus.NO_INFERENCE,
        user=user,
        role=role,
        detail=f"the token's permissions do not include {PERMISSION}",
    )


async def check_token(
    session: aiohttp.ClientSession, hub_url: str, token: Secret, timeout_s: float
) -> TokenCheck:
    """Ask the Hub about ``token``; network failures become ``UNREACHABLE``, never exceptions."""
    url = hub_url.rstrip("/") + "/api/whoami-v2"
    headers = {"Authorization": f"Bearer {token.reveal()}"}
    try:
        async with fetch.get(session, url, headers=headers, timeout_s=timeout_s) as reply:
            raw = await reply.read(MAX_WHOAMI_BYTES)
            status = reply.status
    except UpstreamTimeout:
        return TokenCheck(
            TokenStatus.UNREACHABLE, detail=f"GET {url} timed out after {timeout_s:g}s"
        )
    except UpstreamUnreachable as exc:
        return TokenCheck(TokenStatus.UNREACHABLE, detail=f"GET {url} failed: {exc.reason}")
    except UpstreamError as exc:  # a redirect (not followed), a body past its cap
        return TokenCheck(TokenStatus.UNREACHABLE, detail=f"GET {url}: {exc.message}")
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    check = classify_whoami(status, body)
    if check.detail and token.reveal() in check.detail:
        check = replace(check, detail=check.detail.replace(token.reveal(), mask(token.reveal())))
    return check


async def check_token_once(hub_url: str, token: Secret, timeout_s: float) -> TokenCheck:
    """``check_token`` with a session of its own."""
    async with one_off_session() as session:
        return await check_token(session, hub_url, token, timeout_s)
