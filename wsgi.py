"""WSGI entry point for production: `gunicorn wsgi:app`."""

from tracker import create_worker_app

app = create_worker_app()
