"""Turning what a client sent into StudySpecs, with errors that name the field and say the fix.

Used by POST /studies (one spec) and POST /batches (many, all-or-nothing: every bad entry is reported with
its index, nothing is stored unless every entry is valid).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from alphasearch.errors import ConfigError
from alphasearch.spec import PRESETS, StudySpec, parse_document
from service.api.schemas import StudyCreate
from service.corpora import Corpora


def request_hash(data: Any) -> str:
    """Fingerprint of a request body, to tell a retried submission from a different one."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def config_error_from_pydantic(exc: ValidationError) -> ConfigError:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "spec"
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = f"unknown field; known fields are {', '.join(StudyCreate.model_fields)}"
    elif err["type"] == "missing":
        message = "missing; give the width/depth of the model you will train"
    return ConfigError(field, message)


def spec_from_fields(fields: dict[str, Any], session: Any, corpora: Corpora) -> StudySpec:
    """Fields already type-checked by StudyCreate -> a StudySpec, or ConfigError.

    `corpus` must name a corpus the server owns (`corpora`), checked before anything reads it. With
    `use_calibration` and a database `session`, `regimes` is filled from the stored calibrations (looked up
    by the corpus's content); the spec keeps the corpus's name, never its path on the server.
    """
    fields = {k: v for k, v in fields.items() if v is not None}  # null = "take the preset's value"
    path = corpora.path_of(fields.get("corpus"))
    try:
        if fields.get("use_calibration") and session is not None:
            from service.calibrations import resolve_spec

            spec = replace(resolve_spec({**fields, "corpus": path}, session), corpus=fields.get("corpus"))
        else:
            spec = StudySpec.from_dict(fields)
    except ConfigError:
        raise
    except (TypeError, ValueError, OverflowError) as exc:  # a value the library did not anticipate
        raise ConfigError("spec", f"invalid value ({exc}); check the field types against the schema") from exc
    _service_checks(spec, fields)
    return spec


def spec_from_data(data: Any, session: Any, corpora: Corpora) -> StudySpec:
    """Any JSON value (one batch entry) -> a StudySpec, or ConfigError."""
    if not isinstance(data, dict):
        raise ConfigError("spec", f"expected an object of StudySpec fields, got {type(data).__name__}")
    try:
        model = StudyCreate.model_validate(data)
    except ValidationError as exc:
        raise config_error_from_pydantic(exc) from None
    return spec_from_fields(model.model_dump(exclude_unset=True), session, corpora)


def _service_checks(spec: StudySpec, given: dict[str, Any]) -> None:
    cap = PRESETS[spec.preset]["max_total_tokens"]
    if "max_total_tokens" in given and spec.max_total_tokens > cap:
        raise ConfigError(
            "max_total_tokens",
            f"the server caps a {spec.preset!r} study at {cap:,} training tokens; leave max_total_tokens out "
            "or lower it, or use a larger preset",
        )


def batch_entries(document: Any) -> tuple[list[Any], str | None]:
    """A batch document -> (entries, name). Accepts {"studies": [...]}, a bare list, or one spec."""
    if isinstance(document, dict) and "studies" in document:
        extra = sorted(set(document) - {"studies", "name"})
        if extra:
            raise ConfigError(extra[0], 'unknown batch field; a batch is {"name": ..., "studies": [StudySpec, ...]}')
        entries, name = document["studies"], document.get("name")
        if not isinstance(entries, list):
            raise ConfigError("studies", f"expected a list of StudySpecs, got {type(entries).__name__}")
        if name is not None and (not isinstance(name, str) or len(name) > 200):
            raise ConfigError("name", "use a string of at most 200 characters")
        return entries, name
    if isinstance(document, list):
        return document, None
    if isinstance(document, dict) and "target_width" in document:
        return [document], None
    raise ConfigError("studies", 'expected {"studies": [StudySpec, ...]}; e.g. {"studies": [{"preset": "quick", '
                      '"target_width": 4096, "target_depth": 32}]}')  # fmt: skip


def parse_batch_text(text: str) -> Any:
    return parse_document(text)


def validate_batch(
    entries: list[Any], *, limit: int, session: Any, corpora: Corpora
) -> tuple[list[StudySpec], list[dict[str, Any]]]:
    """(specs, errors): errors holds one {index, field, message} per bad entry; specs is empty if any."""
    from service.api.errors import field_error

    if not entries:
        return [], [field_error("studies", "the batch is empty; give at least one StudySpec")]
    if len(entries) > limit:
        return [], [field_error("studies", f"{len(entries)} studies; a batch holds at most {limit}: split it into several")]
    specs, errors = [], []
    for index, entry in enumerate(entries):
        try:
            specs.append(spec_from_data(entry, session, corpora))
        except ConfigError as exc:
            errors.append(field_error(exc.field, exc.message, index=index, kind="config_error"))
    return ([] if errors else specs), errors
