"""The model history view as a FastAPI app, mounted in the Airflow API server by the plugin.

Routes (under the plugin's prefix, ``/model-history``):

* ``/`` every model and target the user may read, with what each serves now;
* ``/targets/{target}?metric=...&axis=window|recorded`` one target: the plot of a metric against the
  models' data windows (default) or the time they were recorded, and its ledger;
* ``/dags/{dag_id}`` every target of one retraining DAG (the view's tab on a DAG's page);
* ``/api/targets/{target}`` the same as JSON.

Pages need an Airflow login (the UI's session cookie, or a bearer token), and show a target only to
users who may read its retraining DAG, as Airflow's own pages do.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from azureml_retrain.history import render
from azureml_retrain.history.data import Catalog, TargetHistory, load_catalog, read_history
from azureml_retrain.redaction import redact

log = logging.getLogger(__name__)

ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="{color}" '
    'stroke-width="2" stroke-linecap="round" stroke-linejoin="round"><path d="M3 3v18h18"/>'
    '<path d="M7 15l4-4 3 3 6-7"/><circle cx="20" cy="7" r="1.5" fill="{color}"/></svg>'
)


async def _user(request: Request) -> Any:
    """The logged-in Airflow user (401 without a valid session cookie or bearer token)."""
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    return await get_user(request, None, await bearer_scheme(request))


User = Annotated[Any, Depends(_user)]


def _readable(user: Any, dag_ids: set[str]) -> set[str]:
    from airflow.api_fastapi.app import get_auth_manager

    return set(get_auth_manager().filter_authorized_dag_ids(dag_ids=dag_ids, user=user, method="GET"))


def _links(request: Request) -> render.Links:
    from airflow.api_fastapi.app import API_ROOT_PATH

    # A mounted app's root_path is the API server's base path plus the plugin's prefix.
    return render.Links(app=str(request.scope.get("root_path", "")).rstrip("/"), airflow=API_ROOT_PATH)


def _history(catalog: Catalog, user: Any, target: str, metric: str | None, axis: str | None = None) -> TargetHistory:
    config = catalog.config_of_target(target)
    if config is None:
        raise HTTPException(404, f"No retraining config has a target named {target!r}.")
    if not _readable(user, {config.dag_id}):
        raise HTTPException(403, f"You may not read {config.dag_id}, the DAG that promotes to {target}.")
    return read_history(config, target, metric, axis)


def _section(catalog: Catalog, user: Any, target: str, links: render.Links) -> str:
    try:
        return render.target_section(_history(catalog, user, target, None), links)
    except Exception as error:  # one unreadable ledger must not hide the others
        log.exception("Model history: cannot read the ledger of %s", target)
        return render.error_section(target, redact(str(error)))


def create_app() -> FastAPI:
    app = FastAPI(title="Model history", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(HTTPException)
    async def html_errors(request: Request, error: HTTPException) -> Response:
        if request.url.path.startswith(f"{request.scope.get('root_path', '')}/api/"):
            return JSONResponse({"detail": error.detail}, status_code=error.status_code)
        if error.status_code == 401:
            from airflow.api_fastapi.app import get_auth_manager

            return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=303)
        title = {403: "Not allowed", 404: "Not found"}.get(error.status_code, "Error")
        return HTMLResponse(
            render.message_page(title, str(error.detail), _links(request)), status_code=error.status_code
        )

    @app.get("/icon.svg", include_in_schema=False)
    def icon(dark: bool = False) -> Response:
        return Response(ICON.format(color="#e6edf3" if dark else "#1f2328"), media_type="image/svg+xml")

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request, user: User) -> str:
        catalog = load_catalog()
        readable = _readable(user, {c.dag_id for c in catalog.configs})
        rows = []
        for config in catalog.configs:
            if config.dag_id not in readable:
                continue
            for target in config.targets:
                try:
                    history = read_history(config, target.name)
                    rows.append(render.TargetSummary(config, target.name, target.kind, history))
                except Exception as error:  # show the others
                    log.exception("Model history: cannot read the ledger of %s", target.name)
                    rows.append(render.TargetSummary(config, target.name, target.kind, error=redact(str(error))))
        return render.index_page(rows, _links(request), catalog.errors)

    @app.get("/targets/{target:path}", response_class=HTMLResponse)
    def target_page(
        request: Request, user: User, target: str, metric: str | None = None, axis: str | None = None
    ) -> str:
        return render.target_page(_history(load_catalog(), user, target, metric, axis), _links(request))

    @app.get("/dags/{dag_id}", response_class=HTMLResponse)
    def dag_page(request: Request, user: User, dag_id: str) -> str:
        from azureml_retrain.factory import ROLLBACK_DAG_ID

        catalog, links = load_catalog(), _links(request)
        config = catalog.config_of_dag(dag_id)
        if config is not None:
            if not _readable(user, {dag_id}):
                raise HTTPException(403, f"You may not read {dag_id}.")
            sections = [_section(catalog, user, t.name, links) for t in config.targets]
            return render.dag_page(config.model, config.description, sections, links)
        if dag_id == ROLLBACK_DAG_ID:
            readable = _readable(user, {c.dag_id for c in catalog.configs})
            sections = [
                _section(catalog, user, t.name, links)
                for c in catalog.configs
                if c.dag_id in readable
                for t in c.targets
            ]
            return render.dag_page("Rollback targets", "Every target this DAG can roll back.", sections, links)
        raise HTTPException(404, f"{dag_id} is not a retraining DAG, so it has no model history.")

    @app.get("/api/targets/{target:path}")
    def target_json(user: User, target: str, metric: str | None = None, axis: str | None = None) -> dict[str, Any]:
        return _history(load_catalog(), user, target, metric, axis).to_json()

    return app
