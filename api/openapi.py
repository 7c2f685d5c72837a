"""``GET /api/openapi.json``: the OpenAPI 3.1 description of every endpoint."""

from __future__ import annotations

from flask import Blueprint, jsonify

SPEC: dict = {
    "openapi": "3.1.0",
    "info": {"title": "CT/MR Viewer API", "version": "1"},
    "paths": {},
}


def register(bp: Blueprint) -> None:
    @bp.get("/openapi.json")
    def openapi():
        return jsonify(SPEC)
