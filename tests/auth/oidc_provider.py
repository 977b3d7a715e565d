"""A real OpenID Connect provider for the tests, as its own process: oidc-provider-mock's app, served
on a loopback port, optionally misbehaving the way a misconfigured or hostile provider would.

python -m tests.auth.oidc_provider --port N [--token-max-age S] [--tamper issuer|audience]
"""
from __future__ import annotations

import argparse
import base64
import os
from datetime import timedelta
from urllib.parse import parse_qsl, urlencode

import oidc_provider_mock
import werkzeug.serving

OTHER_CLIENT = "another-app"


def wrong_issuer(app):
    """Tokens signed with the provider's real key, but naming another issuer than its discovery document."""
    def middleware(environ, start_response):
        if environ["PATH_INFO"] == "/oauth2/token":
            environ["HTTP_HOST"] = "impostor.invalid"  # the mock takes `iss` from the request's host
        return app(environ, start_response)
    return middleware


def wrong_audience(app):
    """ID tokens issued for another client: the provider sees that client in both the authorization
    and the token request, so the token it signs names it as the audience."""
    def middleware(environ, start_response):
        if environ["PATH_INFO"] == "/oauth2/authorize":
            query = [(k, OTHER_CLIENT if k == "client_id" else v) for k, v in parse_qsl(environ["QUERY_STRING"])]
            environ["QUERY_STRING"] = urlencode(query)
        elif environ["PATH_INFO"] == "/oauth2/token" and environ.get("HTTP_AUTHORIZATION", "").startswith("Basic "):
            _client, _, secret = base64.b64decode(environ["HTTP_AUTHORIZATION"][6:]).decode().partition(":")
            environ["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(f"{OTHER_CLIENT}:{secret}".encode()).decode()
        return app(environ, start_response)
    return middleware


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-max-age", type=int, default=3600)
    parser.add_argument("--tamper", choices=["issuer", "audience"])
    args = parser.parse_args()
    os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"  # plain http on loopback
    app = oidc_provider_mock.app(require_nonce=True, access_token_max_age=timedelta(seconds=args.token_max_age))
    wsgi = {"issuer": wrong_issuer, "audience": wrong_audience}.get(args.tamper, lambda a: a)(app)
    werkzeug.serving.run_simple("127.0.0.1", args.port, wsgi, threaded=True)


if __name__ == "__main__":
    main()
