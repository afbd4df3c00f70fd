"""The OpenAPI 3.1 document of the REST API.

Kept in the repository as ``openapi.yaml`` beside this module (package
data), served as JSON at ``GET /v1/openapi.json`` without credentials.
Unit tests hold it to the router's routes and to the validation schemas.
"""

import functools
import os

import yaml

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                    'openapi.yaml')


@functools.lru_cache(maxsize=1)
def document():
    """The document as a dict (parsed once per process)."""
    with open(PATH, encoding='utf-8') as f:
        return yaml.safe_load(f)
