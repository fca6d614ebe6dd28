"""HTTP plumbing shared by everything that talks to Salesforce over TLS."""

from __future__ import annotations

from typing import Any

import requests


class PinnedCASession(requests.Session):
    """A requests.Session whose explicitly set ``verify`` (a CA bundle path) wins.

    requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override ``session.verify``
    (psf/requests#3829); many machines and Docker images set them, which would make a client
    ignore the CA bundle its Connection names (e.g. the sandbox's test CA).
    """

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
        if verify is None and self.verify not in (True, None):
            settings["verify"] = self.verify
        return settings
