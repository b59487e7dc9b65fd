"""The accounts HTTP API assembled: each feature's routers, the operator's behind the token."""

from esim_core.observability.telemetry import refresh_on_scrape, scrape_gauges
from esim_core.web.operator import OperatorAuth, outbox_router
from fastapi import FastAPI

from accounts.bootstrap import Accounts
from accounts.cards.routes import cards_router
from accounts.catalogue.problems import document_promotion_problems
from accounts.catalogue.routes import plans_router, promotions_router, quote_router
from accounts.identity.routes import auth_router, users_router
from accounts.lifecycle.routes import auto_renew_router
from accounts.renewals.operator import operator_router
from accounts.renewals.routes import renewals_router
from accounts.telemetry import saga_gauges

# The traveller's resources, in the order the OpenAPI document lists them.
TRAVELLER_ROUTERS = (
    auth_router,
    users_router,
    plans_router,
    promotions_router,
    cards_router,
    auto_renew_router,
    renewals_router,
    quote_router,
)


def http_app(accounts: Accounts, operator: OperatorAuth) -> FastAPI:
    """The accounts HTTP surface: the traveller API, and the operator API behind the token."""
    runtime = accounts.runtime
    gauges = scrape_gauges(runtime)
    gauges.add("sagas", saga_gauges(runtime.database))
    app = runtime.http_app(
        "eSIM accounts",
        routers=[
            *TRAVELLER_ROUTERS,
            operator.guard(operator_router, outbox_router(runtime.database, runtime.name)),
        ],
        description="Users, cards, plans and renewals; under /v1/operator/ the operators' view "
        "of each saga.",
    )
    # What the routes' dependencies read (`accounts.deps`).
    app.state.accounts = accounts
    document_promotion_problems(app)
    return refresh_on_scrape(app, gauges)
