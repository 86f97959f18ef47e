"""The baseline for bench/pages.py: the least a Flask app can answer, on the same server."""

from flask import Flask

app = Flask(__name__)


@app.get("/")
def hello() -> str:
    return "ok"
