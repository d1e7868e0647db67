"""The job browser at ``/ui``: four pages (tasks, one task, one item, submit), both backends.

The pages are shells: Jinja2 renders the layout and the ids in the path (auto-escaped), and
the project's own scripts in ``static/`` fetch everything else from the JSON API with the
token kept in the tab's sessionStorage. So the pages need no token and hold no data; what a
token may see is decided by the API routes, exactly as for any other client. No CDN, no
build step; the Content-Security-Policy allows scripts, styles and fetches from this origin
only (no inline script or style).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")

#: Every page: scripts, styles and API calls from this origin only; nothing inline.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

router = APIRouter(prefix="/ui", include_in_schema=False)


def _page(
    request: Request, template: str, title: str, *scripts: str, **context: Any
) -> HTMLResponse:
    """``template`` with ``scripts`` (from static/, after common.js) and the security headers."""
    response = templates.TemplateResponse(
        request,
        template,
        {
            "title": title,
            "scripts": scripts,
            "root": request.scope.get("root_path", ""),
            "backend": request.app.state.backend.name,
            **context,
        },
    )
    response.headers.update(SECURITY_HEADERS)
    return response


@router.get("", response_class=HTMLResponse)
async def tasks_page(request: Request) -> HTMLResponse:
    """Tasks, newest first; ?status= filters, ?limit= sets the page size (the script reads both)."""
    return _page(request, "tasks.html", "Tasks", "tasks.js")


@router.get("/", response_class=RedirectResponse)
async def tasks_page_slash(request: Request) -> RedirectResponse:
    return RedirectResponse(request.url_for("tasks_page").path, status_code=308)


@router.get("/submit", response_class=HTMLResponse)
async def submit_page(request: Request) -> HTMLResponse:
    return _page(request, "submit.html", "Submit", "submit.js")


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
async def task_page(request: Request, task_id: str) -> HTMLResponse:
    return _page(request, "task.html", f"Task {task_id}", "task.js", task_id=task_id)


@router.get("/tasks/{task_id}/{video_id}", response_class=HTMLResponse)
async def item_page(request: Request, task_id: str, video_id: str) -> HTMLResponse:
    return _page(
        request,
        "item.html",
        f"{video_id} of {task_id}",
        "plot.js",
        "item.js",
        task_id=task_id,
        video_id=video_id,
    )


def install(app: FastAPI) -> None:
    """The pages and their static files (scripts, stylesheet) on ``app``."""
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")
