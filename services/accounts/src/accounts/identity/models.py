"""The identity routes' bodies: registration, the profile, tokens and password resets."""

from typing import Annotated, Any, Literal

from esim_core.web.rows import row_view
from esim_schemas.types import Locale
from pydantic import BaseModel, ConfigDict, EmailStr, Field

from accounts.bodies import ApiTime, Body, with_example

Password = Annotated[str, Field(min_length=8, max_length=128, repr=False)]


Phone = Annotated[
    str,
    Field(
        pattern=r"^\+[1-9][0-9]{6,14}$",
        description="E.164: a plus, the country code and the number, no spaces",
        examples=["+8613800138000"],
    ),
]


Name = Annotated[str, Field(min_length=1, max_length=128, examples=["Li Wei"])]


ResetCode = Annotated[str, Field(pattern=r"^[0-9]{6}$", repr=False, examples=["042137"])]


class UserCreate(Body):
    """Registration."""

    model_config = with_example(
        email="li.wei@example.com",
        password="a long password",
        name="Li Wei",
        phone="+8613800138000",
        locale="zh-CN",
    )

    email: EmailStr
    password: Password
    name: Name | None = None
    phone: Phone | None = None
    locale: Locale = "en"


class NotifyChoices(BaseModel):
    """Which channels the traveller hears from us on."""

    model_config = ConfigDict(extra="forbid", strict=True)

    email: bool = True
    sms: bool = True


class UserUpdate(Body):
    """A change to the caller's profile; only the fields given change (null clears a phone)."""

    model_config = with_example(
        name="Li Wei", phone="+8613800138000", locale="en", notify={"email": True, "sms": False}
    )

    name: Name | None = None
    phone: Phone | None = None
    locale: Locale | None = None
    notify: NotifyChoices | None = None


class UserPublic(BaseModel):
    """A user as the API shows them."""

    id: str = Field(description="the user_id used in events")
    email: str
    name: str | None
    phone: str | None
    locale: str
    notify: NotifyChoices
    created_at: ApiTime


class TokenResponse(BaseModel):
    """OAuth2 bearer tokens: a short-lived access token and the refresh token that renews it."""

    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds the access token stays valid")


class LogoutRequest(Body):
    """Ending a session."""

    model_config = with_example(refresh_token="eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9...")

    refresh_token: str = Field(min_length=1, max_length=4096, repr=False)


class PasswordResetRequest(Body):
    """Asking for a reset code."""

    model_config = with_example(email="li.wei@example.com")

    email: EmailStr


class PasswordResetConfirm(Body):
    """Setting a new password with the code that was sent."""

    model_config = with_example(
        email="li.wei@example.com", code="042137", new_password="a new long password"
    )

    email: EmailStr
    code: ResetCode
    new_password: Password


class ResetAccepted(BaseModel):
    """The answer to a reset request, the same whether or not the address is registered."""

    detail: str = "If the address is registered, a code is on its way by e-mail (and SMS)."


def user_public(user: Any) -> UserPublic:
    """The public view of a stored user."""
    return row_view(
        UserPublic, user, notify=NotifyChoices(email=user.notify_email, sms=user.notify_sms)
    )
