"""The promotion problems as HTTP answers, and as named examples in the OpenAPI document."""

from typing import Any

from esim_core.web.problems import ProblemError
from esim_core.web.problems import problem_responses as problems
from fastapi import FastAPI

from accounts.catalogue.promotions import PROBLEMS, PromotionError


def promotion_problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`problems(...)`, with every promotion problem of those statuses as a named example."""
    responses = problems(*statuses)
    for status in statuses:
        kinds = {kind: detail for kind, (code, detail) in PROBLEMS.items() if code == status}
        if not kinds:
            continue
        content = responses[status]["content"]["application/problem+json"]
        examples = {"default": {"value": content.pop("example")}}
        for kind, detail in kinds.items():
            examples[kind] = {
                "summary": detail,
                "value": {
                    "type": f"https://esim.example/problems/{kind}",
                    "title": responses[status]["description"],
                    "status": status,
                    "detail": detail,
                },
            }
        content["examples"] = examples
        responses[status]["description"] += " (promotion codes: " + ", ".join(kinds) + ")"
    return responses


def promotion_problem(error: PromotionError) -> ProblemError:
    """The HTTP answer to a code that cannot be applied."""
    return ProblemError(error.status, error.detail, kind=error.kind)


# The operations that take a promotion code: their 422 answer names the promotion problems too.
_WITH_CODES = (("/v1/cards/{iccid}/renewals", "post"), ("/v1/cards/{iccid}/quote", "post"))


def document_promotion_problems(app: FastAPI) -> None:
    """Add the promotion problems to the 422 answers of the operations that take a code.

    The core documents every 422 as a validation problem, after the routes declared theirs;
    this runs after it, so the generic example stays the default and each code problem is one
    more named example.
    """
    documented = app.openapi

    def openapi() -> dict[str, Any]:
        schema = documented()
        for path, method in _WITH_CODES:
            operation = schema.get("paths", {}).get(path, {}).get(method)
            if operation is None or "422" not in operation["responses"]:
                continue
            if "examples" in operation["responses"]["422"]["content"]["application/problem+json"]:
                continue  # the schema is built once and kept: done already
            answer = dict(operation["responses"]["422"])
            content = dict(answer["content"]["application/problem+json"])
            examples = promotion_problems(422)[422]["content"]["application/problem+json"]
            content["examples"] = {"default": {"value": content.pop("example")}} | {
                kind: example for kind, example in examples["examples"].items() if kind != "default"
            }
            answer["content"] = {"application/problem+json": content}
            answer["description"] = promotion_problems(422)[422]["description"]
            operation["responses"]["422"] = answer
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
