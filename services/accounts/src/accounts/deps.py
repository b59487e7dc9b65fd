"""The API's dependencies as `Annotated` types: what the bootstrap wired, and the caller.

Each reads the `Accounts` the app was assembled with (`app.state.accounts`, set in `app.py`).
There is no request-wide database session: every route opens its own unit of work and commits
it before answering, and none holds two at once (on SQLite each takes the write lock, so
nesting them would deadlock).
"""

from typing import Annotated

from esim_core.messaging.outbox import Outbox
from esim_core.persistence.db import Database
from esim_core.web.problems import ProblemError
from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from accounts.bootstrap import Accounts
from accounts.identity.parts import Identity
from accounts.identity.tokens import TokenError
from accounts.lifecycle.planwatch import PlanWatcher
from accounts.renewals.saga import RenewalSaga
from accounts.settings import AccountsSettings
from accounts.store import User

# The dependencies are coroutines: FastAPI would run plain functions in its thread pool.


async def _accounts(request: Request) -> Accounts:
    accounts: Accounts = request.app.state.accounts
    return accounts


AccountsDep = Annotated[Accounts, Depends(_accounts)]


async def _settings(accounts: AccountsDep) -> AccountsSettings:
    return accounts.settings


async def _database(accounts: AccountsDep) -> Database:
    return accounts.runtime.database


async def _outbox(accounts: AccountsDep) -> Outbox:
    return accounts.runtime.outbox


async def _identity(accounts: AccountsDep) -> Identity:
    return accounts.identity


async def _saga(accounts: AccountsDep) -> RenewalSaga:
    return accounts.saga


async def _watcher(accounts: AccountsDep) -> PlanWatcher:
    return accounts.watcher


SettingsDep = Annotated[AccountsSettings, Depends(_settings)]
DatabaseDep = Annotated[Database, Depends(_database)]
OutboxDep = Annotated[Outbox, Depends(_outbox)]
IdentityDep = Annotated[Identity, Depends(_identity)]
SagaDep = Annotated[RenewalSaga, Depends(_saga)]
WatcherDep = Annotated[PlanWatcher, Depends(_watcher)]

oauth2 = OAuth2PasswordBearer(tokenUrl="/v1/auth/token", auto_error=False)


async def current_user(
    identity: IdentityDep, token: Annotated[str | None, Depends(oauth2)]
) -> User:
    """The traveller the bearer token speaks for, or a 401 problem."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if not token:
        raise ProblemError(
            401, "an access token is required", kind="unauthorized", headers=challenge
        )
    try:
        return await identity.sessions.caller(token)
    except TokenError as error:
        raise ProblemError(401, str(error), kind="unauthorized", headers=challenge) from error


CurrentUser = Annotated[User, Depends(current_user)]
